"""What a build did, per axis: the report stored in the pack's metadata and the summary printed at the end."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field


@dataclass
class AxisReport:
    """What the build of one axis did, for the summary and the pack's metadata."""

    axis: str
    positive: str
    negative: str
    queries: int = 0
    pairs_generated: int = 0
    pairs_kept: dict[int, int] = field(default_factory=dict)
    rank: dict[int, int] = field(default_factory=dict)
    separation: dict[int, float] = field(default_factory=dict)
    layers: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    generation: dict[str, float] = field(default_factory=dict)
    quality: dict | None = None
    orientation: dict | None = None
    gate: dict | None = None
    warnings: list[str] = field(default_factory=list)
    # {other axis: {layer: largest principal cosine}} on the layers both axes edit.
    subspace_cosine: dict[str, dict[int, float]] = field(default_factory=dict)

    def as_metadata(self) -> dict:
        """JSON-ready form (layer keys become strings, NaN becomes None)."""
        out = asdict(self)
        for key in ("pairs_kept", "rank", "separation"):
            out[key] = {str(k): (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out[key].items()}
        out["subspace_cosine"] = {
            other: {str(k): v for k, v in by_layer.items()} for other, by_layer in self.subspace_cosine.items()
        }
        out["subspace_cosine_mean"] = {
            other: (sum(by_layer.values()) / len(by_layer) if by_layer else None)
            for other, by_layer in self.subspace_cosine.items()
        }
        return out


def render_summary(strategy, reports: Sequence[AxisReport]) -> str:
    """A readable summary of a build: per axis its layers, pairs, checks, timings and warnings."""
    s = strategy
    lines = [f"AlignEZ build summary (strategy {s.name!r}, hook point {s.hook_point}, rule {s.rule})"]
    for r in reports:
        lines.append(
            f"- axis {r.axis!r} ({r.positive} vs {r.negative}): {r.queries} queries, {r.pairs_generated} pairs"
        )
        if r.generation:
            g = r.generation
            lines.append(f"  generation: {g['new_tokens']:.0f} new tokens, {g['tokens_per_second']:.1f} tokens/s")
        lines.append(f"  layers edited: {ranges(r.layers)}")
        lines.append("  layers     kept  rank  separation  (* = edited; separation 0.5 = chance)")
        # Consecutive layers with the same figures share a row, so a 30-layer model prints a few lines.
        rows: list[list] = []
        for layer in sorted(r.pairs_kept):
            sep = r.separation.get(layer, math.nan)
            cells = (
                layer in r.layers,
                r.pairs_kept[layer],
                r.rank.get(layer, 0),
                "n/a" if math.isnan(sep) else f"{sep:.2f}",
            )
            if rows and rows[-1][1] == cells and rows[-1][0][-1] == layer - 1:
                rows[-1][0].append(layer)
            else:
                rows.append([[layer], cells])
        for group, (edited, kept, rank, sep) in rows:
            lines.append(f"  {'*' if edited else ' '}{ranges(group):<9} {kept:4d}  {rank:4d}  {sep:>10}")
        if r.quality:
            q = r.quality
            lines.append(
                f"  self-check ({q['prompts']} prompts, strength +-{q['strength']:g}): margin shift "
                f"{q['shift']:+.3f} / {q['reverse_shift']:+.3f} nats/token vs random {q['random_shift']:.3f}"
                f" -> {'moves the model' if q['effective'] else 'LIKELY DOES NOTHING'}"
            )
        if r.orientation:
            o = r.orientation
            outcome = "FLIPPED" if o["flipped"] else "kept" if o["decided"] else "no clear difference, kept"
            lines.append(
                f"  sign check ({o['behaviour']}, {o['queries']} build queries, +-{o['strength']:g}): "
                f"{o['minus']:.2f} / {o['base']:.2f} / {o['plus']:.2f} at -/0/+ -> {outcome}"
            )
        if r.gate and r.gate.get("kind") == "prefill":
            g, split = r.gate, r.gate.get("split") or {}
            where = (
                f"layer {g['layer']} ({g['pooling']} pooling), fires when cos {g['comparison']} {g['threshold']:.3f}; "
                f"held-out: {g['fires_refused']:.0%} of the refused, {g['fires_answered']:.0%} of the answered "
                f"(AUC {g['auc']:.2f}; a random direction: {g['random']['recall_mean']:.0%} of the refused)"
                if g["added"]
                else "NOT ADDED"
            )
            held = split.get("held_out", {})
            lines.append(
                f"  prefill harm gate (prompt states vs own refusals of {g['queries']} build queries, {g['refused']} "
                f"refused; {held.get('refused', 0)} + {held.get('answered', 0)} held out): {where}"
            )
        elif r.gate:
            g = r.gate
            where = (
                f"fires above {g['threshold']:.2f} ({g['rule']}) on {g['fires_refused']:.0%} of the refused "
                f"and {g['fires_answered']:.0%} of the answered (AUC {g['auc']:.2f})"
                if g["added"]
                else "NOT ADDED"
            )
            lines.append(
                f"  harm gate (own 0-9 rating vs own refusals of {g['queries']} build queries, {g['refused']} "
                f"refused): {where}"
            )
        lines.append("  time: " + ", ".join(f"{k} {v:.1f} s" for k, v in r.seconds.items()))
        lines.extend(f"  WARNING: {w}" for w in r.warnings)
    pairs = [(r, other) for i, r in enumerate(reports) for other in reports[i + 1 :]]
    if pairs:
        lines.append("Subspace cosine between axes, per layer both edit (0 = independent, 1 = same direction):")
    for r, other in pairs:
        by_layer = r.subspace_cosine.get(other.axis, {})
        if not by_layer:
            lines.append(f"- {r.axis} vs {other.axis}: no shared layers")
            continue
        low, high = min(by_layer, key=by_layer.get), max(by_layer, key=by_layer.get)
        lines.append(
            f"- {r.axis} vs {other.axis}: mean {sum(by_layer.values()) / len(by_layer):.3f} over layers "
            f"{ranges(list(by_layer))}, from {by_layer[low]:.3f} (layer {low}) to {by_layer[high]:.3f} "
            f"(layer {high})"
        )
    return "\n".join(lines)


def ranges(layers: Sequence[int]) -> str:
    """Compact '10-20, 25' form of a layer list."""
    layers = sorted(layers)
    if not layers:
        return "none"
    parts, start, prev = [], layers[0], layers[0]
    for layer in layers[1:] + [None]:
        if layer is not None and layer == prev + 1:
            prev = layer
            continue
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        if layer is not None:
            start = prev = layer
    return ", ".join(parts)
