"""vLLM steered vs unsteered tokens/s on SmolLM2-135M-Instruct, next to the transformers runtime on the same prompts.

Runs in the vLLM environment (``make bench-vllm``). One pack: the default ``cheerful`` persona pack (additive, layers
15-20), built once from the bundled queries. The transformers runtime is timed first (base model vs the pack),
then one vLLM engine serves the pack and runs the same prompts with steering off and on, interleaved; each
repetition gives a paired ratio, reported as median [min, max]. Greedy, a fixed number of new tokens (no early stop).

    .venv-vllm/bin/python benchmarks/bench_vllm.py [--new-tokens 128] [--reps 5] [--batches 1,8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")

import common  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

import alignez_hf  # noqa: E402
from alignez_hf import AlignEZForCausalLM  # noqa: E402
from alignez_hf.builder import AlignEZBuilder, load_queries  # noqa: E402
from alignez_hf.chat import chat_prompt, encode  # noqa: E402
from alignez_hf.cli.build import bundled_queries  # noqa: E402

PROMPTS = common.SPEED_PROMPTS


def _summary(speeds: dict[str, list[float]], base: str) -> dict:
    ratios = {n: [s / b for s, b in zip(v, speeds[base])] for n, v in speeds.items()}
    return {
        n: {
            "tokens_per_s_median": statistics.median(speeds[n]),
            "ratio_median": statistics.median(ratios[n]),
            "ratio_min": min(ratios[n]),
            "ratio_max": max(ratios[n]),
            "tokens_per_s": speeds[n],
        }
        for n in speeds
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--out", default="benchmarks/results/vllm.json")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    path = alignez_hf.default_base_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    pack_dir = Path(tempfile.mkdtemp(prefix="bench-vllm-")) / "cheerful"
    builder = AlignEZBuilder(base, tokenizer, axes=["cheerful"], verbose=False, progress=False)
    builder.build(load_queries(bundled_queries()), output_dir=pack_dir)
    model = AlignEZForCausalLM.from_pretrained(pack_dir, base_model=base)
    ids = [encode(tokenizer, chat_prompt(tokenizer, p)) for p in PROMPTS]
    n = args.new_tokens
    results: dict = {"transformers": {}, "vllm": {}}

    # transformers: base generate vs the pack's generate, one prompt row per batch row (left-padded)
    from alignez_hf.chat import encode_chats

    for batch in batches:
        enc = encode_chats(tokenizer, (PROMPTS * 2)[:batch])
        gen = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
        speeds: dict[str, list[float]] = {"base": [], "pack": []}
        base.generate(**enc, **gen)  # warm-up
        for _ in range(args.reps):
            for name, fn in (("base", base.generate), ("pack", model.generate)):
                start = time.perf_counter()
                fn(**enc, **gen)
                speeds[name].append(n * batch / (time.perf_counter() - start))
        results["transformers"][batch] = _summary(speeds, "base")
    del model, base

    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from alignez_hf.vllm import steered_llm, steering

    start = time.perf_counter()
    llm = steered_llm(pack_dir, dtype="float32", max_model_len=512, seed=0)
    results["vllm_engine_start_s"] = time.perf_counter() - start
    for batch in batches:
        prompts = [TokensPrompt(prompt_token_ids=x) for x in (ids * 2)[:batch]]
        params = {
            name: SamplingParams(max_tokens=n, min_tokens=n, temperature=0.0, extra_args=steering(value))
            for name, value in (("off", "off"), ("steered", None))
        }
        llm.generate(prompts, params["off"], use_tqdm=False)  # warm-up
        speeds = {"off": [], "steered": []}
        for rep in range(args.reps):
            for name in ("off", "steered") if rep % 2 == 0 else ("steered", "off"):
                start = time.perf_counter()
                outs = llm.generate(prompts, params[name], use_tqdm=False)
                tokens = sum(len(o.outputs[0].token_ids) for o in outs)
                speeds[name].append(tokens / (time.perf_counter() - start))
        results["vllm"][batch] = _summary(speeds, "off")

    for batch in batches:
        t, v = results["transformers"][batch], results["vllm"][batch]
        print(
            f"batch {batch}: vLLM off {v['off']['tokens_per_s_median']:.1f} tok/s, steered "
            f"{v['steered']['tokens_per_s_median']:.1f} ({v['steered']['ratio_median']:.1%} "
            f"[{v['steered']['ratio_min']:.1%}, {v['steered']['ratio_max']:.1%}]); transformers base "
            f"{t['base']['tokens_per_s_median']:.1f}, pack {t['pack']['tokens_per_s_median']:.1f} "
            f"({t['pack']['ratio_median']:.1%} [{t['pack']['ratio_min']:.1%}, {t['pack']['ratio_max']:.1%}])"
        )
    import vllm

    results.update(
        {
            "model": "SmolLM2-135M-Instruct (fp32, CPU)",
            "pack": "cheerful, persona strategy (additive, layers 15-20)",
            "new_tokens": n,
            "reps": args.reps,
            "versions": {"vllm": vllm.__version__, "torch": torch.__version__},
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        }
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
