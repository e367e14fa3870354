"""Runtime cost of steering on SmolLM2-135M-Instruct: tokens/s, peak memory, pack size, load time.

Runs the base model, the static layer policy and the per-query policy interleaved in one process, several
repetitions each, greedy, with a fixed number of new tokens (no early stop), at batch 1 and batch 8.

    python benchmarks/bench_runtime.py [--new-tokens 128] [--reps 3] [--out benchmarks/results/runtime.json]
"""

from __future__ import annotations

import argparse
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


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _make_pack(base, tokenizer, folder: Path) -> Path:
    """A one-axis pack of SmolLM2's size: rank-4 directions on 11 middle layers (the persona strategy's band)."""
    torch.manual_seed(0)
    model = AlignEZForCausalLM.from_base(base, tokenizer)
    hidden = base.config.hidden_size
    directions = {layer: torch.linalg.qr(torch.randn(hidden, 4))[0].T for layer in range(10, 21)}
    model.add_axis("bench", directions, rule="tanh", strength=0.5)
    model.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--out", default="benchmarks/results/runtime.json")
    args = parser.parse_args()

    path = alignez_hf.default_base_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    base = AutoModelForCausalLM.from_pretrained(path).eval()
    with tempfile.TemporaryDirectory() as tmp:
        pack = _make_pack(base, tokenizer, Path(tmp) / "pack")
        pack_bytes = (pack / "steering.safetensors").stat().st_size
        start = time.perf_counter()
        static = AlignEZForCausalLM.from_pretrained(pack)
        load_s = time.perf_counter() - start
    static.config.layer_policy = "static"
    per_query = AlignEZForCausalLM(static.config.__class__.from_dict(static.config.to_dict()), base=static.base)
    per_query.config.layer_policy = "per_query"
    for name in static.axes:
        tensors = static.axis_tensors(name)
        axis = static.axes[name]
        per_query.add_axis(name, tensors["directions"], rule=axis.rule, strength=axis.strength, replace=True)

    def run(model, batch: int) -> float:
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in (PROMPTS * 2)[:batch]
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True)
        gen = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False}
        start = time.perf_counter()
        out = model.generate(**enc, **gen, pad_token_id=tokenizer.pad_token_id)
        elapsed = time.perf_counter() - start
        return (out.shape[1] - enc["input_ids"].shape[1]) * batch / elapsed

    variants = {"base": static.base, "static": static, "per_query": per_query}
    results = {"batches": {}}
    for batch in [int(b) for b in args.batches.split(",")]:
        run(static.base, batch)  # warm-up
        speeds = {name: [] for name in variants}
        for _ in range(args.reps):
            for name, model in variants.items():
                speeds[name].append(run(model, batch))
        median = {name: statistics.median(v) for name, v in speeds.items()}
        results["batches"][batch] = {
            "tokens_per_s": median,
            "all_runs": speeds,
            "relative_to_base": {name: median[name] / median["base"] for name in variants},
        }
        cells = [f"{n} {median[n]:.1f} tok/s ({median[n] / median['base']:.1%})" for n in variants]
        print(f"batch {batch}: " + ", ".join(cells))
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
    print(f"steering.safetensors: {pack_bytes / 1024:.1f} KiB; pack load: {load_s:.2f} s")
    print(f"peak RSS {_peak_rss_mb():.0f} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
