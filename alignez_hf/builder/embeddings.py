"""Hidden states at the runtime's hook point for every layer, one forward pass per batch."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..runtime.positions import left_pad


def embed_ids(
    aligned,
    sequences: list[list[int]],
    pad_id: int,
    batch_size: int = 16,
    last_k: list[int] | None = None,
    desc: str = "embedding",
    progress: bool = True,
) -> dict[int, torch.Tensor]:
    """Unedited hook-point output at each sequence's last token (or mean of its last ``last_k[i]``) per layer."""
    if not sequences:
        raise ValueError("Nothing to embed.")
    # Similar lengths share a batch, so little compute goes to padding.
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    parts: list[dict[int, torch.Tensor]] = []
    device = aligned.base.device
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", disable=not progress):
        idx = order[start : start + batch_size]
        ids, mask = left_pad([sequences[i] for i in idx], pad_id)
        k = 1 if last_k is None else torch.tensor([max(1, last_k[i]) for i in idx])
        parts.append(aligned.query_embeddings(ids.to(device), mask.to(device), last_k=k))
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return {layer: torch.cat([p[layer] for p in parts])[inverse] for layer in parts[0]}
