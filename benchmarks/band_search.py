"""Layer-band search for the `persona` strategy on SmolLM2, cheerful axis (issue 6), on held-out BUILD queries.

Every band gets its own pack built from the same 64 build queries; each is scored on the 16 held-out tuning
queries (every fifth line of build_queries.txt, never used to build) at the given strengths: change in VADER
sentiment and NLL of the answers under the base (ratio to the base's own answers), 95 % paired bootstrap
intervals. No evaluation prompt is used, so the result may choose defaults.

    python benchmarks/band_search.py [--strengths -1,1] [--tokens 40]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import common  # noqa: E402  (shares the pack cache, split and scoring of eval_small_models.py)

from alignez_hf.builder.strategies import STRATEGIES  # noqa: E402
from alignez_hf.evaluation.report import write_json_atomic  # noqa: E402

PUSH = 0.02  # fraction of the layer norm per unit strength, equal for every band (the default before this search)
BANDS = {
    "1/3-2/3": (1 / 3, 2 / 3),
    "1/3-1/2": (1 / 3, 1 / 2),
    "1/2-2/3": (1 / 2, 2 / 3),
    "0.4-0.6": (0.4, 0.6),
    "1/6-1/2": (1 / 6, 1 / 2),
}


def _fmt(summary: dict) -> str:
    return f"{summary['value']:+.2f} [{summary['low']:+.2f}, {summary['high']:+.2f}]"


def main() -> None:
    """Build one pack per band, score each on the tuning split, write JSON and a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strengths", default="-1,1", help="Comma-separated strengths (default -1,1).")
    parser.add_argument("--tokens", type=int, default=40, help="Greedy new tokens per answer (default 40).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--work", default="outputs/issue6/band_search", help="Pack cache folder.")
    parser.add_argument("--out", default="benchmarks/results/issue6/band_search", help="Results folder.")
    args = parser.parse_args()
    strengths = [float(s) for s in args.strengths.split(",")]

    began = time.perf_counter()
    base, tok, hub_id = common.load_base("smollm2-135m")
    build_q, tune_q = common.split_build_queries(5, 64, 16)
    results = {"strengths": strengths, "tokens": args.tokens, "n_build": len(build_q), "n_tune": len(tune_q)}
    lines = [
        "# Layer bands of the persona strategy (SmolLM2, cheerful), on held-out build queries",
        "",
        f"Rerun: `python benchmarks/band_search.py`. {len(tune_q)} held-out tuning queries, greedy, {args.tokens} "
        f"new tokens, push {PUSH} of the layer norm per unit strength; 95 % paired bootstrap intervals.",
        "",
        "| band | layers | strength | sentiment change | NLL / base |",
        "|---|---|---|---|---|",
    ]
    for name, band in BANDS.items():
        strategy = replace(STRATEGIES["persona"], layer_band=band, scale_fraction=PUSH)
        label = "band_" + name.split(" ")[0].replace("/", "_")
        pack = common.get_pack(
            label, base, tok, hub_id, "cheerful", strategy, build_q, Path(args.work), None, 16, False
        )
        rows = common.scored_grid(
            pack, tok, "cheerful", {"tune": tune_q}, strengths, args.tokens, args.batch_size, False
        )
        layers = list(pack.axes["cheerful"].layers)
        results[name] = {"band": band, "layers": layers, "rows": rows}
        span = f"{layers[0]}-{layers[-1]}"
        for row in rows:
            if row["strength"]:
                lines.append(
                    f"| {name} | {span} | {row['strength']:+g} | {_fmt(row['sentiment_delta'])} | "
                    f"{_fmt(row['nll_ratio']).replace('+', '')} |"
                )
        print("\n".join(lines[-len(strengths) :]), flush=True)
    results["seconds"] = time.perf_counter() - began
    out = Path(args.out)
    write_json_atomic(out / "band_search.json", results)
    lines += ["", f"Wall time: {results['seconds']:.0f} s on a 2-core CPU."]
    (out / "band_search.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}/band_search.md")


if __name__ == "__main__":
    main()
