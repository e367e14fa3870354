"""Hidden states at the runtime's hook point for every layer, one forward pass per batch."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from . import prompts


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of an already formatted text (the chat template adds its own special tokens)."""
    return tokenizer(text, add_special_tokens=not prompts.has_chat_template(tokenizer))["input_ids"]


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
        width = max(len(sequences[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):  # left padding: every row ends at the last column
            seq = sequences[i]
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        k = 1 if last_k is None else torch.tensor([max(1, last_k[i]) for i in idx])
        parts.append(aligned.query_embeddings(ids.to(device), mask.to(device), last_k=k))
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return {layer: torch.cat([p[layer] for p in parts])[inverse] for layer in parts[0]}
