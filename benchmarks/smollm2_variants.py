"""Issue 6: can another read-out or edit placement beat the `persona` default on SmolLM2's cheerful axis?

The default (mean persona difference at the last prompt token, added on layers 15-20 at 0.04 of the layer norm
per unit strength) reaches about +0.27 VADER at NLL / base x1.26 on the evaluation prompts: just short of the
issue's +0.3 within x1.25. This script measures variants of it on the TUNING prompts only (the 16 held-out build
queries and alignez_hf/data/tune_neutral.txt; never an evaluation prompt), each through the library's runtime
(`add_axis` with the variant's directions and push sizes), all against the same base answers:

* other layer bands, and single layers at a larger push;
* editing every position of the prompt (``positions="all"``) instead of the last one;
* directions averaged over three persona phrasings instead of one;
* one-sided contrasts: cheerful persona vs no system message, and no system message vs gloomy persona.

Push sizes are the default's: 0.04 of the layer's typical norm per unit strength (from an all-layers build).

    python benchmarks/smollm2_variants.py   # about 12 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import common  # noqa: E402
import torch  # noqa: E402

from alignez_hf.builder.embeddings import embed_ids  # noqa: E402
from alignez_hf.builder.queries import load_queries  # noqa: E402
from alignez_hf.builder.strategies import STRATEGIES  # noqa: E402
from alignez_hf.chat import chat_prompt, encode  # noqa: E402
from alignez_hf.evaluation import generate_answers  # noqa: E402
from alignez_hf.evaluation.metrics import paired_delta_summary  # noqa: E402
from alignez_hf.evaluation.report import write_json_atomic  # noqa: E402
from alignez_hf.evaluation.scorers import sentiment  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "issue6" / "smollm2_variants"
TUNE_NEUTRAL = Path(__file__).resolve().parent.parent / "alignez_hf" / "data" / "tune_neutral.txt"
DEFAULT_BAND = tuple(range(15, 21))
PHRASINGS = (
    "You are an extremely {kw} assistant.",  # the builder's persona message (the default's direction)
    "Always answer in a very {kw} way.",
    "You are a {kw} assistant, and your {kw} mood shows in every answer.",
)
# (label, direction source, layers, strength, positions)
VARIANTS = [
    ("default", "pack", DEFAULT_BAND, 1.0, "last"),
    ("default", "pack", DEFAULT_BAND, -0.5, "last"),
    ("band 12-24", "pack", tuple(range(12, 25)), 0.5, "last"),
    ("band 18-24", "pack", tuple(range(18, 25)), 1.0, "last"),
    ("band 20-25", "pack", tuple(range(20, 26)), 1.0, "last"),
    *[(f"layer {layer} only", "pack", (layer,), 5.0, "last") for layer in (16, 18, 20, 22)],
    ("every prompt position", "pack", DEFAULT_BAND, 0.5, "all"),
    ("every prompt position", "pack", DEFAULT_BAND, 1.0, "all"),
    ("three phrasings", "phrasings", DEFAULT_BAND, 1.0, "last"),
    ("three phrasings", "phrasings", DEFAULT_BAND, -0.5, "last"),
    ("cheerful vs no persona", "cheerful_vs_none", DEFAULT_BAND, 1.0, "last"),
    ("no persona vs gloomy", "none_vs_gloomy", DEFAULT_BAND, 1.0, "last"),
    ("no persona vs gloomy", "none_vs_gloomy", DEFAULT_BAND, -0.5, "last"),
]


def last_token_states(pack, tok, queries: list[str], system: str | None, layers) -> dict[int, torch.Tensor]:
    """What the `persona` strategy reads (the builder's own embedding pass): hook-point output at the last prompt
    token, per layer ``[n, d]``."""
    ids = [encode(tok, chat_prompt(tok, q, system)) for q in queries]
    states = embed_ids(pack, ids, tok.pad_token_id, progress=False)
    return {layer: states[layer].float() for layer in layers}


def contrast_directions(pack, tok, queries: list[str], layers) -> dict[str, dict[int, torch.Tensor]]:
    """The alternative directions, from the same build queries as the pack."""

    def mean_diff(a, b):
        return {layer: (a[layer] - b[layer]).mean(0) for layer in layers}

    def unit(d):
        return {layer: v / v.norm() for layer, v in d.items()}

    persona = {
        kw: [last_token_states(pack, tok, queries, p.format(kw=kw), layers) for p in PHRASINGS]
        for kw in ("cheerful", "gloomy")
    }
    none = last_token_states(pack, tok, queries, None, layers)
    per_phrasing = [unit(mean_diff(persona["cheerful"][i], persona["gloomy"][i])) for i in range(len(PHRASINGS))]
    return {
        "phrasings": unit({layer: sum(d[layer] for d in per_phrasing) for layer in layers}),
        "cheerful_vs_none": unit(mean_diff(persona["cheerful"][0], none)),
        "none_vs_gloomy": unit(mean_diff(none, persona["gloomy"][0])),
        "phrasing_cosines": {
            layer: [float(per_phrasing[0][layer] @ d[layer]) for d in per_phrasing[1:]] for layer in layers
        },
    }


def _fmt(summary: dict) -> str:
    return f"{summary['value']:+.2f} [{summary['low']:+.2f}, {summary['high']:+.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=40, help="Greedy new tokens per answer (default 40).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--work", default="outputs/issue6/variants", help="Pack cache folder.")
    args = parser.parse_args()
    began = time.perf_counter()
    torch.set_num_threads(2)
    base, tok, hub_id = common.load_base("smollm2-135m")
    build_q, tune_q = common.split_build_queries(5, 64, 16)
    prompts = tune_q + load_queries(TUNE_NEUTRAL)
    every_layer = replace(STRATEGIES["persona"], layer_band=(0.0, 1.0))
    pack = common.get_pack(
        "persona_all_layers", base, tok, hub_id, "cheerful", every_layer, build_q, Path(args.work), None, 16, False
    )
    tensors = pack.axis_tensors("cheerful")
    layers = sorted({layer for _, _, ls, _, _ in VARIANTS for layer in ls})
    sources = contrast_directions(pack, tok, build_q, DEFAULT_BAND)
    sources["pack"] = {layer: tensors["directions"][layer][0] for layer in layers}
    cosines = {
        k: {layer: float(sources[k][layer] @ sources["pack"][layer]) for layer in DEFAULT_BAND}
        for k in ("phrasings", "cheerful_vs_none", "none_vs_gloomy")
    }

    axes = {}
    for label, source, band, _, positions in VARIANTS:
        name = f"v{len(axes)}"
        key = (label, source, tuple(band), positions)
        if key in axes.values():
            continue
        pack.add_axis(
            name,
            {layer: sources[source][layer] for layer in band},
            rule="additive",
            strength=0.0,
            scales={layer: tensors["scales"][layer] for layer in band},
        )
        axes[name] = key
    by_key = {key: name for name, key in axes.items()}
    pack.set_strength("cheerful", 0.0)

    answers = {}
    for positions in ("last", "all"):
        jobs = [(p, {}) for p in prompts] if positions == "last" else []
        chosen = [v for v in VARIANTS if v[4] == positions]
        for label, source, band, strength, _ in chosen:
            axis = by_key[(label, source, tuple(band), positions)]
            jobs += [(p, {axis: strength}) for p in prompts]
        with pack.steering_options(positions=positions):
            gens = generate_answers(pack, tok, jobs, args.tokens, args.batch_size, progress=True, desc=positions)
        if positions == "last":
            answers["base"], gens = gens[: len(prompts)], gens[len(prompts) :]
        for i, variant in enumerate(chosen):
            answers[variant] = gens[i * len(prompts) : (i + 1) * len(prompts)]

    base_sent = [sentiment(g.text) for g in answers["base"]]
    base_nll = [g.nll for g in answers["base"]]
    rows = []
    for variant in VARIANTS:
        label, source, band, strength, positions = variant
        gens = answers[variant]
        rows.append(
            {
                "variant": label,
                "layers": f"{band[0]}-{band[-1]}" if len(band) > 1 else str(band[0]),
                "strength": strength,
                "positions": positions,
                "sentiment_delta": paired_delta_summary([sentiment(g.text) for g in gens], base_sent),
                "nll_ratio": common.ratio_summary([g.nll for g in gens], base_nll),
                "examples": [g.text for g in gens[:2]],
            }
        )
    result = {
        "n_prompts": len(prompts),
        "tokens": args.tokens,
        "base_sentiment": sum(base_sent) / len(base_sent),
        "cosine_with_default_direction": cosines,
        "phrasing_cosines": sources["phrasing_cosines"],
        "rows": rows,
        "seconds": time.perf_counter() - began,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    write_json_atomic(OUT / "variants.json", result)
    lines = [
        "# SmolLM2 cheerful: variants of the `persona` default on the tuning prompts (issue 6)",
        "",
        f"Rerun: `python benchmarks/smollm2_variants.py`. {len(prompts)} tuning prompts (16 held-out build queries "
        f"+ tune_neutral.txt), greedy, {args.tokens} new tokens, base VADER {result['base_sentiment']:+.2f}; 95 % "
        "paired bootstrap intervals. Push per unit strength: 0.04 of each edited layer's typical norm.",
        "",
        "| variant | layers | positions | strength | sentiment change | NLL / base |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['layers']} | {r['positions']} | {r['strength']:+g} | "
            f"{_fmt(r['sentiment_delta'])} | {_fmt(r['nll_ratio']).replace('+', '')} |"
        )
    lines += [
        "",
        "Cosine of each alternative direction with the default's, layers 15-20: "
        + "; ".join(f"{k} {min(v.values()):.2f} to {max(v.values()):.2f}" for k, v in cosines.items())
        + ".",
        "",
        f"Wall time: {result['seconds']:.0f} s on a 2-core CPU.",
    ]
    (OUT / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
