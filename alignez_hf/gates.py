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

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

GATE_KINDS = ("self_judge",)
GATE_TOKEN_FIELDS = ("user_start", "turn_end", "before", "after", "digits")


def check_gate(name: str, gate: Any) -> None:
    """Raise a ValueError naming the axis when a stored gate is malformed."""
    if not isinstance(gate, dict) or gate.get("kind") not in GATE_KINDS:
        raise ValueError(f"Axis {name!r}: 'gate' must be a dict with kind in {GATE_KINDS}, got {gate!r}.")
    for field in GATE_TOKEN_FIELDS:
        ids = gate.get(field)
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ValueError(f"Axis {name!r}: gate field {field!r} must be a list of token ids, got {ids!r}.")
    if len(gate["digits"]) != 10 or not gate["before"]:
        raise ValueError(f"Axis {name!r}: a gate needs ten digit token ids and a non-empty judge prompt.")
    threshold = gate.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"Axis {name!r}: gate threshold must be a finite number, got {threshold!r}.")


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
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


def expected_digit(last_logits: torch.Tensor, digits: Sequence[int]) -> torch.Tensor:
    """``sum_d d * p(d)`` with ``p`` the next-token distribution renormalised over the ten digits: ``[rows]``."""
    probs = last_logits.float()[:, list(digits)].softmax(-1)
    return probs @ torch.arange(10, dtype=probs.dtype, device=probs.device)
