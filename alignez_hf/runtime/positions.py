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


def check_start(start, rows: int, q_len: int) -> torch.Tensor:
    """``steering_from`` as a ``[rows]`` int64 CPU tensor: for each row, the column its edits start at.

    An int applies to every row. Each value must name a column of the input (0 .. q_len - 1).
    """
    if isinstance(start, bool):
        raise TypeError(f"steering_from must be an int or one int per row, got {start!r}.")
    try:
        value = torch.as_tensor(start)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"steering_from must be an int or one int per row, got {start!r}.") from err
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"steering_from must hold integers (column indices), got dtype {value.dtype}.")
    value = value.to("cpu", torch.int64)
    if value.dim() == 0:
        value = value.expand(rows)
    if value.dim() != 1 or value.shape[0] != rows:
        raise ValueError(
            f"steering_from must be an int or one int per row ({rows} rows), got shape {tuple(value.shape)}."
        )
    if bool((value < 0).any()) or bool((value >= q_len).any()):
        raise ValueError(
            f"steering_from names columns of this input (0 .. {q_len - 1}), got {value.tolist()}: pass the column "
            "of each prompt's last token (its length minus 1)."
        )
    return value.contiguous()


def from_mask(start: torch.Tensor, q_len: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[rows, q_len]`` bool: True at the columns at or after each row's ``start``."""
    return torch.arange(q_len, device=device)[None, :] >= start.to(device)[:, None]


def prompt_mask(attention_mask: torch.Tensor | None, start: torch.Tensor, q_len: int) -> torch.Tensor:
    """The attention mask of the prompts alone: real tokens up to and including each row's ``start`` column.

    What reads the prompt (gates, the per-query policy) then sees the prompt and not the text scored after it; in a
    causal model the states up to ``start`` are the same either way.
    """
    keep = ~from_mask(start + 1, q_len)
    if attention_mask is None or attention_mask.dim() != 2:
        return keep.to(torch.long)
    return attention_mask * keep.to(attention_mask.device, attention_mask.dtype)


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
