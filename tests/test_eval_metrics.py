"""Intervals against hand-computed values; NLL and KL against direct computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from alignez_hf.evaluation.metrics import (
    bootstrap_mean_interval,
    mean_summary,
    next_token_kl,
    paired_delta_summary,
    rate_summary,
    sequence_nll,
    wilson_interval,
)


def test_wilson_interval_hand_computed():
    # 5/10: centre 0.5, half-width 1.96*sqrt(0.025 + 0.0096)/1.384 = 0.2634 (standard tables: 0.2366-0.7634).
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    # 0/10: the upper bound is z^2 / (n + z^2) = 3.8415 / 13.8415.
    assert wilson_interval(0, 10) == (0.0, pytest.approx(3.8415 / 13.8415, abs=1e-4))
    assert wilson_interval(10, 10)[1] == 1.0
    # 8/10 from published tables: 0.4902-0.9433.
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_rate_summary_skips_nan():
    summary = rate_summary([1.0, 0.0, math.nan, 1.0, 1.0])
    assert summary["k"] == 3 and summary["n"] == 4 and summary["value"] == 0.75
    assert summary["low"] < 0.75 < summary["high"]


def test_bootstrap_mean_interval():
    assert bootstrap_mean_interval([2.0] * 7) == (2.0, 2.0)
    values = [float(v) for v in range(20)]
    low, high = bootstrap_mean_interval(values, seed=3)
    assert low < 9.5 < high
    # The standard error of this mean is 1.32; a 95% interval is about +-2.6 wide on each side.
    assert 1.5 < 9.5 - low < 3.5 and 1.5 < high - 9.5 < 3.5
    assert bootstrap_mean_interval(values, seed=3) == (low, high)
    assert all(math.isnan(v) for v in bootstrap_mean_interval([]))
    summary = mean_summary([1.0, math.nan, 3.0])
    assert summary["value"] == 2.0 and summary["n"] == 2


def test_paired_delta():
    delta = paired_delta_summary([1.0, 2.0, 3.0, math.nan], [0.5, 1.5, 2.5, 1.0])
    assert delta["value"] == pytest.approx(0.5) and delta["n"] == 3
    assert (delta["low"], delta["high"]) == (pytest.approx(0.5), pytest.approx(0.5))


def test_sequence_nll_matches_direct_computation(tiny_llama):
    torch.manual_seed(0)
    ids = torch.randint(3, 256, (1, 8))
    nll = sequence_nll(tiny_llama, ids, torch.ones_like(ids), torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1]]))
    with torch.no_grad():
        logp = F.log_softmax(tiny_llama(ids).logits[0].float(), -1)
    expected = -(logp[4, ids[0, 5]] + logp[5, ids[0, 6]] + logp[6, ids[0, 7]]) / 3
    assert nll[0] == pytest.approx(float(expected), abs=1e-5)
    # Left padding with position ids from the mask gives the same number.
    padded = torch.cat([torch.zeros(1, 3, dtype=ids.dtype), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], dim=1)
    target = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]])
    assert sequence_nll(tiny_llama, padded, mask, target)[0] == pytest.approx(nll[0], abs=1e-4)
    assert math.isnan(sequence_nll(tiny_llama, ids, torch.ones_like(ids), torch.zeros_like(ids))[0])


def test_next_token_kl():
    torch.manual_seed(0)
    base = torch.randn(2, 4, 10)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert next_token_kl(base, base, mask) == [0.0, 0.0]
    steered = base + torch.randn(2, 4, 10)
    kl = next_token_kl(steered, base, mask)
    p, q = F.softmax(steered[1, :2], -1), F.softmax(base[1, :2], -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    assert kl[1] == pytest.approx(float(expected), abs=1e-6)
    assert kl[0] > 0
