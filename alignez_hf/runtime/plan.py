"""The steering plan: from a pack's axes and one call's strengths, rows and gates to one edit per layer.

Engine-neutral: no torch hooks, no transformers. An engine (the transformers hook adapter in ``hooks.py``, or a
vLLM plugin) builds a plan once per call and applies ``plan.layer(i, n, device)`` to the hidden states of layer
``i`` at the positions it edits. What is constant for the call is computed here, once: the strengths per row, the
per-query masks, and for additive rules the whole push, one ``[rows, d]`` tensor per layer.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .constants import MAX_STRENGTH
from .edits import compose, layer_scores, query_direction_mask, top_n_layers
from .errors import SteeringError, SteeringTypeError, UnknownAxisError

Steering = Mapping[str, float] | Sequence[Mapping[str, float]] | None


def check_strength(name: str, value, error: type[Exception] = ValueError) -> float:
    """Return ``value`` as a float, or raise ``error`` unless it is a finite number of magnitude <= MAX_STRENGTH."""
    number = math.inf
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            pass
    if not (math.isfinite(number) and abs(number) <= MAX_STRENGTH):
        raise error(
            f"The strength of axis {name!r} must be a finite number of magnitude at most {MAX_STRENGTH:g}, "
            f"got {reprlib.repr(value)}."
        )
    return number


def resolve_strengths(steering: Steering, defaults: Mapping[str, float], rows: int) -> dict[str, torch.Tensor]:
    """Per-axis strengths ``[rows]`` (float32): the defaults, overridden by a dict for every row or a list of dicts."""
    if steering is None:
        per_row: list = []
    elif isinstance(steering, Mapping):
        per_row = [steering] * rows
    elif isinstance(steering, Sequence) and not isinstance(steering, (str, bytes)):
        if len(steering) != rows:
            raise SteeringError(
                f"steering has {len(steering)} entries but the batch has {rows} rows: give one per row."
            )
        per_row = list(steering)
    else:
        raise SteeringTypeError(
            "steering must be None, a dict {axis: strength}, or a list of such dicts (one per row); "
            f"got {type(steering).__name__}."
        )
    values = {name: [float(v)] * rows for name, v in defaults.items()}
    for i, row in enumerate(per_row):
        if not isinstance(row, Mapping):
            raise SteeringTypeError(f"steering[{i}] must be a dict {{axis: strength}}, got {type(row).__name__}.")
        for name, value in row.items():
            if not isinstance(name, str) or name not in values:
                known = ", ".join(defaults) or "none"
                raise UnknownAxisError(f"Unknown axis {name!r} in steering; this model's axes: {known}.")
            values[name][i] = check_strength(name, value, SteeringError)
    return {name: torch.tensor(v, dtype=torch.float32) for name, v in values.items()}


@dataclass(frozen=True)
class AxisEdit:
    """What a plan needs of one axis: its rule and, per layer, unit directions ``[k, d]`` and push sizes ``[k]``."""

    name: str
    rule: str
    directions: Mapping[int, torch.Tensor]
    scales: Mapping[int, torch.Tensor]

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)


@dataclass
class LayerEdit:
    """The edit of one layer for every row of a call.

    ``push`` (``[rows, d]``, float32) is the fused edit of additive axes composed sequentially: ``x + push``.
    ``terms`` holds the other cases as ``(directions, scales, rule, mask, strength)`` for ``edits.compose``.
    Exactly one of the two is set.
    """

    push: torch.Tensor | None = None
    terms: tuple = ()
    composition: str = "sequential"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The edited ``x`` (``[rows, d]``, or ``[rows, t, d]`` for every position), computed in float32.

        Rules that read the hidden state, and the paper's composition (which rescales it), can grow it layer after
        layer; their result (and a push in float16) is kept within ``HIDDEN_LIMIT`` and the range of ``x``'s dtype,
        so an absurd strength garbles the token but never makes Inf or NaN.
        """
        if self.push is not None:
            pushed = x.float() + (self.push if x.dim() == 2 else self.push[:, None, :])
            return _bounded(pushed, x.dtype) if x.dtype == torch.float16 else pushed
        if x.dim() == 2:
            return _bounded(compose(x.float(), list(self.terms), self.composition), x.dtype)
        rows, t, d = x.shape
        per_position = [
            (dirs, scales, rule, None if mask is None else mask.repeat_interleave(t, 0), strength.repeat_interleave(t))
            for dirs, scales, rule, mask, strength in self.terms
        ]
        edited = compose(x.reshape(-1, d).float(), per_position, self.composition).reshape(rows, t, d)
        return _bounded(edited, x.dtype)

    def apply_(self, target: torch.Tensor) -> None:
        """Edit ``target`` (a view of the hidden states) in place, casting back to its dtype."""
        if self.push is not None and target.dtype == torch.float32:
            target.add_(self.push if target.dim() == 2 else self.push[:, None, :])
        else:
            target.copy_(self(target).to(target.dtype))

    def take(self, rows: torch.Tensor, device: torch.device) -> LayerEdit:
        """This edit for rows ``rows`` (one index per edited token of an engine's flattened batch), on ``device``."""
        rows = rows.to("cpu")
        if self.push is not None:
            return LayerEdit(push=self.push[rows].to(device), composition=self.composition)
        terms = tuple(
            (d.to(device), s.to(device), r, None if m is None else m[rows].to(device), w[rows].to(device))
            for d, s, r, m, w in self.terms
        )
        return LayerEdit(terms=terms, composition=self.composition)

    def expanded(self, repeat: int, device: torch.device) -> LayerEdit:
        """This edit with every row repeated ``repeat`` times (beams, multiple returns), on ``device``."""

        def rows(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            return (t.repeat_interleave(repeat, 0) if repeat > 1 else t).to(device)

        if self.push is not None:
            return LayerEdit(push=rows(self.push), composition=self.composition)
        terms = tuple((d.to(device), s.to(device), r, rows(m), rows(w)) for d, s, r, m, w in self.terms)
        return LayerEdit(terms=terms, composition=self.composition)


# The largest magnitude an edited hidden state keeps (float32 squares of it still sum to a finite number).
HIDDEN_LIMIT = 1e18


def _bounded(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    limit = min(HIDDEN_LIMIT, torch.finfo(dtype).max / 2) if dtype.is_floating_point else HIDDEN_LIMIT
    return x.clamp(-limit, limit)


@dataclass
class SteeringPlan:
    """Per-layer edits of one call (``rows`` batch rows) and the positions they apply at (``last`` or ``all``)."""

    layers: dict[int, LayerEdit]
    rows: int
    positions: str = "last"
    _ready: dict = field(default_factory=dict, repr=False)

    def layer(self, index: int, n: int, device: torch.device) -> LayerEdit:
        """The edit of layer ``index`` for ``n`` rows (a multiple of ``rows``) on ``device``, prepared once."""
        key = (index, n, device)
        ready = self._ready.get(key)
        if ready is None:
            if n % self.rows:
                raise RuntimeError(f"Steering was planned for {self.rows} rows but a forward pass has {n}.")
            ready = self._ready[key] = self.layers[index].expanded(n // self.rows, device)
        return ready


def per_query_masks(
    axes: Sequence[AxisEdit], queries: Mapping[int, torch.Tensor], top_n: int
) -> dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """METHOD.md section 4, per prompt: ``{axis: {layer: (layer chosen [rows], directions kept [rows, k])}}``.

    ``queries`` holds each layer's unedited read-out of the prompt, ``[rows, d]``.
    """
    masks = {}
    for axis in axes:
        kept, scores = {}, {}
        for layer in axis.layers:
            kept[layer] = query_direction_mask(queries[layer], axis.directions[layer])
            scores[layer] = layer_scores(queries[layer], axis.directions[layer], kept[layer])
        chosen = top_n_layers(scores, top_n)
        masks[axis.name] = {layer: (chosen[layer], kept[layer]) for layer in axis.layers}
    return masks


def build_plan(
    axes: Sequence[AxisEdit],
    strengths: Mapping[str, torch.Tensor],
    rows: int,
    *,
    composition: str = "sequential",
    positions: str = "last",
    masks: Mapping[str, Mapping[int, tuple[torch.Tensor, torch.Tensor]]] | None = None,
) -> SteeringPlan:
    """The plan of one call: axes with a non-zero strength on some row, per layer, in axis order.

    ``strengths`` maps each axis to ``[rows]`` (zero on rows a gate keeps unsteered); ``masks`` comes from
    :func:`per_query_masks` under the per-query layer policy.
    """
    terms: dict[int, list[tuple]] = {}
    for axis in axes:
        strength = strengths[axis.name]
        if not bool(strength.any()):
            continue
        for layer in axis.layers:
            row_strength, kept = strength, None
            if masks is not None:
                chosen, kept = masks[axis.name][layer]
                row_strength = strength * chosen
                if not bool(row_strength.any()):
                    continue
            terms.setdefault(layer, []).append(
                (axis.directions[layer], axis.scales[layer], axis.rule, kept, row_strength)
            )
    layers = {}
    for layer, entries in sorted(terms.items()):
        fusable = all(rule == "additive" for _, _, rule, _, _ in entries) and (
            composition == "sequential" or len(entries) == 1
        )
        if fusable:
            push = torch.zeros(rows, entries[0][0].shape[1])
            for directions, scales, _, kept, strength in entries:
                weights = scales.expand(rows, -1) if kept is None else scales * kept
                push += strength[:, None] * (weights @ directions)
            layers[layer] = LayerEdit(push=push, composition=composition)
        else:
            layers[layer] = LayerEdit(terms=tuple(entries), composition=composition)
    return SteeringPlan(layers, rows, positions)
