"""Runtime cost of steering on SmolLM2-135M-Instruct: tokens/s against the base model's own generate(), memory, sizes.

The base and four steered variants run interleaved in one process (the order rotates every repetition), greedy,
with a fixed number of new tokens (no early stop), at batch 1 and batch 8. The pack has one axis of rank 4 on 11
middle layers (the persona strategy's band); it steers with the additive rule (the default strategy's) and with the
paper's tanh rule, each under the static and the per-query layer policy. Each repetition gives a paired ratio
(variant / base of that repetition); the table reports the median ratio and its range over the repetitions.

    python benchmarks/bench_runtime.py [--new-tokens 128] [--reps 5] [--batches 1,8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import alignez_hf
from alignez_hf import AlignEZForCausalLM
from alignez_hf.chat import encode_chats

PROMPTS = [
    "Write a short poem about autumn leaves.",
    "How do I make a cup of green tea?",
    "Explain what a prime number is.",
    "Give me three tips for a job interview.",
    "What is the capital of Australia?",
    "Describe a sunrise over the ocean.",
    "How can I keep my houseplants alive?",
    "Summarise the plot of Romeo and Juliet.",
]
VARIANTS = {  # name: (rule, layer policy); None = the base model's own generate()
    "base": None,
    "additive, static": ("additive", "static"),
    "additive, per-query": ("additive", "per_query"),
    "tanh, static": ("tanh", "static"),
    "tanh, per-query": ("tanh", "per_query"),
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _make_pack(base, tokenizer, folder: Path) -> Path:
    """A one-axis pack of SmolLM2's size: rank-4 directions on 11 middle layers."""
    torch.manual_seed(0)
    model = AlignEZForCausalLM.from_base(base, tokenizer)
    hidden = base.config.hidden_size
    directions = {layer: torch.linalg.qr(torch.randn(hidden, 4))[0].T for layer in range(10, 21)}
    model.add_axis("bench", directions, rule="additive", strength=0.5)
    model.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--out", default="benchmarks/results/runtime.json")
    args = parser.parse_args()

    path = alignez_hf.default_base_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path).eval()
    with tempfile.TemporaryDirectory() as tmp:
        pack = _make_pack(base, tokenizer, Path(tmp) / "pack")
        pack_bytes = (pack / "steering.safetensors").stat().st_size
        start = time.perf_counter()
        model = AlignEZForCausalLM.from_pretrained(pack, base_model=base)
        load_s = time.perf_counter() - start

    def run(variant: str, batch: int) -> float:
        enc = encode_chats(tokenizer, (PROMPTS * 2)[:batch])
        gen = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False}
        setting = VARIANTS[variant]
        options = (
            contextlib.nullcontext()
            if setting is None
            else model.steering_options(rules={"bench": setting[0]}, layer_policy=setting[1])
        )
        generate = base.generate if setting is None else model.generate
        with options:
            start = time.perf_counter()
            out = generate(**enc, **gen, pad_token_id=tokenizer.pad_token_id)
            elapsed = time.perf_counter() - start
        return (out.shape[1] - enc["input_ids"].shape[1]) * batch / elapsed

    names = list(VARIANTS)
    results = {"batches": {}}
    for batch in [int(b) for b in args.batches.split(",")]:
        run("base", batch)  # warm-up
        speeds = {name: [] for name in names}
        for rep in range(args.reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                speeds[name].append(run(name, batch))
        ratios = {n: [s / b for s, b in zip(speeds[n], speeds["base"])] for n in names}
        summary = {
            n: {
                "tokens_per_s_median": statistics.median(speeds[n]),
                "ratio_median": statistics.median(ratios[n]),
                "ratio_min": min(ratios[n]),
                "ratio_max": max(ratios[n]),
            }
            for n in names
        }
        results["batches"][batch] = {"summary": summary, "tokens_per_s": speeds, "ratio_to_base": ratios}
        print(f"batch {batch}:")
        for n in names:
            s = summary[n]
            print(
                f"  {n:<20} {s['tokens_per_s_median']:6.1f} tok/s  ratio {s['ratio_median']:.1%} "
                f"[{s['ratio_min']:.1%}, {s['ratio_max']:.1%}]"
            )
    results.update(
        {
            "model": "SmolLM2-135M-Instruct (fp32, CPU)",
            "new_tokens": args.new_tokens,
            "reps": args.reps,
            "pack": {"axes": 1, "layers": 11, "rank": 4, "steering_safetensors_bytes": pack_bytes},
            "pack_load_s": load_s,
            "peak_rss_mb": _peak_rss_mb(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads",
        }
    )
    print(f"steering.safetensors: {pack_bytes / 1024:.1f} KiB; pack load onto a loaded base: {load_s:.2f} s")
    print(f"peak RSS {_peak_rss_mb():.0f} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
