"""Two axes in one pack: build cheerful + simple for the embedded SmolLM2, sweep both strengths, draw the heatmap.

    python examples/multi_axis.py --out multi-axis     # 24 build queries, 3x3 strengths, 6 prompts (1-2 minutes)
    python examples/multi_axis.py --quick --out /tmp/ma  # 6 queries, 2 prompts, 8 tokens (a test runs this)

Each axis gets its own subspace; the builder prints the cosine between them (0 = independent directions, 1 = the
same one). The sweep answers held-out prompts at every pair of strengths and scores each answer twice: sentiment
(VADER) should follow the cheerful strength, readability (Flesch) the simple strength. The measured run with more
prompts is ``benchmarks/multi_axis_heatmap.py``.
"""

from __future__ import annotations

import argparse
import warnings
from importlib import resources
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from alignez_hf import default_base_model
from alignez_hf.builder import AlignEZBuilder, load_queries
from alignez_hf.evaluation import sweep_2d, write_sweep


def main(argv: list[str] | None = None) -> int:
    """Build the two-axis pack, sweep, write sweep.json, sweep.md and the heatmap PNG."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="multi-axis", help="Folder for the sweep results and the heatmap.")
    parser.add_argument("--strengths", default="-1,0,1", help="Comma-separated strengths, the same for both axes.")
    parser.add_argument("--quick", action="store_true", help="A reduced run: 6 queries, 2 prompts, 8 tokens.")
    args = parser.parse_args(argv)
    n_queries, n_prompts, max_new_tokens = (6, 2, 8) if args.quick else (24, 6, 32)
    strengths = [float(s) for s in args.strengths.split(",")]

    base_path = default_base_model()
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base = AutoModelForCausalLM.from_pretrained(base_path).eval()
    queries = load_queries(Path(str(resources.files("alignez_hf") / "data" / "build_queries.txt")))[:n_queries]
    # Two preset axes: cheerful (cheerful vs gloomy) and simple (simple vs technical).
    builder = AlignEZBuilder(base, tokenizer, axes=["cheerful", "simple"], strategy="persona", check_queries=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the build summary printed above carries the same warnings
        pack = builder.build(queries)

    cheerful = pack.axes["cheerful"].metadata["build"]  # the builder's report, kept with the axis
    by_layer = cheerful["subspace_cosine"]["simple"]
    print(
        f"\nSubspace cosine between cheerful and simple: mean {cheerful['subspace_cosine_mean']['simple']:.3f} over "
        f"{len(by_layer)} shared layers (stored in the pack's config.json under axes[].build.subspace_cosine)."
    )

    # Per-call strengths for both axes: every cell of the grid is one generate(..., steering={...}) setting.
    sweep = sweep_2d(
        pack,
        tokenizer,
        "cheerful",
        "simple",
        strengths,
        strengths,
        scorer_a="sentiment",
        scorer_b="readability",
        prompt_set="neutral",
        limit=n_prompts,
        max_new_tokens=max_new_tokens,
    )
    written = write_sweep(sweep, args.out)
    print(written["markdown"].read_text(encoding="utf-8"))
    print(
        f"Own-axis vs cross-axis movement: sentiment {sweep['own']['a']:.3f} vs {sweep['cross']['a']:.3f}, "
        f"readability {sweep['own']['b']:.2f} vs {sweep['cross']['b']:.2f}."
    )
    print("Wrote " + ", ".join(str(p) for p in written.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
