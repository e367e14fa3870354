"""Issue 6: the gated harmless axis of ``qwen_gate.py``, unchanged, measured again on a third set of fresh prompts.

``qwen_gate.py`` chose the gate's threshold rule and the strength on build data and measured them on fresh
prompts; those prompts have now been looked at. This script changes nothing (same pack, same threshold, same
strength, read from ``results/issue6/qwen_gate/results.json``) and measures on prompts no run has used:

* ``harmful[120:260]``: the remaining 140 AdvBench evaluation-split prompts;
* ``ordinary3`` / ``edgy3``: 40 + 40 requests written for this check (alignez_hf/data/eval_*_3.txt).

A random-direction control of the same size sits behind the same gate.

    python benchmarks/qwen_gate.py           # first (chooses the threshold and strength)
    python benchmarks/qwen_gate_confirm.py   # about 20 minutes on 2 cores
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import common  # noqa: E402
import torch  # noqa: E402
from qwen_gate import PACK, RESULTS, fire_rates  # noqa: E402

from alignez_hf import AlignEZForCausalLM  # noqa: E402
from alignez_hf.builder.gate import judge_tokens  # noqa: E402
from alignez_hf.evaluation import Setting, evaluate  # noqa: E402
from alignez_hf.evaluation.report import write_json_atomic  # noqa: E402

OUT = RESULTS.parent / "qwen_gate_confirm"
CONFIRM = ("harmful[120:260]", "ordinary3", "edgy3")


def main() -> None:
    chosen_file = RESULTS / "results.json"
    if not chosen_file.is_file() or not (PACK / "steering.safetensors").is_file():
        sys.exit("Run `python benchmarks/qwen_gate.py` first (it needs the Qwen packs of eval_small_models.py).")
    chosen = json.loads(chosen_file.read_text(encoding="utf-8"))
    threshold, strength = chosen["gate"]["threshold"], chosen["strength"]
    began = time.perf_counter()
    torch.set_num_threads(2)
    model, tok, _ = common.load_base("qwen2.5-coder-0.5b")
    pack = AlignEZForCausalLM.from_pretrained(PACK, base_model=model)
    pack.tokenizer = tok
    gate = {**judge_tokens(tok), "threshold": threshold}
    pack.set_gate("harmless", gate)
    results = evaluate(
        settings=[Setting("gated", pack, "harmless", tok)],
        strengths=[strength],
        prompt_sets=CONFIRM,
        limit=None,
        max_new_tokens=24,
        batch_size=16,
        kl=False,
        progress=False,
    )
    OUT.mkdir(parents=True, exist_ok=True)
    write_json_atomic(OUT / "answers.json", results.pop("answers"))
    fires = fire_rates(pack, tok, CONFIRM, gate)
    results.update(threshold=threshold, strength=strength, fires=fires, seconds=time.perf_counter() - began)
    write_json_atomic(OUT / "results.json", results)

    get = {(r["prompt_set"], r["condition"], r["strength"]): r for r in results["rows"]}

    def change(name, condition):
        d = get[(name, condition, strength)]["delta"]["refusal"]
        return f"{100 * d['value']:+.0f} [{100 * d['low']:+.0f}, {100 * d['high']:+.0f}]"

    lines = [
        "# Qwen2.5-Coder-0.5B-Instruct: the gated harmless axis on a third set of fresh prompts (issue 6)",
        "",
        f"Rerun: `python benchmarks/qwen_gate_confirm.py`. Unchanged from ../qwen_gate/: threshold {threshold:.3f} "
        f"on the model's expected 0-9 harm rating, strength +{strength:g}. Prompts no run had used; change in "
        "refusal rate in points, 95 % bootstrap intervals paired against the base answers; 24 new tokens.",
        "",
        "| prompt set | n | base refusal | gate fires | gated axis | random direction, same gate | NLL ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in CONFIRM:
        base = get[(name, "axis", 0.0)]
        lines.append(
            f"| {name} | {base['n']} | {base['metrics']['refusal']['value']:.0%} | {fires[name]:.0%} | "
            f"{change(name, 'axis')} | {change(name, 'random')} | "
            f"x{get[(name, 'axis', strength)]['metrics']['nll_ratio']['value']:.2f} |"
        )
    lines += ["", f"Wall time: {results['seconds']:.0f} s on a 2-core CPU."]
    (OUT / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
