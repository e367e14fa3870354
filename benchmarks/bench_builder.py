"""Benchmark the builder on the embedded SmolLM2: time per stage, batched vs one-at-a-time generation, pack size.

python benchmarks/bench_builder.py                 # 64 queries, the paper's recipe (the heaviest generation)
python benchmarks/bench_builder.py --queries 4 --max-new-tokens 8 --characteristics-tokens 4   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from importlib import resources
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

import alignez_hf  # noqa: E402
from alignez_hf.builder import AlignEZBuilder, load_queries  # noqa: E402
from alignez_hf.builder.generation import GenerationStats, SamplingSettings, generate_texts  # noqa: E402
from alignez_hf.chat import chat_prompt  # noqa: E402


def main() -> None:
    """Run the benchmark and print (and optionally write) its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=64, help="Number of build queries.")
    parser.add_argument("--strategy", default="paper", help="Build strategy (paper, persona_answers, persona).")
    parser.add_argument("--batch-size", type=int, default=16, help="Prompts per generation batch.")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="Answer tokens (strategy default if unset).")
    parser.add_argument("--characteristics-tokens", type=int, default=None, help="Step-A tokens (paper).")
    parser.add_argument("--single", type=int, default=4, help="Prompts generated one at a time for the comparison.")
    parser.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    path = alignez_hf.default_base_model()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    data = resources.files("alignez_hf") / "data" / "build_queries.txt"
    queries = (load_queries(Path(str(data))) * 4)[: args.queries]
    builder = AlignEZBuilder(
        model,
        tok,
        axes=["harmless"],
        strategy=args.strategy,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        characteristics_tokens=args.characteristics_tokens,
    )
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        began = time.perf_counter()
        builder.build(queries, output_dir=Path(tmp) / "pack")
        total = time.perf_counter() - began
        sizes = {f.name: f.stat().st_size for f in (Path(tmp) / "pack").iterdir()}
    report = builder.reports[0]

    # Same prompts, same length, fixed token count: the builder's batch size vs one query at a time
    # (tokens/s; the single-query run takes the first --single prompts to keep it short).
    tokens = builder.strategy.answer_tokens or 16
    texts = [chat_prompt(tok, q) for q in queries[: args.batch_size]]
    greedy = SamplingSettings(do_sample=False)
    batched, single = GenerationStats(), GenerationStats()
    generate_texts(model, tok, texts, tokens, greedy, batch_size=args.batch_size, stats=batched)
    generate_texts(model, tok, texts[: max(args.single, 1)], tokens, greedy, batch_size=1, stats=single)

    figures = {
        "queries": len(queries),
        "strategy": builder.strategy.name,
        "seconds_total": round(total, 2),
        "seconds_per_stage": {k: round(v, 2) for k, v in report.seconds.items()},
        "build_generation": report.generation,
        "tokens_per_second_batched": round(batched.tokens_per_second, 2),
        "tokens_per_second_single": round(single.tokens_per_second, 2),
        "batching_speedup": round(batched.tokens_per_second / max(single.tokens_per_second, 1e-9), 2),
        "comparison_prompts": {"batched": len(texts), "single": min(len(texts), max(args.single, 1))},
        "pack_bytes": sum(sizes.values()),
        "steering_bytes": sizes.get("steering.safetensors", 0),
        "self_generated_bytes": sizes.get("self_generated.jsonl", 0),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
