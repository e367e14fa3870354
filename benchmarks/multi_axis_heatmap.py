"""Two axes moved independently? Build cheerful + simple on the embedded SmolLM2 and sweep both strengths.

python benchmarks/multi_axis_heatmap.py            # the reported run: 80 build queries, 5x5 grid, 20 prompts, 40 tokens
python benchmarks/multi_axis_heatmap.py --queries 8 --strengths=-1,0,1 --limit 2 --max-new-tokens 8 --out /tmp/ma

Writes sweep.json, sweep.md and heatmap_cheerful_simple.png to --out (issue 5, "Multi-axis control"): sentiment
(VADER) should follow the cheerful strength and readability (Flesch) the simple strength, each far more than the
other axis's strength. The build's subspace cosine and the wall times are added to sweep.json and sweep.md.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import shlex
import sys
import time
import warnings
from importlib import resources
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

import alignez_hf  # noqa: E402
from alignez_hf import AlignEZForCausalLM  # noqa: E402
from alignez_hf.builder import AlignEZBuilder, load_queries  # noqa: E402
from alignez_hf.evaluation import sweep_2d, write_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    """Build (or load) the two-axis pack, run the sweep and write its results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--axes", default="cheerful,simple", help="Two axes (presets or name=positive,negative).")
    parser.add_argument("--strategy", default="persona", help="Build strategy.")
    parser.add_argument("--queries", type=int, default=80, help="Build queries (from the package's build set).")
    # Pinned, so that a rerun measures the same edit whatever the builder's defaults become (the `persona` default
    # since issue 6's band search: layers 1/2-2/3 of the depth, 0.04 of the layer norm per unit strength).
    parser.add_argument(
        "--scale-fraction", type=float, default=0.04, help="Push per unit strength, fraction of the layer norm."
    )
    parser.add_argument(
        "--layer-band", type=_floats, default=[0.5, 2 / 3], help="Edited layers as two fractions of depth."
    )
    parser.add_argument("--pack", default=None, help="Sweep this saved two-axis pack instead of building one.")
    parser.add_argument("--save-pack", default=None, help="Also save the built pack to this folder.")
    parser.add_argument("--strengths-a", type=_floats, default=[-1.0, -0.5, 0.0, 0.5, 1.0], help="First axis.")
    parser.add_argument("--strengths-b", type=_floats, default=[-1.0, -0.5, 0.0, 0.5, 1.0], help="Second axis.")
    parser.add_argument("--strengths", type=_floats, default=None, help="Same strengths for both axes.")
    parser.add_argument("--scorer-a", default="sentiment", help="Score that should follow the first axis.")
    parser.add_argument("--scorer-b", default="readability", help="Score that should follow the second axis.")
    parser.add_argument("--prompts", default="neutral", help="Held-out prompt set (never used for building).")
    parser.add_argument("--limit", type=int, default=20, help="Prompts per cell.")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="Greedy tokens per answer.")
    parser.add_argument("--batch-size", type=int, default=16, help="Prompts per generate call.")
    parser.add_argument("--composition", default=None, help="Override the pack's composition (sequential, paper).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the build and the bootstrap intervals.")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "multi_axis"), help="Output folder.")
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    args = parser.parse_args(argv)
    if args.strengths is not None:
        args.strengths_a = args.strengths_b = args.strengths
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    began = time.perf_counter()

    path = alignez_hf.default_base_model()
    tok = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path).eval()
    build_seconds = None
    if args.pack:
        model = AlignEZForCausalLM.from_pretrained(args.pack, base_model=base)
        axis_a, axis_b = list(model.axes)[:2]
    else:
        data = resources.files("alignez_hf") / "data" / "build_queries.txt"
        queries = load_queries(Path(str(data)))[: args.queries]
        builder = AlignEZBuilder(
            base,
            tok,
            axes=args.axes.split(","),
            strategy=args.strategy,
            scale_fraction=args.scale_fraction,
            layer_band=tuple(args.layer_band),
            seed=args.seed,
            progress=not args.no_progress,
        )
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the summary printed by the builder carries any warning
            model = builder.build(queries, output_dir=args.save_pack)
        build_seconds = time.perf_counter() - started
        axis_a, axis_b = (a.name for a in builder.axes[:2])
    entry = model.axes[axis_a].metadata  # what the builder recorded: strategy, scale, build report
    build = entry.get("build") or {}
    cosine = (build.get("subspace_cosine") or {}).get(axis_b)
    cosine_mean = (build.get("subspace_cosine_mean") or {}).get(axis_b)

    started = time.perf_counter()
    # --composition overrides the pack's for the sweep only (the pack itself is left as built).
    options = model.steering_options(composition=args.composition) if args.composition else contextlib.nullcontext()
    with options:
        sweep = sweep_2d(
            model,
            tok,
            axis_a,
            axis_b,
            args.strengths_a,
            args.strengths_b,
            args.scorer_a,
            args.scorer_b,
            args.prompts,
            limit=args.limit,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=not args.no_progress,
        )
    sweep_seconds = time.perf_counter() - started
    sweep["build"] = {
        "strategy": entry.get("strategy"),
        "queries": build.get("queries"),
        "layers": {name: list(model.axes[name].layers) for name in (axis_a, axis_b)},
        "scale": entry.get("scale"),
        "subspace_cosine": cosine,
        "subspace_cosine_mean": cosine_mean,
        "self_check": {
            name: (view.metadata.get("build") or {}).get("quality")
            for name, view in model.axes.items()
            if name in (axis_a, axis_b)
        },
    }
    sweep["timing"] = {
        "build_seconds": build_seconds,
        "sweep_seconds": sweep_seconds,
        "total_seconds": time.perf_counter() - began,
        "generations": len(sweep["answers"]),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
    }
    sweep["command"] = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/multi_axis_heatmap.py", *sys.argv[1:]])
    written = write_sweep(sweep, args.out)
    with open(written["markdown"], "a", encoding="utf-8") as md:
        md.write(_build_notes(sweep))
    print(written["markdown"].read_text(encoding="utf-8"))
    print("Wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def _build_notes(sweep: dict) -> str:
    """Markdown lines on the pack (subspace cosine, self-check) and the run's wall times."""
    build, timing = sweep["build"], sweep["timing"]
    a, b = sweep["axis_a"], sweep["axis_b"]
    lines = ["", "## Pack and run", ""]
    if build["subspace_cosine"]:
        values = build["subspace_cosine"]
        lines.append(
            f"Subspace cosine between {a} and {b} (largest principal cosine, per shared layer): mean "
            f"{build['subspace_cosine_mean']:.3f}, range {min(values.values()):.3f} to {max(values.values()):.3f} "
            f"over layers {min(values, key=int)}-{max(values, key=int)}."
        )
    for name, quality in build["self_check"].items():
        if quality:
            lines.append(
                f"Build self-check of {name}: margin shift {quality['shift']:+.3f} nats/token at +strength, "
                f"{quality['reverse_shift']:+.3f} at -strength, random direction {quality['random_shift']:.3f}."
            )
    scale = build.get("scale") or {}
    if scale.get("fraction_of_norm_per_unit_strength"):
        lines.append(
            f"Strength 1 adds {scale['fraction_of_norm_per_unit_strength']:g} of a layer's typical hidden-state norm "
            f"along the axis on each edited layer ({a}: layers {_span(build['layers'][a])}, {b}: layers "
            f"{_span(build['layers'][b])})."
        )
    for key, scorer in (("score_a", sweep["scorer_a"]), ("score_b", sweep["scorer_b"])):
        along_a, along_b = _slopes(sweep, key)
        lines.append(
            f"Least-squares slope of {scorer} per unit strength: {along_a:+.3f} along {a}, {along_b:+.3f} along {b}."
        )
    build_time = "loaded, not built" if timing["build_seconds"] is None else f"{timing['build_seconds']:.0f} s"
    lines += [
        f"Wall time on {timing['machine']}, {timing['torch_threads']} torch threads: build {build_time}, sweep "
        f"{timing['sweep_seconds']:.0f} s for {timing['generations']} greedy answers, total "
        f"{timing['total_seconds']:.0f} s.",
        "",
        f"Rerun: `{sweep['command']}`",
        "",
    ]
    return "\n".join(lines)


def _number(value) -> bool:
    return value is not None and not math.isnan(value)


def _span(layers: list[int]) -> str:
    return f"{min(layers)}-{max(layers)}" if layers else "none"


def _slopes(sweep: dict, key: str) -> tuple[float, float]:
    """Slopes of a score grid against each axis's strength (the grid is full, so the two fits are independent)."""
    grid, sa, sb = sweep[key], sweep["strengths_a"], sweep["strengths_b"]
    cells = [(x, y, grid[i][j]) for i, x in enumerate(sa) for j, y in enumerate(sb) if _number(grid[i][j])]
    mean_x = sum(c[0] for c in cells) / len(cells)
    mean_y = sum(c[1] for c in cells) / len(cells)
    mean_v = sum(c[2] for c in cells) / len(cells)

    def slope(k: int, mean: float) -> float:
        spread = sum((c[k] - mean) ** 2 for c in cells)
        return sum((c[k] - mean) * (c[2] - mean_v) for c in cells) / spread if spread else float("nan")

    return slope(0, mean_x), slope(1, mean_y)


if __name__ == "__main__":
    raise SystemExit(main())
