"""Self-judged gates: an axis steers only the prompts the model itself rates above a threshold.

A gate is stored in the axis entry of the config as token ids, so the runtime needs no tokenizer:

- ``user_start`` / ``turn_end``: the chat template's tokens around a user message; the last user message of a
  prompt is the request to judge (a prompt without ``user_start`` is judged whole);
- ``before`` / ``after``: the judge prompt around the request (a chat turn asking for a 0-9 rating);
- ``digits``: the token ids of ``0`` .. ``9``;
- ``threshold``: the gate fires on a row when the expected digit, ``sum_d d * p(d)`` over the ten digit tokens
  after the judge prompt, is above it.
"""

from __future__ import annotations

import inspect
import json
import math
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers.generation import utils as generation_utils

from .errors import GateError, SteeringError
from .positions import left_pad, position_ids

GATE_KINDS = ("self_judge",)
GATE_TOKEN_FIELDS = ("user_start", "turn_end", "before", "after", "digits")
MAX_TOKEN_ID = 2**31 - 1  # no vocabulary is larger; bigger ids would overflow a tensor of token ids
# A chat turn asking for a rating takes tens to hundreds of tokens; a field longer than this is not a judge prompt,
# and would make every gated call run the model over that many tokens (a 16 MiB config could hold millions).
MAX_GATE_TOKENS = 8192
# transformers 5.x renamed generate's `past_key_values` to `cache`; use whichever this version calls it.
CACHE_NAMES = tuple(getattr(generation_utils, "ALL_CACHE_NAMES", ("past_key_values",)))


def check_gate(name: str, gate: Any, vocab_size: int | None = None) -> None:
    """Raise a GateError (a ValueError) naming the axis when a gate is malformed (or names ids past ``vocab_size``)."""
    if not isinstance(gate, dict) or gate.get("kind") not in GATE_KINDS:
        raise GateError(f"Axis {name!r}: 'gate' must be a dict with kind in {GATE_KINDS}, got {gate!r}.")
    limit = MAX_TOKEN_ID if vocab_size is None else vocab_size - 1
    for field in GATE_TOKEN_FIELDS:
        ids = gate.get(field)
        if isinstance(ids, list) and len(ids) > MAX_GATE_TOKENS:
            raise GateError(
                f"Axis {name!r}: gate field {field!r} holds {len(ids)} token ids, more than the {MAX_GATE_TOKENS} a "
                "judge prompt may take; rebuild the gate (AlignEZBuilder(gate=True)) or remove it."
            )
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise GateError(
                f"Axis {name!r}: gate field {field!r} must be a list of token ids, got {reprlib.repr(ids)}."
            )
        bad = next((i for i in ids if not 0 <= i <= limit), None)
        if bad is not None:
            raise GateError(
                f"Axis {name!r}: gate field {field!r} holds token id {reprlib.repr(bad)}, outside 0..{limit}"
                + (" (the base model's vocabulary)." if vocab_size is not None else ".")
            )
    if len(gate["digits"]) != 10 or not gate["before"]:
        raise GateError(f"Axis {name!r}: a gate needs ten digit token ids and a non-empty judge prompt.")
    threshold = gate.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not _finite(threshold):
        raise GateError(f"Axis {name!r}: gate threshold must be a finite number, got {threshold!r}.")


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _find(row: list[int], pattern: Sequence[int], last: bool = False) -> int:
    """Start of the first (or last) occurrence of ``pattern`` in ``row``, or -1."""
    m, pattern = len(pattern), list(pattern)
    starts = range(len(row) - m, -1, -1) if last else range(len(row) - m + 1)
    return next((i for i in starts if m and row[i : i + m] == pattern), -1)


def request_tokens(row: Sequence[int], user_start: Sequence[int], turn_end: Sequence[int]) -> list[int]:
    """The tokens of the last user message of one prompt (the whole prompt when it has no user marker)."""
    row = list(row)
    start = _find(row, user_start, last=True)
    if start < 0:
        return row
    body = row[start + len(user_start) :]
    end = _find(body, turn_end)
    return body if end < 0 else body[:end]


