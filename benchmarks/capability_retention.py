"""Capability retention under steering, measured with lm-evaluation-harness (issue 15).

A 48-question general-knowledge multiple-choice set that this project wrote (``alignez_hf/data/capability_mc.jsonl``:
science, geography, arithmetic, language; four choices each, answer order shuffled once with a fixed seed) is run
as a local lm-eval task on each pack at the strengths whose behaviour effects docs/evidence.md reports, and at 0
(the base, through the same code path). Two scorings of every steered condition:

- ``alignez``: lm-eval's model ``alignez`` (alignez_hf.evaluation.lmeval), which scores each choice as steered
  generation would have produced it (edits from the context's last token on);
- ``hf``: what lm-eval's own ``hf`` model reports for the same pack (one forward pass, the pack's last-position
  rule: only the final column is edited), to show how far that is from the steered model.

Reported per condition: accuracy (acc and acc_norm) with 95 % Wilson intervals, the paired change in accuracy
against strength 0 with a bootstrap interval, and the mean change in the log-probability of the right answer.

Packs: SmolLM2-135M-Instruct ``cheerful`` built exactly as the README says (``alignez build --base smollm2-135m
--axis cheerful``), at +1 and -0.5; Qwen2.5-Coder-0.5B-Instruct ``helpful`` (``alignez build --base
qwen2.5-coder-0.5b --axis helpful``) at +2, and the README's ``harmless`` pack (``eval_small_models.py``,
``outputs/issue6/qwen/harmless_persona``; skipped with a note if it has not been built) at +0.25 and +1, ungated.

    python benchmarks/capability_retention.py          # about 10 minutes on 2 cores (packs built once, cached)
    python benchmarks/capability_retention.py --only smollm2

Results: benchmarks/results/issue15/capability_retention/ (results.json, results.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from importlib import resources
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from common import log, readme_pack  # noqa: E402
from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from alignez_hf import AlignEZForCausalLM  # noqa: E402
from alignez_hf.embedded import embedded_model_path  # noqa: E402
from alignez_hf.evaluation.lmeval import AlignEZLM  # noqa: E402
from alignez_hf.evaluation.metrics import mean_summary, paired_delta_summary, rate_summary  # noqa: E402
from alignez_hf.evaluation.report import write_json_atomic  # noqa: E402
from alignez_hf.runtime.atomic import write_text_atomically  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "issue15" / "capability_retention"
TASK = "alignez_capability_mc"
# (label, base, axis, how the pack is made, strengths measured); strength 0 is always measured first.
PACKS = [
    ("smollm2 cheerful", "smollm2-135m", "cheerful", "build", [1.0, -0.5]),
    ("qwen helpful", "qwen2.5-coder-0.5b", "helpful", "build", [2.0]),
    ("qwen harmless", "qwen2.5-coder-0.5b", "harmless", ROOT / "outputs" / "issue6" / "qwen" / "harmless_persona",
     [0.25, 1.0]),
]  # fmt: skip


def task_folder(folder: Path) -> Path:
    """A local lm-eval task over the bundled capability set (``dataset_path: json``; nothing is downloaded)."""
    data = resources.files("alignez_hf.data") / "capability_mc.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    return folder


def pack_path(base: str, axis: str, how) -> Path | None:
    if how == "build":
        return readme_pack(base, axis)
    return Path(how) if (Path(how) / "config.json").is_file() else None


def run(lm, tasks: TaskManager) -> list[dict]:
    """Per question: right or not (acc, acc_norm) and the log-probability of the right answer."""
    out = simple_evaluate(model=lm, tasks=[TASK], task_manager=tasks, log_samples=True, verbosity="WARNING")
    rows = []
    for sample in sorted(out["samples"][TASK], key=lambda s: s["doc_id"]):
        gold = sample["doc"]["answer"]
        rows.append(
            {
                "acc": float(sample["acc"]),
                "acc_norm": float(sample["acc_norm"]),
                "gold_logprob": float(sample["filtered_resps"][gold][0]),
            }
        )
    return rows


def summarise(rows: list[dict], base: list[dict]) -> dict:
    return {
        "acc": rate_summary([r["acc"] for r in rows]),
        "acc_norm": rate_summary([r["acc_norm"] for r in rows]),
        "acc_delta": paired_delta_summary([r["acc"] for r in rows], [r["acc"] for r in base]),
        "gold_logprob": mean_summary([r["gold_logprob"] for r in rows]),
        "gold_logprob_delta": paired_delta_summary(
            [r["gold_logprob"] for r in rows], [r["gold_logprob"] for r in base]
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["smollm2", "qwen"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    tasks = TaskManager(include_path=str(task_folder(Path(tempfile.mkdtemp()) / "tasks")))
    results = {
        "task": TASK,
        "questions": sum(1 for _ in (resources.files("alignez_hf.data") / "capability_mc.jsonl").open()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        "packs": {},
        "skipped": [],
    }
    for label, base, axis, how, strengths in PACKS:
        if args.only and not label.startswith(args.only):
            continue
        path = pack_path(base, axis, how)
        if path is None:
            results["skipped"].append(f"{label}: {how} is not built (python benchmarks/eval_small_models.py)")
            log(results["skipped"][-1])
            continue
        began = time.perf_counter()
        model = AlignEZForCausalLM.from_pretrained(path, base_model_name_or_path=embedded_model_path(base)).eval()
        tokenizer = model.tokenizer
        names = list(model.axes)
        gates = {n: model.axes[n].gate for n in names}
        for name in names:  # ungated: the capability cost of the edit itself
            if gates[name]:
                model.set_gate(name, None)
        conditions = {}
        for strength in [0.0, *strengths]:
            for name in names:
                model.set_strength(name, strength if name == axis else 0.0)
            log(f"{label} at {strength:+g}")
            rows = run(AlignEZLM(pretrained=model, tokenizer=tokenizer, batch_size=8), tasks)
            conditions[f"{strength:+g} alignez"] = {"strength": strength, "scoring": "alignez", "rows": rows}
            if strength:
                rows = run(HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8), tasks)
                conditions[f"{strength:+g} hf"] = {"strength": strength, "scoring": "hf", "rows": rows}
        base_rows = conditions["+0 alignez"]["rows"]
        for condition in conditions.values():
            condition.update(summarise(condition["rows"], base_rows))
        results["packs"][label] = {
            "pack": str(path.relative_to(ROOT)),
            "axis": axis,
            "seconds": round(time.perf_counter() - began, 1),
            "conditions": conditions,
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / "results.json", results)
    write_text_atomically(RESULTS / "results.md", markdown(results))
    log((RESULTS / "results.md").read_text())


def _ci(s: dict, scale: float = 1.0, fmt: str = "{:+.1f}") -> str:
    return f"{fmt.format(s['value'] * scale)} [{fmt.format(s['low'] * scale)}, {fmt.format(s['high'] * scale)}]"


def markdown(results: dict) -> str:
    lines = [
        f"# Capability retention ({results['questions']} project-written multiple-choice questions, lm-eval)",
        "",
        f"Machine: {results['machine']}. Accuracy in %, 95 % intervals (Wilson; paired bootstrap for changes).",
        "",
        "| pack | strength | scoring | acc | acc_norm | acc change (points) | right answer's log-prob change |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for label, pack in results["packs"].items():
        for condition in pack["conditions"].values():
            lines.append(
                f"| {label} | {condition['strength']:+g} | {condition['scoring']} "
                f"| {_ci(condition['acc'], 100, '{:.1f}')} | {_ci(condition['acc_norm'], 100, '{:.1f}')} "
                f"| {_ci(condition['acc_delta'], 100)} | {_ci(condition['gold_logprob_delta'], 1, '{:+.3f}')} |"
            )
    lines += [f"- skipped: {s}" for s in results["skipped"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
