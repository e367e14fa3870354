"""DPO vs AlignEZ under wall-clock budgets: the AlignEZ paper's DPO claim in miniature (SmolLM2-135M, cheerful).

Every method gets the same self-generated data: the ``persona_answers`` build of the cheerful axis writes the
model's own answer pairs (cheerful vs gloomy persona) to ``self_generated.jsonl``; the pack steers along the
contrast read from those answers, and ``alignez pairs`` turns the same records into DPO preference rows.

Methods, each timed on this machine from loading the model to a usable result:
- AlignEZ alone: ``alignez build --strategy persona_answers`` (and, for reference, the README's default
  ``persona`` build, which reads prompts only and generates no answers);
- DPO: a LoRA adapter trained by TRL's ``DPOTrainer`` on the pairs, checkpointed when its wall time crosses each
  budget (default 1, 5 and 20 minutes; the budget counts model loading and trainer set-up, as the build's does);
- DPO, then AlignEZ: a ``persona_answers`` pack built on the adapter of the smallest budget (``--base ADAPTER``),
  its wall time the DPO budget plus the build.

Evaluation: greedy answers (48 new tokens) to the held-out ``neutral`` and ``ordinary`` sets (30 each, none in
the build queries), sentiment (VADER compound) change against the base model with a 95% paired bootstrap
interval, answer NLL under the original base (drift from what the base would say), and a random direction of
the pack's size as the noise floor. DPO's settings are fixed before any evaluation (LoRA r=16 on the attention
and MLP projections, learning rate 5e-5 constant, beta 0.1, 8 pairs per step); nothing is tuned on these prompts.

    python benchmarks/dpo_vs_alignez.py              # about 40 minutes on a 2-core CPU (20 of them DPO)
    python benchmarks/dpo_vs_alignez.py --quick      # a smoke run of every stage (about 3 minutes)

Stages are cached in ``--work`` (packs, adapters, answers), so an interrupted run resumes. Results:
benchmarks/results/dpo_vs_alignez/ (results.json, results.md, effect_vs_time.png, answers/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from common import log  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402

from alignez_hf import AlignEZForCausalLM  # noqa: E402
from alignez_hf.cli import main as cli_main  # noqa: E402
from alignez_hf.embedded import embedded_model_path  # noqa: E402
from alignez_hf.evaluation import generate_answers, load_prompt_set, sentiment  # noqa: E402
from alignez_hf.evaluation.metrics import mean_summary, paired_delta_summary  # noqa: E402
from alignez_hf.evaluation.report import write_json_atomic  # noqa: E402
from alignez_hf.runtime.atomic import write_text_atomically  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "dpo_vs_alignez"
BASE = "smollm2-135m"
AXIS = "cheerful"
SETS = ("neutral", "ordinary")
# DPO settings, fixed in advance (TRL's LoRA recipe scale for a small model); see the module docstring.
DPO = dict(lora_r=16, lora_alpha=32, learning_rate=5e-5, beta=0.1, batch=4, accumulation=2, max_length=256)


def build(work: Path, name: str, base: str, strategy: str, timings: dict) -> Path:
    """Build the cheerful pack ``name`` on ``base`` once, recording its wall time."""
    out = work / name
    if not (out / "config.json").is_file() or name not in timings:
        began, load = time.perf_counter(), os.getloadavg()[0]
        argv = ["build", "--base", base, "--axis", AXIS, "--strategy", strategy, "--out", str(out), "--overwrite"]
        assert cli_main(argv) == 0, f"build {name} failed"
        timings[name] = {"seconds": time.perf_counter() - began, "strategy": strategy, "loadavg_at_start": load}
        write_json_atomic(work / "timings.json", timings)
        log(f"built {name} in {timings[name]['seconds']:.0f} s")
    return out


class Budgets(TrainerCallback):
    """Save the adapter when the wall time since ``start`` crosses each budget; stop after the last one."""

    def __init__(self, start: float, budgets_s: list[float], work: Path, pairs_per_step: int):
        self.start, self.budgets, self.work, self.pairs_per_step = start, sorted(budgets_s), work, pairs_per_step
        self.reached: list[dict] = []
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.logs.append({"step": state.global_step, **logs})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        elapsed = time.perf_counter() - self.start
        while self.budgets and elapsed >= self.budgets[0]:
            budget = self.budgets.pop(0)
            folder = self.work / f"dpo_{budget / 60:g}min"
            model.save_pretrained(folder)
            last = next((entry for entry in reversed(self.logs) if "loss" in entry), {})
            self.reached.append(
                {
                    "budget_s": budget,
                    "seconds": elapsed,
                    "steps": state.global_step,
                    "pairs_seen": state.global_step * self.pairs_per_step,
                    "epochs": round(float(state.epoch or 0.0), 2),
                    "loss": last.get("loss"),
                    "reward_accuracy": last.get("rewards/accuracies"),
                    "reward_margin": last.get("rewards/margins"),
                    "adapter": folder.name,
                    "loadavg": os.getloadavg()[0],
                }
            )
            log(f"DPO budget {budget:.0f} s: step {state.global_step}, loss {last.get('loss')}")
        if not self.budgets:
            control.should_training_stop = True
        return control


def train_dpo(work: Path, pairs: Path, budgets_s: list[float]) -> list[dict]:
    """One LoRA DPO run on the pairs, checkpointed at each budget; cached in ``work/dpo.json``."""
    record = work / "dpo.json"
    if record.is_file():
        done = json.loads(record.read_text())
        if [c["budget_s"] for c in done["checkpoints"]] == sorted(budgets_s):
            return done["checkpoints"]
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    start = time.perf_counter()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_path(BASE), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path(BASE))
    data = load_dataset("json", data_files=str(pairs), split="train")
    config = DPOConfig(
        output_dir=str(work / "dpo_trainer"),
        per_device_train_batch_size=DPO["batch"],
        gradient_accumulation_steps=DPO["accumulation"],
        learning_rate=DPO["learning_rate"],
        lr_scheduler_type="constant",
        beta=DPO["beta"],
        max_length=DPO["max_length"],
        max_steps=10**6,  # the budgets stop it
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=DPO["lora_r"],
        lora_alpha=DPO["lora_alpha"],
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    budgets = Budgets(start, budgets_s, work, DPO["batch"] * DPO["accumulation"])
    trainer.add_callback(budgets)
    trainer.train()
    write_json_atomic(record, {"pairs": len(data), "settings": DPO, "checkpoints": budgets.reached})
    return budgets.reached


def answers(work: Path, label: str, model, tokenizer, prompts, steering, nll_model, tokens: int) -> list[dict]:
    """Greedy answers of one condition (cached), with sentiment and NLL under the original base."""
    path = work / "answers" / f"{label}.json"
    if path.is_file():
        return json.loads(path.read_text())
    jobs = [(prompt, steering) for prompt in prompts]
    generations = generate_answers(
        model, tokenizer, jobs, max_new_tokens=tokens, batch_size=8, nll_model=nll_model, desc=label
    )
    rows = [{"prompt": g.prompt, "text": g.text, "nll": g.nll, "sentiment": sentiment(g.text)} for g in generations]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, rows)
    return rows


def summarise(rows: list[dict], base: list[dict]) -> dict:
    """Sentiment change and NLL drift against the base's answers to the same prompts, with 95% intervals."""
    nll = mean_summary([r["nll"] for r in rows])
    base_nll = mean_summary([r["nll"] for r in base])
    return {
        "sentiment": mean_summary([r["sentiment"] for r in rows]),
        "sentiment_delta": paired_delta_summary([r["sentiment"] for r in rows], [r["sentiment"] for r in base]),
        "nll": nll,
        "nll_delta": paired_delta_summary([r["nll"] for r in rows], [r["nll"] for r in base]),
        "nll_ratio": nll["value"] / base_nll["value"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=".bench_work/dpo_vs_alignez")
    parser.add_argument("--budgets", default="1,5,20", help="DPO wall-clock budgets in minutes")
    parser.add_argument("--limit", type=int, default=30, help="prompts per held-out set")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    work = Path(args.work + ("_quick" if args.quick else ""))
    work.mkdir(parents=True, exist_ok=True)
    budgets_min = [0.3, 0.6] if args.quick else [float(b) for b in args.budgets.split(",")]
    limit, tokens = (4, 8) if args.quick else (args.limit, 48)
    timings = json.loads((work / "timings.json").read_text()) if (work / "timings.json").is_file() else {}

    # Same self-generated data for every method: one persona_answers build, its records as DPO pairs.
    pack = build(work, "alignez_answers", BASE, "persona_answers", timings)
    pairs = work / "pairs.jsonl"
    if not pairs.is_file():
        assert cli_main(["pairs", str(pack), "--out", str(pairs)]) == 0
    dpo = train_dpo(work, pairs, [60 * b for b in budgets_min])
    first = dpo[0]["adapter"]
    combo = build(work, "dpo_then_alignez", str(work / first), "persona_answers", timings)
    default = build(work, "alignez_default", BASE, "persona", timings)

    tokenizer = AutoTokenizer.from_pretrained(pack)
    reference = AutoModelForCausalLM.from_pretrained(embedded_model_path(BASE), dtype=torch.float32).eval()
    prompts = {name: load_prompt_set(name, limit) for name in SETS}
    everything = [p for name in SETS for p in prompts[name]]

    def run(label, model, steering=None):
        return answers(work, label, model, tokenizer, everything, steering or {}, reference, tokens)

    conditions: dict[str, dict] = {}
    steered = AlignEZForCausalLM.from_pretrained(pack).eval()
    conditions["base"] = {"method": "base", "seconds": 0.0, "rows": run("base", steered)}
    conditions["alignez"] = {
        "method": "AlignEZ (persona_answers)",
        "seconds": timings["alignez_answers"]["seconds"],
        "rows": run("alignez", steered, {AXIS: 1.0}),
    }
    with steered.random_control(AXIS, seed=0) as noise:
        conditions["random"] = {
            "method": "random direction (same size)",
            "seconds": timings["alignez_answers"]["seconds"],
            "rows": run("random", steered, {noise: 1.0}),
        }
    readme = AlignEZForCausalLM.from_pretrained(default).eval()
    conditions["alignez_default"] = {
        "method": "AlignEZ (persona, README default)",
        "seconds": timings["alignez_default"]["seconds"],
        "rows": run("alignez_default", readme, {AXIS: 1.0}),
    }
    del steered, readme
    from peft import PeftModel

    for checkpoint in dpo:
        fresh = AutoModelForCausalLM.from_pretrained(embedded_model_path(BASE), dtype=torch.float32)
        merged = PeftModel.from_pretrained(fresh, work / checkpoint["adapter"]).merge_and_unload().eval()
        label = checkpoint["adapter"]
        conditions[label] = {
            "method": f"DPO (LoRA), {checkpoint['budget_s'] / 60:g} min",
            "seconds": checkpoint["seconds"],
            "training": checkpoint,
            "rows": run(label, AlignEZForCausalLM.from_base(merged)),
        }
    stacked = AlignEZForCausalLM.from_pretrained(combo).eval()
    conditions["dpo_then_alignez"] = {
        "method": f"DPO {dpo[0]['budget_s'] / 60:g} min, then AlignEZ",
        "seconds": dpo[0]["seconds"] + timings["dpo_then_alignez"]["seconds"],
        "rows": run("dpo_then_alignez", stacked, {AXIS: 1.0}),
    }

    base = conditions["base"]["rows"]
    spans, start = {}, 0
    for name in SETS:
        spans[name] = (start, start + len(prompts[name]))
        start += len(prompts[name])
    table = {}
    for label, entry in conditions.items():
        rows = entry["rows"]
        table[label] = {
            "method": entry["method"],
            "seconds": round(entry["seconds"], 1),
            **({"training": entry["training"]} if "training" in entry else {}),
            "pooled": summarise(rows, base),
            "per_set": {name: summarise(rows[a:b], base[a:b]) for name, (a, b) in spans.items()},
        }
    with open(work / "dpo.json") as handle:
        pairs_n = json.load(handle)["pairs"]
    results = {
        "model": f"{BASE} (float32)",
        "axis": AXIS,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        "prompt_sets": {name: len(p) for name, p in prompts.items()},
        "max_new_tokens": tokens,
        "pairs": pairs_n,
        "dpo_settings": DPO,
        "timings": timings,
        "conditions": table,
    }
    out = RESULTS / "quick" if args.quick else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", results)
    write_text_atomically(out / "results.md", markdown(results))
    for cached in sorted((work / "answers").glob("*.json")):  # every answer, next to the figures
        write_text_atomically(out / "answers" / cached.name, cached.read_text())
    plot(results, out / "effect_vs_time.png")
    log((out / "results.md").read_text())


def _ci(summary: dict, fmt: str = "{:+.2f}") -> str:
    return f"{fmt.format(summary['value'])} [{fmt.format(summary['low'])}, {fmt.format(summary['high'])}]"


def markdown(results: dict) -> str:
    lines = [
        f"# DPO vs AlignEZ, {results['model']}, axis {results['axis']}",
        "",
        f"Machine: {results['machine']}. Pairs: {results['pairs']}. Held-out prompts: {results['prompt_sets']}.",
        "",
        "| method | wall time (s) | DPO steps / pairs seen | sentiment change [95% CI] "
        "| NLL change (nats/token) | NLL x |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for entry in results["conditions"].values():
        training = entry.get("training")
        steps = f"{training['steps']} / {training['pairs_seen']}" if training else ""
        pooled = entry["pooled"]
        lines.append(
            f"| {entry['method']} | {entry['seconds']:.0f} | {steps} | {_ci(pooled['sentiment_delta'])} | "
            f"{_ci(pooled['nll_delta'])} | {pooled['nll_ratio']:.2f} |"
        )
    lines += ["", "Per set (sentiment change):", ""]
    for entry in results["conditions"].values():
        cells = ", ".join(f"{name} {_ci(s['sentiment_delta'])}" for name, s in entry["per_set"].items())
        lines.append(f"- {entry['method']}: {cells}")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    groups = {"DPO (LoRA)": [], "AlignEZ": [], "DPO, then AlignEZ": [], "random direction": []}
    for label, entry in results["conditions"].items():
        if label == "base":
            continue
        key = (
            "DPO (LoRA)" if label.startswith("dpo_") and label != "dpo_then_alignez"
            else "DPO, then AlignEZ" if label == "dpo_then_alignez"
            else "random direction" if label == "random"
            else "AlignEZ"
        )  # fmt: skip
        groups[key].append(entry)
    for (name, entries), marker in zip(groups.items(), "osD^"):
        entries = sorted(entries, key=lambda e: e["seconds"])
        xs = [max(e["seconds"], 1.0) for e in entries]
        for axis, metric in ((left, "sentiment_delta"), (right, "nll_delta")):
            ys = [e["pooled"][metric]["value"] for e in entries]
            low = [y - e["pooled"][metric]["low"] for y, e in zip(ys, entries)]
            high = [e["pooled"][metric]["high"] - y for y, e in zip(ys, entries)]
            axis.errorbar(
                xs, ys, yerr=[low, high], marker=marker, capsize=3, label=name, linestyle="-" if len(xs) > 1 else ""
            )
    for axis, title in ((left, "sentiment change vs base (95% CI)"), (right, "answer NLL change under the base")):
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_xlabel("wall time on this machine (s, log)")
        axis.set_title(title)
    left.legend(fontsize=8)
    fig.suptitle(f"{results['model']}, {results['axis']}: effect against wall time ({results['machine']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
