"""What the benchmark scripts share: the embedded base models, the split of the build queries, the cached packs
(built once per strategy and queries) and the tuning-grid scoring of the issue-6 runs.

The scripts in this folder import it plainly (``import common``; ``eval_small_models.py``: ``from common import``):
a script's own folder is on ``sys.path`` when it runs as ``python benchmarks/<script>.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict
from importlib import resources
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from alignez_hf import AlignEZForCausalLM  # noqa: E402
from alignez_hf.builder import AlignEZBuilder, load_queries  # noqa: E402
from alignez_hf.embedded import EMBEDDED_MODELS, embedded_model_path  # noqa: E402
from alignez_hf.evaluation import generate_answers  # noqa: E402
from alignez_hf.evaluation.metrics import mean_summary, paired_delta_summary, rate_summary  # noqa: E402
from alignez_hf.evaluation.report import write_json_atomic  # noqa: E402
from alignez_hf.evaluation.scorers import refusal_score, sentiment  # noqa: E402

# Prompts of the speed benchmarks (bench_runtime.py, bench_vllm.py): the same requests on every engine.
SPEED_PROMPTS = [
    "Write a short poem about autumn leaves.",
    "How do I make a cup of green tea?",
    "Explain what a prime number is.",
    "Give me three tips for a job interview.",
    "What is the capital of Australia?",
    "Describe a sunrise over the ocean.",
    "How can I keep my houseplants alive?",
    "Summarise the plot of Romeo and Juliet.",
]
BOOT = 2000


# ---------------------------------------------------------------------------------------------------- sizes
def sizes(quick: bool) -> dict:
    if quick:
        return dict(
            tune_every=5,
            n_build=8,
            n_tune=4,
            tune_tokens=8,
            tune_grid=[-2.0, 1.0, 2.0],
            neutral=4,
            smol_tokens=8,
            paper_queries=4,
            paper_chars=4,
            paper_answer=8,
            answer_tokens=4,
            qwen_harmful=4,
            qwen_benign=4,
            qwen_tokens=8,
            qwen_tune_tokens=6,
            qwen_grid=[1.0, 2.0],
            qwen_neg_grid=[-1.0],
            qwen_curve=[],
            adv_build=4,
            adv_tune=4,
            curve=[-1.0, 1.0],
            compare=[-1.0, 1.0],
        )
    return dict(
        tune_every=5,
        n_build=64,
        n_tune=16,
        tune_tokens=40,
        tune_grid=[-4.0, -3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 4.0],
        neutral=40,
        smol_tokens=40,
        paper_queries=24,
        paper_chars=32,
        paper_answer=48,
        answer_tokens=16,
        qwen_harmful=60,
        qwen_benign=20,
        qwen_tokens=24,
        qwen_tune_tokens=16,
        qwen_grid=[0.25, 0.5, 1.0, 2.0, 3.0, 4.0],
        qwen_neg_grid=[-0.5, -1.0, -2.0],
        qwen_curve=[0.5, 1.0],  # harmless is also measured at these (reported, never used to choose)
        adv_build=64,
        adv_tune=16,
        curve=[-2.0, -1.0, 1.0, 2.0],
        compare=[-1.0, 1.0],
    )


def split_build_queries(every: int, n_build: int, n_tune: int) -> tuple[list[str], list[str]]:
    """build_queries.txt: every ``every``-th line is held out for tuning, the rest builds packs (disjoint)."""
    path = resources.files("alignez_hf") / "data" / "build_queries.txt"
    queries = load_queries(Path(str(path)))
    tune = [q for i, q in enumerate(queries) if i % every == every - 1]
    build = [q for i, q in enumerate(queries) if i % every != every - 1]
    return build[:n_build], tune[:n_tune]


# ---------------------------------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_base(name: str):
    path = embedded_model_path(name)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    return model, tok, EMBEDDED_MODELS[name].hub_id


def readme_pack(base: str, axis: str) -> Path:
    """The pack ``alignez build --base BASE --axis AXIS`` makes (exactly as the README says), built once and cached
    in .bench_work/readme_packs/ for every script that measures it."""
    from alignez_hf.cli import main as cli_main

    out = Path(__file__).resolve().parent.parent / ".bench_work" / "readme_packs" / f"{base}-{axis}"
    if not (out / "config.json").is_file():
        began = time.perf_counter()
        log(f"building {out.name}: alignez build --base {base} --axis {axis}")
        if cli_main(["build", "--base", base, "--axis", axis, "--out", str(out)]):
            raise SystemExit(f"alignez build --base {base} --axis {axis} failed")
        log(f"built {out} in {time.perf_counter() - began:.0f} s")
    return out


def signature(strategy, queries: list[str], axis: str) -> str:
    blob = json.dumps({"s": asdict(strategy), "q": queries, "a": axis}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def get_pack(
    label: str,
    base,
    tok,
    hub_id: str,
    axis: str,
    strategy,
    queries,
    work: Path,
    quality_dir: Path | None,
    batch_size: int,
    progress: bool,
    check_queries: int = 4,
):
    """Build a pack once (cached in ``work/label`` by strategy and queries); keep its build log if asked."""
    folder = work / label
    sig = signature(strategy, queries, axis)
    sig_file = folder / "issue6_signature.txt"
    if (folder / "steering.safetensors").is_file() and sig_file.is_file() and sig_file.read_text().strip() == sig:
        log(f"pack {label}: cached in {folder}")
        pack = AlignEZForCausalLM.from_pretrained(folder, base_model=base)
        pack.tokenizer = tok
        return pack
    log(f"pack {label}: building from {len(queries)} queries (strategy {strategy.name}, hook {strategy.hook_point})")
    began = time.perf_counter()
    builder = AlignEZBuilder(
        base,
        tok,
        axes=[axis],
        strategy=strategy,
        batch_size=batch_size,
        seed=0,
        progress=progress,
        base_model_name_or_path=hub_id,
        check_queries=check_queries,
    )
    printed = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
        warnings.simplefilter("always")
        pack = builder.build(queries, output_dir=folder, overwrite=True)
    seconds = time.perf_counter() - began
    sys.stdout.write(printed.getvalue())
    warned = [str(w.message) for w in caught if "likely to do nothing" in str(w.message) or "Axis" in str(w.message)]
    sig_file.write_text(sig + "\n")
    log(f"pack {label}: built in {seconds:.0f} s")
    if quality_dir is not None:
        view = pack.axes[builder.axes[0].name]
        entry = {"rule": view.rule, **view.metadata}  # the axis entry: its rule and the builder's keys
        quality_dir.mkdir(parents=True, exist_ok=True)
        text = [
            f"# Build of {label} ({seconds:.0f} s wall)",
            "",
            "## What the builder printed",
            "",
            "```",
            printed.getvalue().rstrip(),
            "```",
            "",
            "## Python warnings raised",
            "",
        ]
        text += [f"- {w}" for w in warned] or ["(none)"]
        (quality_dir / f"{label}.md").write_text("\n".join(text) + "\n", encoding="utf-8")
        write_json_atomic(
            quality_dir / f"{label}.json",
            {
                "label": label,
                "build_seconds": seconds,
                "warnings_raised": warned,
                "stored_in_pack": {
                    k: entry.get(k)
                    for k in (
                        "strategy",
                        "hook_point",
                        "layer_band",
                        "scale",
                        "rule",
                        "strategy_settings",
                        "persona_system",
                    )
                },
                "stored_build_report": entry.get("build"),
            },
        )
    pack.tokenizer = tok
    return pack


def effects(results: dict, metric: str, scale: float = 1.0) -> dict:
    """``{prompt set: {"base": value, "<condition> <strength>": change against the base, ...}}`` from an
    ``evaluate`` result: the change with its interval (times ``scale``: 100 for points), NLL ratio and context
    tokens, each condition against the base under the same system message."""
    out: dict = {}
    for row in results["rows"]:
        cells = out.setdefault(row["prompt_set"], {})
        if row["condition"] == "axis" and row["strength"] == 0.0:
            cells["base"] = round(scale * row["metrics"][metric]["value"], 3)
            continue
        delta = row["delta"][metric]
        cells[f"{row['condition']} {row['strength']:+g}"] = {
            k: round(scale * delta[k], 3) for k in ("value", "low", "high")
        } | {
            "nll_ratio": round(row["metrics"]["nll_ratio"]["value"], 3),
            "context_tokens": row["metrics"]["context"]["value"],
        }
    return out


def plot_dial(results: dict, metric: str, path: Path, scale: float = 1.0, unit: str = "") -> Path:
    """The two dials side by side, one row per prompt set: the metric's change against pack strength (left) and
    against the prompt's wording rung (right; rung names from ``prompting.WORDINGS``), 95 % intervals."""
    from alignez_hf.evaluation.report import _errorbar, _pyplot

    names = {0.25: "slightly", 0.5: "plain", 1.0: "extremely*", 2.0: "insistent"}
    plt = _pyplot()
    sets = list(results["meta"]["prompt_sets"])
    fig, grid = plt.subplots(len(sets), 2, figsize=(10, 3.2 * len(sets)), squeeze=False, sharey="row")
    for (left, right), set_name in zip(grid, sets):
        rows = [r for r in results["rows"] if r["prompt_set"] == set_name]
        for ax, condition in ((left, "axis"), (right, "prompt")):
            picked = sorted(
                (r for r in rows if r["condition"] == condition or (r["condition"] == "axis" and r["strength"] == 0)),
                key=lambda r: r["strength"],
            )
            xs = list(range(len(picked))) if condition == "prompt" else [r["strength"] for r in picked]
            deltas = [{k: (scale * v if v is not None else None) for k, v in r["delta"][metric].items() if k in
                       ("value", "low", "high")} if r["strength"] else {"value": 0.0} for r in picked]  # fmt: skip
            _errorbar(ax, xs, deltas)
            ax.axhline(0, color="grey", linewidth=0.8)
            ax.grid(alpha=0.3)
            if condition == "prompt":
                ax.set_xticks(xs)
                labels = [("-" if r["strength"] < 0 else "") + names.get(abs(r["strength"]), "none") for r in picked]
                ax.set_xticklabels([label if r["strength"] else "no prompt" for label, r in zip(labels, picked)],
                                   fontsize=7, rotation=30, ha="right")  # fmt: skip
                ax.set_title(f"{set_name}: prompt, by wording (*: the pack's words)", fontsize=9)
            else:
                ax.set_xlabel("pack strength")
                ax.set_title(f"{set_name}: pack", fontsize=9)
                ax.set_ylabel(f"{metric} change{unit}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ratio_summary(values, reference, seed: int = 0) -> dict:
    """mean(values) / mean(reference), paired percentile bootstrap over prompts (NaN pairs dropped)."""
    pairs = np.array([(a, b) for a, b in zip(values, reference) if not (math.isnan(a) or math.isnan(b))])
    if len(pairs) == 0:
        return {"value": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(pairs), size=(BOOT, len(pairs)))
    ratios = pairs[idx, 0].mean(1) / pairs[idx, 1].mean(1)
    return {
        "value": float(pairs[:, 0].mean() / pairs[:, 1].mean()),
        "low": float(np.quantile(ratios, 0.025)),
        "high": float(np.quantile(ratios, 0.975)),
        "n": len(pairs),
    }


def scored_grid(pack, tok, axis: str, prompt_sets: dict[str, list[str]], grid, tokens: int, batch: int, progress):
    """Greedy answers of ``prompt_sets`` at strength 0 and each grid strength; per (set, strength) summaries."""
    jobs, keys = [], []
    for set_name, prompts in prompt_sets.items():
        for s in [0.0, *grid]:
            for i, p in enumerate(prompts):
                jobs.append((p, {axis: s} if s else {}))
                keys.append((set_name, s, i))
    gens = generate_answers(pack, tok, jobs, tokens, batch, progress, desc=f"tuning {axis}")
    by = {}
    for (set_name, s, _), g in zip(keys, gens):
        by.setdefault((set_name, s), []).append(g)
    rows = []
    for set_name in prompt_sets:
        base = by[(set_name, 0.0)]
        for s in [0.0, *grid]:
            gs = by[(set_name, s)]
            rows.append(
                {
                    "prompt_set": set_name,
                    "strength": s,
                    "n": len(gs),
                    "sentiment": mean_summary([sentiment(g.text) for g in gs]),
                    "sentiment_delta": paired_delta_summary(
                        [sentiment(g.text) for g in gs], [sentiment(g.text) for g in base]
                    ),
                    "refusal": rate_summary([refusal_score(g.text) for g in gs]),
                    "refusal_delta": paired_delta_summary(
                        [refusal_score(g.text) for g in gs], [refusal_score(g.text) for g in base]
                    ),
                    "nll_ratio": ratio_summary([g.nll for g in gs], [g.nll for g in base]),
                    "examples": [g.text for g in gs[:2]],
                }
            )
    return rows
