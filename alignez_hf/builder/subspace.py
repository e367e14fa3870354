"""Per-layer steering subspaces from paired embeddings: filtering, SVD with an energy rule, orientation, scores."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class SubspaceError(ValueError):
    """No subspace can be fitted from the pairs at a layer."""


@dataclass
class LayerSubspace:
    """The oriented directions of one layer and the statistics the edit rules and the summary need."""

    layer: int
    directions: torch.Tensor  # [k, d], orthonormal rows, oriented from the negative side to the positive side
    singular_values: torch.Tensor  # [k]
    pairs_kept: int
    mean_pos_proj: torch.Tensor  # [k], mean projection of the positive side on each direction
    mean_neg_proj: torch.Tensor  # [k]
    separation: float  # held-out split-half accuracy of the pair differences (0.5 = chance)

    @property
    def rank(self) -> int:
        return int(self.directions.shape[0])


def keep_pairs(
    pos: torch.Tensor, neg: torch.Tensor, cos_threshold: float | None, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Pairs worth learning from: both answers non-empty (``valid``) and cosine not above ``cos_threshold``."""
    keep = torch.ones(pos.shape[0], dtype=torch.bool) if valid is None else valid.clone().bool()
    if cos_threshold is not None:
        keep &= torch.nn.functional.cosine_similarity(pos, neg, dim=-1) <= cos_threshold
    return keep


def rank_for_energy(singular_values: torch.Tensor, energy: float = 0.9, max_rank: int | None = None) -> int:
    """The smallest k whose top singular values hold ``energy`` of the total squared energy, capped at ``max_rank``."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}.")
    power = singular_values.double() ** 2
    if float(power.sum()) == 0:
        return 1
    cumulative = power.cumsum(0) / power.sum()
    k = int((cumulative < energy - 1e-9).sum()) + 1
    k = min(k, len(singular_values))
    return max(1, min(k, max_rank)) if max_rank else k


def orient(directions: torch.Tensor, diffs: torch.Tensor) -> torch.Tensor:
    """Flip each direction so that ``theta . mean(D) >= 0`` (it points from the negative to the positive side)."""
    signs = torch.where(directions @ diffs.mean(0) < 0, -1.0, 1.0)
    return directions * signs[:, None]


def split_half_accuracy(diffs: torch.Tensor, repeats: int = 8, seed: int = 0) -> float:
    """Held-out separation: fit the mean difference on half the pairs, count the other half's pairs it orders right."""
    n = diffs.shape[0]
    if n < 4:
        return math.nan
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(repeats):
        perm = torch.randperm(n, generator=generator)
        a, b = perm[: n // 2], perm[n // 2 :]
        for fit, test in ((a, b), (b, a)):
            direction = diffs[fit].mean(0)
            scores.append(float((diffs[test] @ direction > 0).float().mean()))
    return sum(scores) / len(scores)


def fit_subspace(
    pos: torch.Tensor,
    neg: torch.Tensor,
    layer: int,
    *,
    method: str = "svd",
    energy: float = 0.9,
    max_rank: int | None = 16,
    n_directions: int | None = None,
    cos_threshold: float | None = 0.8,
    valid: torch.Tensor | None = None,
) -> LayerSubspace:
    """Fit one layer's subspace from paired embeddings ``pos``/``neg`` ``[n, d]``.

    ``method="svd"`` keeps the top right singular vectors of the differences (``n_directions`` of them, or the
    smallest number holding ``energy``, at most ``max_rank``); ``method="mean"`` keeps their mean direction.
    """
    pos, neg = pos.float(), neg.float()
    keep = keep_pairs(pos, neg, cos_threshold, valid)
    if not bool(keep.any()):
        empty = 0 if valid is None else int((~valid.bool()).sum())
        raise SubspaceError(
            f"Layer {layer}: all {pos.shape[0]} pairs were filtered out ({empty} with an empty answer, the rest with "
            f"cosine above {cos_threshold}). Use more queries, other axis keywords, or a looser similarity filter "
            "(a higher cos_threshold such as 0.95, or None to turn it off)."
        )
    diffs = pos[keep] - neg[keep]
    if method == "mean":
        mean = diffs.mean(0)
        if float(mean.norm()) == 0:
            raise SubspaceError(f"Layer {layer}: the two sides have identical mean embeddings; nothing to steer along.")
        directions, values = (mean / mean.norm())[None, :], mean.norm()[None]
    elif method == "svd":
        _, values, vh = torch.linalg.svd(diffs, full_matrices=False)  # no centering, as in the paper
        k = min(n_directions, len(values)) if n_directions else rank_for_energy(values, energy, max_rank)
        directions, values = orient(vh[:k], diffs), values[:k]
    else:
        raise ValueError(f"Unknown subspace method {method!r}; known: svd, mean.")
    return LayerSubspace(
        layer=layer,
        directions=directions.contiguous(),
        singular_values=values,
        pairs_kept=int(keep.sum()),
        mean_pos_proj=pos[keep].mean(0) @ directions.T,
        mean_neg_proj=neg[keep].mean(0) @ directions.T,
        separation=split_half_accuracy(diffs),
    )


def subspace_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest principal-angle cosine between the row spans of ``a`` ``[k, d]`` and ``b`` ``[m, d]`` (|cos| for k=m=1).

    0 means the two axes edit orthogonal subspaces, 1 that they share a direction (METHOD.md section 6: correlated
    axes separate poorly).
    """
    a, b = a.reshape(-1, a.shape[-1]).double(), b.reshape(-1, b.shape[-1]).double()
    qa, qb = torch.linalg.qr(a.T).Q, torch.linalg.qr(b.T).Q  # orthonormal bases, whatever the rows' norms
    return min(1.0, float(torch.linalg.svdvals(qa.T @ qb).max()))
