"""The edit maths of AlignEZ as plain torch functions on tensors (no hooks, no models).

Shapes: ``x`` is ``[n, d]`` (one row per edited position), ``directions`` is ``[k, d]`` with unit rows,
``scales`` is ``[k]``, ``mask`` is ``[n, k]`` (1 keeps a direction for that row) and ``strength`` is ``[n]``.
"""

from __future__ import annotations

import torch


def axis_edit(
    x: torch.Tensor, directions: torch.Tensor, scales: torch.Tensor, rule: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Return the unscaled edit ``e(x)`` of one axis at one layer, shape ``[n, d]``.

    - ``additive``: ``sum_k s_k theta_k`` (a fixed push along oriented directions, ``s`` from the build data);
    - ``tanh`` (the paper's boost): ``sum_k tanh(theta_k . x) theta_k``;
    - ``relu_suppress`` (the paper's harmless runs): ``-sum_k relu(theta_k . x) theta_k``.
    """
    if rule == "additive":
        weights = scales.expand(x.shape[0], -1)
    elif rule == "tanh":
        weights = torch.tanh(x @ directions.T)
    elif rule == "relu_suppress":
        weights = -torch.relu(x @ directions.T)
    else:
        raise ValueError(f"Unknown edit rule {rule!r}; known: additive, tanh, relu_suppress.")
    if mask is not None:
        weights = weights * mask
    return weights @ directions


def compose(
    x: torch.Tensor,
    edits: list[tuple[torch.Tensor, torch.Tensor, str, torch.Tensor | None, torch.Tensor]],
    composition: str = "sequential",
) -> torch.Tensor:
    """Apply several axes' edits to ``x``; each entry is ``(directions, scales, rule, mask, strength[n])``.

    ``sequential`` applies ``x <- x + w_i e_i(x)`` axis after axis. ``paper`` follows the AlignEZ paper: one axis
    is ``x + w e(x)``; two axes give ``w1 x1 + w2 x2`` with ``x1 = x + w1 e1(x)``, ``x2 = x1 + w2 e2(x1)``; three
    or more average the separate edits ``x + w_i e_i(x)``.
    """
    if composition == "sequential" or len(edits) == 1:
        for directions, scales, rule, mask, strength in edits:
            x = x + strength[:, None] * axis_edit(x, directions, scales, rule, mask)
        return x
    if composition != "paper":
        raise ValueError(f"Unknown composition {composition!r}; known: sequential, paper.")
    # The paper's mix depends on how many axes act on a row; rows of one batch may steer different axes (or none at
    # a layer under per-query layers), so each group of rows gets the mix of its own active axes: a row comes out
    # as it would alone.
    active = torch.stack([strength != 0 for *_, strength in edits], 1)
    patterns = active.unique(dim=0)
    if len(patterns) > 1 or not bool(patterns.all()):
        out = x.clone()
        for pattern in patterns:
            rows = (active == pattern).all(1)
            sub = [
                (d, s, r, None if m is None else m[rows], w[rows]) for (d, s, r, m, w), on in zip(edits, pattern) if on
            ]
            if sub:
                out[rows] = compose(x[rows], sub, composition)
        return out
    if len(edits) == 2:
        (d1, s1, r1, m1, w1), (d2, s2, r2, m2, w2) = edits
        x1 = x + w1[:, None] * axis_edit(x, d1, s1, r1, m1)
        x2 = x1 + w2[:, None] * axis_edit(x1, d2, s2, r2, m2)
        return w1[:, None] * x1 + w2[:, None] * x2
    return torch.stack([x + w[:, None] * axis_edit(x, d, s, r, m) for d, s, r, m, w in edits]).mean(0)


def query_direction_mask(query: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Keep the directions a query is not already aligned with (``cos(q, theta) <= 0``): ``[n, k]`` of 0/1."""
    return (query @ directions.T <= 0).to(query.dtype)


def layer_scores(query: torch.Tensor, directions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Score a layer per query as ``|| sum_{kept theta} <q_hat, theta> theta ||`` (directions orthonormal): ``[n]``."""
    q_hat = query / query.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return ((q_hat @ directions.T) * mask).norm(dim=-1)


def top_n_layers(scores: dict[int, torch.Tensor], top_n: int) -> dict[int, torch.Tensor]:
    """Given per-layer scores ``[n]``, return per-layer 0/1 masks ``[n]`` choosing each row's ``top_n`` layers."""
    layers = sorted(scores)
    stacked = torch.stack([scores[layer] for layer in layers], dim=1)  # [n, L]
    k = min(top_n, len(layers))
    chosen = torch.zeros_like(stacked)
    chosen.scatter_(1, stacked.topk(k, dim=1).indices, 1.0)
    return {layer: chosen[:, i] for i, layer in enumerate(layers)}
