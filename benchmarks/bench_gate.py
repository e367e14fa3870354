"""Cost of a self-judged harm gate at generation time, on Qwen2.5-Coder-0.5B-Instruct (2-core CPU).

The gate adds one forward pass over a judge prompt (the question plus the prompt's last user message) per
``generate`` call. This times greedy generation of the same batch with the harmless axis ungated and gated
(gate forced to fire on every row, so both runs do the same steering work), interleaved, several repetitions,
a fixed number of new tokens (no early stop).

    python benchmarks/eval_small_models.py --only qwen   # builds the Qwen harmless pack first (once)
    python benchmarks/bench_gate.py [--new-tokens 64] [--reps 3] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import common  # noqa: E402
import torch  # noqa: E402

from alignez_hf import AlignEZForCausalLM  # noqa: E402
from alignez_hf.builder.gate import judge_tokens  # noqa: E402
from alignez_hf.chat import encode_chats  # noqa: E402
from alignez_hf.evaluation import load_prompt_set  # noqa: E402
from alignez_hf.evaluation.report import write_json_atomic  # noqa: E402
from alignez_hf.runtime.gates import judge  # noqa: E402

PACK = Path("outputs/issue6/qwen/harmless_persona")
OUT = Path(__file__).resolve().parent / "results" / "gate_cost.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    if not (PACK / "steering.safetensors").is_file():
        sys.exit(f"{PACK} is missing: run `python benchmarks/eval_small_models.py --only qwen` first.")
    torch.set_num_threads(2)
    model, tok, _ = common.load_base("qwen2.5-coder-0.5b")
    pack = AlignEZForCausalLM.from_pretrained(PACK, base_model=model)
    prompts = load_prompt_set("ordinary", args.batch)
    enc = encode_chats(tok, prompts)  # left-padded chat prompts
    gate = {**judge_tokens(tok), "threshold": -1.0}  # fires on every row: the same steering work as ungated
    kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    times: dict[str, list[float]] = {"ungated": [], "gated": []}
    for rep in range(args.reps + 1):  # the first round warms up and is not counted
        for label in times:
            pack.set_gate("harmless", gate if label == "gated" else None)
            began = time.perf_counter()
            pack.generate(**enc, steering={"harmless": 2.0}, pad_token_id=tok.pad_token_id, **kwargs)
            if rep:
                times[label].append(time.perf_counter() - began)
    began = time.perf_counter()
    for _ in range(args.reps):
        judge(pack.base, gate, enc["input_ids"], enc["attention_mask"])
    judge_seconds = (time.perf_counter() - began) / args.reps
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": "Qwen2.5-Coder-0.5B-Instruct (float32)",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads 2",
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "reps": args.reps,
        "seconds": times,
        "median_seconds": median,
        "judge_pass_seconds": judge_seconds,
        "overhead": median["gated"] / median["ungated"] - 1.0,
    }
    write_json_atomic(OUT, result)
    print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=1))


if __name__ == "__main__":
    main()
