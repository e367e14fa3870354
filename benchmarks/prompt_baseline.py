"""Is a pack better than a prompt? SmolLM2 cheerful, pack vs its own persona words as a system message vs both.

The pack is built exactly as the README says (``alignez build --base smollm2-135m --axis cheerful``: bundled build
queries, default strategy; cached in .bench_work/readme_packs/); the evaluation runs on the held-out prompt sets,
which share no prompt with the build.
Conditions (``evaluate(..., prompting=True)``): the pack at each strength, a random direction of the same size, the
persona system message of the matching pole ("You are an extremely cheerful/gloomy assistant.") with the pack off,
and message + pack. NLL is always that of the answer after the plain prompt, under the base.

Then the same under a user's own system message that pulls the other way (``--system-prompts``): a gloomy one and
a neutral-but-strict one. A pack is applied by the deployer; the prompt baseline puts the persona words before the
user's message. ``summary.json`` gives each method's sentiment change against the base under the same system
message, and the share of its plain-prompt effect it keeps.

Last, the dial (``smollm2_cheerful_dial``): sentiment against pack strength (-1 .. +2) and against the prompt's
wording intensity (``prompt_dial``: "slightly", plain, the pack's own "extremely", and an insistent wording, for
each pole), on the first 15 prompts of the same held-out sets; ``summary.json["dial"]``.

    python benchmarks/prompt_baseline.py            # about 70 minutes on a 2-core CPU
    python benchmarks/prompt_baseline.py --quick    # a smoke run

Results: benchmarks/results/prompt_baseline/smollm2_cheerful/ and smollm2_cheerful_under_<name>/ (results.json,
results.md, answers.json, plots), and summary.json beside them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import effects, log, plot_dial, readme_pack
from transformers import AutoTokenizer

from alignez_hf import AlignEZForCausalLM
from alignez_hf.evaluation import evaluate

RESULTS = Path(__file__).resolve().parent / "results" / "prompt_baseline"
# A user's own system message that pulls against the cheerful axis, and one that asks for flat answers.
SYSTEM_PROMPTS = {
    "gloomy": "You are a gloomy, pessimistic assistant who sees the downside of everything.",
    "strict": "You are a strictly neutral assistant. State facts plainly, without emotion or enthusiasm.",
}
# The dial: pack strengths, and the prompt at every rung of the wording ladder of each pole (prompting.WORDINGS).
DIAL = [0.0, -1.0, -0.5, 0.5, 1.0, 2.0]
DIAL_LIMIT = 15  # prompts per set: 19 answers each (12 minutes here)
METHODS = {"pack": ("axis", 1.0), "prompt": ("prompt", 1.0), "prompt+pack": ("prompt+axis", 1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    pack = readme_pack("smollm2-135m", "cheerful")
    model = AlignEZForCausalLM.from_pretrained(pack)
    tokenizer = AutoTokenizer.from_pretrained(pack)
    root = RESULTS / "quick" if args.quick else RESULTS
    common = dict(prompt_sets=["neutral", "ordinary"], max_new_tokens=16 if args.quick else 48, batch_size=8)
    common.update(prompting=True, kl=False)
    plain = root / "smollm2_cheerful"
    if not (plain / "results.json").is_file():
        limit = 4 if args.quick else 30
        results = evaluate(model, tokenizer, "cheerful", [0.0, -0.5, 1.0], limit=limit, out_dir=str(plain), **common)
        log(f"plain: {results['meta']['seconds']:.0f} s -> {plain}")
    for name, system in SYSTEM_PROMPTS.items():
        out = root / f"smollm2_cheerful_under_{name}"
        if not (out / "results.json").is_file():
            limit = 3 if args.quick else 12
            results = evaluate(
                model, tokenizer, "cheerful", [0.0, 1.0], limit=limit, system=system, out_dir=str(out), **common
            )
            log(f"{name}: {results['meta']['seconds']:.0f} s -> {out}")
    dial = root / "smollm2_cheerful_dial"
    if not (dial / "results.json").is_file():
        results = evaluate(
            model, tokenizer, "cheerful", DIAL, limit=4 if args.quick else DIAL_LIMIT, random_control=False,
            prompt_dial=True, out_dir=str(dial), **common,
        )  # fmt: skip
        log(f"dial: {results['meta']['seconds']:.0f} s -> {dial}")
    summary = summarise(root)
    dialled = json.loads((dial / "results.json").read_text())
    summary["dial"] = effects(dialled, "sentiment")
    plot_dial(dialled, "sentiment", dial / "dial.png")
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(json.dumps(summary["pooled"], indent=1))


def summarise(root: Path) -> dict:
    """Sentiment change of each method against the base under the same system message, per set and pooled."""
    out: dict = {"system_prompts": {"none": None, **SYSTEM_PROMPTS}, "per_set": {}, "pooled": {}}
    for name in ("none", *SYSTEM_PROMPTS):
        folder = root / ("smollm2_cheerful" if name == "none" else f"smollm2_cheerful_under_{name}")
        results = json.loads((folder / "results.json").read_text())
        rows = {(r["prompt_set"], r["condition"], r["strength"]): r for r in results["rows"]}
        n = results["meta"]["limit"]
        for method, (condition, strength) in METHODS.items():
            deltas = {}
            for set_name in results["meta"]["prompt_sets"]:
                row = rows[(set_name, condition, strength)]
                deltas[set_name] = {
                    "sentiment_delta": row["delta"]["sentiment"],
                    "nll_ratio": row["metrics"]["nll_ratio"]["value"],
                    "context_tokens": row["metrics"]["context"]["value"],
                    "base_sentiment": rows[(set_name, "axis", 0.0)]["metrics"]["sentiment"]["value"],
                }
            out["per_set"].setdefault(name, {})[method] = deltas
            mean = sum(d["sentiment_delta"]["value"] for d in deltas.values()) / len(deltas)
            out["pooled"].setdefault(name, {})[method] = {"sentiment_delta": round(mean, 3), "n_per_set": n}
    for name in SYSTEM_PROMPTS:
        for method, entry in out["pooled"][name].items():
            plain = out["pooled"]["none"][method]["sentiment_delta"]
            # A share of an effect that is not there means nothing: only where every plain interval excludes 0.
            real = all(d["sentiment_delta"]["low"] > 0 for d in out["per_set"]["none"][method].values())
            entry["kept_of_plain_effect"] = round(entry["sentiment_delta"] / plain, 2) if real else None
    return out


if __name__ == "__main__":
    main()