def judge_batch(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, gate: Mapping[str, Any], with_before: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Judge prompts ``before + request + after`` for every row, left-padded with id 0 (masked out).

    With ``with_before=False`` the rows are ``request + after`` only, for a caller that runs the shared ``before``
    once and reuses its key/value cache.
    """
    rows = []
    before = list(gate["before"]) if with_before else []
    for i in range(input_ids.shape[0]):
        ids = input_ids[i]
        if attention_mask is not None and attention_mask.dim() == 2:
            ids = ids[attention_mask[i].bool()]
        request = request_tokens(ids.tolist(), gate["user_start"], gate["turn_end"])
        rows.append(before + request + list(gate["after"]))
    return left_pad(rows, 0)


def expected_digit(last_logits: torch.Tensor, digits: Sequence[int]) -> torch.Tensor:
    """``sum_d d * p(d)`` with ``p`` the next-token distribution renormalised over the ten digits: ``[rows]``."""
    probs = last_logits.float()[:, list(digits)].softmax(-1)
    return probs @ torch.arange(10, dtype=probs.dtype, device=probs.device)


@torch.no_grad()
def judge(base_model, gate: Mapping[str, Any], input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """Expected digit of ``base_model``'s answer to ``gate``'s judge prompt about each row's last user message.

    ``Tensor[rows]`` (float32, on the CPU). Any gate dict works; its threshold plays no part. ``base_model`` must
    run unsteered (the runtime calls this before any steering hook is in place).
    """
    if input_ids is None:
        raise SteeringError("A self-judged gate reads token ids; pass input_ids, not inputs_embeds.")
    rows, mask_cpu = input_ids.shape[0], None if attention_mask is None else attention_mask.cpu()
    device = base_model.get_input_embeddings().weight.device
    params = inspect.signature(base_model.forward).parameters
    # Only the last position's logits are needed; most models can skip the others (a large vocabulary x prompt).
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    cache_arg = next((name for name in CACHE_NAMES if name in params), None)
    cache = None
    if rows > 1 and cache_arg is not None:
        # The judge question (most of each judge prompt) is the same for every row: run it once and let the batch
        # share its key/value cache.
        head = base_model(input_ids=torch.tensor([list(gate["before"])], device=device), use_cache=True)
        cache = next((head[name] for name in CACHE_NAMES if name in head), None)
    if hasattr(cache, "batch_repeat_interleave"):
        cache.batch_repeat_interleave(rows)
        ids, rest_mask = judge_batch(input_ids.cpu(), mask_cpu, gate, with_before=False)
        # Padding now sits between the shared question and each request; the mask and positions say so.
        mask = torch.cat([torch.ones(rows, len(gate["before"]), dtype=torch.long), rest_mask], 1)
        extra.update({cache_arg: cache, "use_cache": True})
    else:
        ids, mask = judge_batch(input_ids.cpu(), mask_cpu, gate)
        extra["use_cache"] = False
    logits = base_model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=position_ids(mask)[:, -ids.shape[1] :].to(device),
        **extra,
    ).logits
    return expected_digit(logits[:, -1], gate["digits"]).cpu()


def apply_gates(strengths: dict[str, torch.Tensor], gates: Mapping[str, Mapping[str, Any]], rate) -> None:
    """Zero the strength of each gated axis on the rows its gate does not fire on (in place).

    ``gates`` maps axis names to gate dicts; ``rate(gate)`` returns the rows' ratings ``[rows]``. Axes whose gates
    share a judge prompt share one rating, and an axis at strength 0 on every row is not judged at all.
    """
    ratings: dict[str, torch.Tensor] = {}
    for name, gate in gates.items():
        if not bool(strengths[name].any()):
            continue
        key = json.dumps({k: gate[k] for k in GATE_TOKEN_FIELDS})
        if key not in ratings:
            ratings[key] = rate(gate)
        strengths[name] = strengths[name] * (ratings[key] > gate["threshold"]).float()
