"""Two axes at once: score every cell of a strength grid with one scorer per axis (the paper's Figure 3)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .harness import generate_answers, versions
from .metrics import mean_summary
from .prompts import load_prompt_set
from .scorers import get_scorer


def sweep_2d(
    model,
    tokenizer,
    axis_a: str,
    axis_b: str,
    strengths_a: Sequence[float],
    strengths_b: Sequence[float],
    scorer_a: str | Callable[[str], float] = "sentiment",
    scorer_b: str | Callable[[str], float] = "readability",
    prompt_set: str = "neutral",
    *,
    limit: int | None = 10,
    max_new_tokens: int = 48,
    batch_size: int = 8,
    seed: int = 0,
    out_dir: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every (strength_a, strength_b) cell with both scorers: the grids of the paper's Figure 3.

    ``score_a[i][j]`` is the mean of ``scorer_a`` at ``strengths_a[i]``, ``strengths_b[j]``. ``own`` and ``cross``
    give how far each score moves along its own axis and along the other one (mean range across the grid).
    """
    for name in (axis_a, axis_b):
        if name not in model.axes:
            raise KeyError(f"Unknown axis {name!r}; axes: {', '.join(model.axes)}.")
    name_a, fn_a = get_scorer(scorer_a)
    name_b, fn_b = get_scorer(scorer_b)
    prompts = load_prompt_set(prompt_set, limit)
    cells = [(float(a), float(b)) for a in strengths_a for b in strengths_b]
    jobs = [(p, {axis_a: a, axis_b: b}) for a, b in cells for p in prompts]
    gens = generate_answers(model, tokenizer, jobs, max_new_tokens, batch_size, progress, desc="sweep")
    n = len(prompts)
    grids: dict[str, list[list[dict]]] = {"a": [], "b": [], "nll": []}
    for i in range(len(strengths_a)):
        row_a, row_b, row_nll = [], [], []
        for j in range(len(strengths_b)):
            block = gens[(i * len(strengths_b) + j) * n : (i * len(strengths_b) + j + 1) * n]
            row_a.append(mean_summary([fn_a(g.text) for g in block], seed=seed))
            row_b.append(mean_summary([fn_b(g.text) for g in block], seed=seed))
            row_nll.append(mean_summary([g.nll for g in block], seed=seed))
        grids["a"].append(row_a)
        grids["b"].append(row_b)
        grids["nll"].append(row_nll)

    def values(grid):
        return [[c["value"] for c in row] for row in grid]

    result = {
        "meta": {
            "seed": seed,
            "prompt_set": prompt_set,
            "n": n,
            "max_new_tokens": max_new_tokens,
            "decoding": "greedy",
            "composition": model.steering_option("composition"),
            "pack": str(getattr(model, "name_or_path", "") or "") or None,
            "versions": versions(),
        },
        "axis_a": axis_a,
        "axis_b": axis_b,
        "scorer_a": name_a,
        "scorer_b": name_b,
        "strengths_a": [float(s) for s in strengths_a],
        "strengths_b": [float(s) for s in strengths_b],
        "score_a": values(grids["a"]),
        "score_b": values(grids["b"]),
        "nll": values(grids["nll"]),
        "cells_a": grids["a"],
        "cells_b": grids["b"],
        "own": {"a": _mean_range(values(grids["a"]), 0), "b": _mean_range(values(grids["b"]), 1)},
        "cross": {"a": _mean_range(values(grids["a"]), 1), "b": _mean_range(values(grids["b"]), 0)},
        "answers": [{"prompt": g.prompt, "steering": g.steering, "answer": g.text} for g in gens],
    }
    if out_dir is not None:
        from .report import write_sweep

        write_sweep(result, out_dir)
    return result


def _mean_range(grid: list[list[float]], along: int) -> float:
    """Mean over lines of (max - min) along rows (0: down the first index) or columns (1); NaNs ignored."""
    lines = [list(col) for col in zip(*grid)] if along == 0 else grid
    spans = []
    for line in lines:
        kept = [v for v in line if not math.isnan(v)]
        if kept:
            spans.append(max(kept) - min(kept))
    return sum(spans) / len(spans) if spans else math.nan
