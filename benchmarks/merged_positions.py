"""What folding a pack into weights does to its effect: every position edited (a merged checkpoint) vs the pack's
rule (the prompt's last token, then each generated token).

SmolLM2-135M-Instruct, the default ``cheerful`` persona pack built from the bundled queries; held-out neutral
prompts; greedy. ``all positions`` is measured through the runtime (``steering_options(positions="all")``), which
is what ``merge_and_unload`` bakes in (tests/test_runtime_merge.py checks the two give the same logits).

    python benchmarks/merged_positions.py [--limit 40] [--strengths 0.5,1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

import alignez_hf
from alignez_hf.builder import AlignEZBuilder, load_queries
from alignez_hf.cli.build import bundled_queries
from alignez_hf.evaluation import Setting, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--strengths", default="0.5,1")
    parser.add_argument("--out", default="benchmarks/results/merged_positions")
    args = parser.parse_args()
    path = alignez_hf.default_base_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path).eval()
    with tempfile.TemporaryDirectory() as tmp:
        builder = AlignEZBuilder(base, tokenizer, axes=["cheerful"], verbose=False, progress=False)
        pack = builder.build(load_queries(bundled_queries()), output_dir=Path(tmp) / "pack")
    settings = [
        Setting("last position (the pack)", pack, "cheerful"),
        Setting("all positions (merged)", pack, "cheerful", config={"positions": "all"}),
    ]
    results = evaluate(
        tokenizer=tokenizer,
        settings=settings,
        strengths=[float(s) for s in args.strengths.split(",")],
        prompt_sets=["neutral"],
        limit=args.limit,
        out_dir=args.out,
        kl=False,
        progress=False,
    )
    for row in results["rows"]:
        if row["condition"] == "axis" and row["strength"] != 0:
            sentiment, nll = row["delta"]["sentiment"], row["metrics"]["nll_ratio"]
            print(
                f"{row['setting']:<26} strength {row['strength']:g}: sentiment {sentiment['value']:+.2f} "
                f"[{sentiment['low']:+.2f}, {sentiment['high']:+.2f}], NLL x{nll['value']:.2f}"
            )
    print(json.dumps({"out": args.out}))


if __name__ == "__main__":
    main()
