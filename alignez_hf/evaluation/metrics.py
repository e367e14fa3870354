"""Confidence intervals and drift measures: Wilson intervals, bootstrap means, answer NLL and next-token KL."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..runtime.positions import position_ids

Z95 = 1.959963984540054  # two-sided 95% normal quantile
BOOTSTRAP_RESAMPLES = 2000


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial rate (95% by default); (0, 1) when ``n`` is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The exact bounds at 0/n and n/n are 0 and 1; the formula only reaches them up to float noise.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def rate_summary(flags: Sequence[bool | float], z: float = Z95) -> dict:
    """A rate with its Wilson interval: ``{value, low, high, k, n}`` (NaN entries are skipped)."""
    kept = [bool(f) for f in flags if not (isinstance(f, float) and math.isnan(f))]
    k, n = sum(kept), len(kept)
    low, high = wilson_interval(k, n, z)
    return {"value": k / n if n else math.nan, "low": low, "high": high, "k": k, "n": n}


def bootstrap_mean_interval(
    values: Sequence[float], confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (seeded, so reruns agree); NaN values are skipped."""
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan
    if data.size == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def mean_summary(values: Sequence[float], seed: int = 0) -> dict:
    """A mean with its 95% bootstrap interval: ``{value, low, high, n}`` (NaN entries are skipped)."""
    kept = [float(v) for v in values if not math.isnan(float(v))]
    low, high = bootstrap_mean_interval(kept, seed=seed)
    return {"value": float(np.mean(kept)) if kept else math.nan, "low": low, "high": high, "n": len(kept)}


def paired_delta_summary(values: Sequence[float], reference: Sequence[float], seed: int = 0) -> dict:
    """Mean of per-prompt differences ``values - reference`` with a bootstrap interval (pairs with a NaN dropped)."""
    diffs = [float(a) - float(b) for a, b in zip(values, reference) if not (math.isnan(a) or math.isnan(b))]
    return mean_summary(diffs, seed=seed)


@torch.no_grad()
def sequence_nll(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor
) -> list[float]:
    """Mean negative log-likelihood (nats/token) of the tokens where ``target_mask`` is 1, per row, under ``model``.

    ``input_ids`` may be left-padded; position ids are derived from ``attention_mask``. Rows without targets get NaN.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask)).logits
    logprobs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    token_lp = logprobs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    mask = target_mask[:, 1:].float()
    counts = mask.sum(-1)
    nll = -(token_lp * mask).sum(-1) / counts.clamp_min(1)
    return [float(v) if c > 0 else math.nan for v, c in zip(nll.tolist(), counts.tolist())]


@torch.no_grad()
def next_token_kl(steered_logits: torch.Tensor, base_logits: torch.Tensor, attention_mask: torch.Tensor) -> list[float]:
    """Mean over real positions of KL(steered || base) between next-token distributions, per row (nats)."""
    steered = F.log_softmax(steered_logits.float(), dim=-1)
    base = F.log_softmax(base_logits.float(), dim=-1)
    kl = (steered.exp() * (steered - base)).sum(-1).clamp_min(0.0)  # clamp: tiny negative float noise
    mask = attention_mask.float()
    return ((kl * mask).sum(-1) / mask.sum(-1).clamp_min(1)).tolist()
