"""Which positions of a forward pass an edit touches, position ids of padded rows, and padding of id lists.

The rule (METHOD.md section 5) is the same on every engine: a row is edited from its prompt's last token on, i.e.
the last prompt token during prefill and every generated token after it. In one transformers forward pass that is
each row's last real token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def last_positions(attention_mask: torch.Tensor | None, q_len: int) -> torch.Tensor | None:
    """Index of each row's last real token among the current ``q_len`` inputs, or ``None`` if it is the last column.

    ``attention_mask`` covers the cached and the current tokens. A decoding step (``q_len == 1``) never needs a
    gather, so it is answered without reading the mask (no host-device sync per generated token); a left-padded
    prompt needs none either, a right-padded one does.
    """
    if q_len == 1 or attention_mask is None or attention_mask.dim() != 2:
        return None
    window = attention_mask[:, -q_len:]
    if bool(window[:, -1].all()):
        return None
    flipped = window.flip(-1).to(torch.int64)
    return (q_len - 1 - flipped.argmax(-1)).clamp_min(0)


def position_ids(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Positions as ``generate()`` computes them for left-padded rows (padding does not count)."""
    if attention_mask is None or attention_mask.dim() != 2:
        return None
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows as one left-padded ``[n, width]`` batch and its mask (every row ends at the last column)."""
    if not rows:
        raise ValueError("Nothing to pad: no rows.")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row):
            ids[i, width - len(row) :] = torch.as_tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask
