"""Runtime cost of steering on SmolLM2-135M-Instruct: tokens/s against the base model's own generate(), memory, sizes.

The base and four steered variants run interleaved in one process (the order rotates every repetition), greedy,
with a fixed number of new tokens (no early stop), at batch 1 and batch 8. The pack has one axis of rank 4 on 11
middle layers (the persona strategy's band); it steers with the additive rule (the default strategy's) and with the
paper's tanh rule, each under the static and the per-query layer policy. Each repetition gives a paired ratio
(variant / base of that repetition); the table reports the median ratio and its range over the repetitions, in
wall-clock tokens/s and in tokens per CPU-second of this process (``time.process_time``, all threads), which is
less sensitive to other load on a shared machine.

A second measurement isolates the per-token work of the hooks: one decoding step of the base model (KV cache
of the prompt, one new token per row), alternately with and without the plan's hooks in place, repeated
``--step-trials`` times; the minimum of each is the least disturbed time, and their difference is what the hooks
add to a generated token.

A third, the least sensitive to a busy machine, times the hooks alone: the pre-hook and every layer's edit hook
called on one token's hidden states per row, as in a decoding step, in blocks of many calls (the minimum block),
to give the hooks' work per generated token next to the base model's decoding step.

    python benchmarks/bench_runtime.py [--new-tokens 64] [--reps 7] [--batches 1,8] [--step-trials 40]
    python benchmarks/bench_runtime.py --parts hooks --out benchmarks/results/runtime_hooks.json
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

import common
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import alignez_hf
from alignez_hf import AlignEZForCausalLM
from alignez_hf.chat import encode_chats

PROMPTS = common.SPEED_PROMPTS
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


def _step_cost(model, tokenizer, batch: int, trials: int) -> dict:
    """Minimum time of one decoding step without and with each variant's hooks (EditHooks + build_plan)."""
    from alignez_hf.runtime.hooks import EditHooks
    from alignez_hf.runtime.plan import build_plan, per_query_masks, resolve_strengths

    enc = encode_chats(tokenizer, (PROMPTS * 2)[:batch])
    base = model.base
    with torch.no_grad():
        out = base(**enc, use_cache=True)
        cache = out.past_key_values
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([enc["attention_mask"], torch.ones_like(token)], 1)
        strengths = resolve_strengths(None, {"bench": 0.5}, batch)
        hooks = {}
        for name, setting in VARIANTS.items():
            if setting is None:
                continue
            axes = [model._registry.edit("bench", setting[0])]
            masks = None
            if setting[1] == "per_query":
                queries = model.query_embeddings(enc["input_ids"], enc["attention_mask"], layers=axes[0].layers)
                masks = per_query_masks(axes, queries, model.config.top_n)
            plan = build_plan(axes, strengths, batch, masks=masks)
            hooks[name] = EditHooks(base, model._decoder_layers, "residual", plan)
        times = {name: [] for name in VARIANTS}
        for _ in range(trials):
            for name in VARIANTS:
                context = hooks.get(name) or contextlib.nullcontext()
                with context:
                    start = time.perf_counter()
                    base(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True)
                    times[name].append(time.perf_counter() - start)
                cache.crop(-1)  # back to the prompt alone
    best = {name: min(v) for name, v in times.items()}
    return {name: {"min_ms": 1000 * best[name], "added_ms": 1000 * (best[name] - best["base"])} for name in VARIANTS}


def _hook_work(model, batch: int, calls: int = 200, blocks: int = 20) -> dict:
    """Microseconds of hook work per generated token: the pre-hook plus each planned layer's edit hook."""
    from alignez_hf.runtime.hooks import EditHooks
    from alignez_hf.runtime.plan import build_plan, resolve_strengths

    hidden = model.base.config.hidden_size
    token = torch.zeros(batch, 1, dtype=torch.long)
    mask = torch.ones(batch, 40, dtype=torch.long)
    out = {}
    for name, setting in VARIANTS.items():
        if setting is None:
            continue
        # the per-query policy's plan has the static plan's shape (masked rows): time it as the static one
        axes = [model._registry.edit("bench", setting[0])]
        plan = build_plan(axes, resolve_strengths(None, {"bench": 0.5}, batch), batch)
        hooks = EditHooks(model.base, model._decoder_layers, "residual", plan)
        edit_hooks = [hooks._edit_hook(layer) for layer in plan.layers]
        states = torch.randn(batch, 1, hidden)
        best = float("inf")
        with torch.no_grad():
            for _ in range(blocks):
                start = time.perf_counter()
                for _ in range(calls):
                    hooks._find_positions(None, (), {"input_ids": token, "attention_mask": mask})
                    for hook in edit_hooks:
                        hook(None, (), states)
                best = min(best, (time.perf_counter() - start) / calls)
        out[name] = {"us_per_token": 1e6 * best, "layers": len(edit_hooks)}
    return out


def _summary(speeds: dict[str, list[float]]) -> dict:
    """Median speed and the paired ratio to the base (median, min, max over repetitions) of each variant."""
    out = {}
    for name, values in speeds.items():
        ratios = [v / b for v, b in zip(values, speeds["base"])]
        out[name] = {
            "median": statistics.median(values),
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--step-trials", type=int, default=40)
    parser.add_argument("--parts", default="throughput,step,hooks", help="Which measurements to run.")
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

    def run(variant: str, batch: int) -> tuple[float, float]:
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
            start, cpu = time.perf_counter(), time.process_time()
            out = generate(**enc, **gen, pad_token_id=tokenizer.pad_token_id)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        tokens = (out.shape[1] - enc["input_ids"].shape[1]) * batch
        return tokens / elapsed, tokens / cpu

    names = list(VARIANTS)
    parts = set(args.parts.split(","))
    results = {"batches": {}}
    for batch in [int(b) for b in args.batches.split(",")] if "throughput" in parts else []:
        run("base", batch)  # warm-up
        speeds = {name: [] for name in names}
        cpu_speeds = {name: [] for name in names}
        for rep in range(args.reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                wall, cpu = run(name, batch)
                speeds[name].append(wall)
                cpu_speeds[name].append(cpu)
        summary = {"wall": _summary(speeds), "cpu": _summary(cpu_speeds)}
        results["batches"][batch] = {"summary": summary, "tokens_per_s": speeds, "tokens_per_cpu_s": cpu_speeds}
        print(f"batch {batch}:                 wall-clock                          per CPU-second")
        for n in names:
            w, c = summary["wall"][n], summary["cpu"][n]
            print(
                f"  {n:<20} {w['median']:6.1f} tok/s {w['ratio_median']:7.1%} [{w['ratio_min']:.1%}, "
                f"{w['ratio_max']:.1%}]   {c['median']:6.1f} {c['ratio_median']:7.1%} [{c['ratio_min']:.1%}, "
                f"{c['ratio_max']:.1%}]"
            )
    results["decode_step"] = {}
    for batch in [int(b) for b in args.batches.split(",")] if "step" in parts else []:
        cost = results["decode_step"][batch] = _step_cost(model, tokenizer, batch, args.step_trials)
        cells = ", ".join(
            f"{n} {c['added_ms']:+.2f} ms ({c['added_ms'] / cost['base']['min_ms']:+.1%})"
            for n, c in cost.items()
            if n != "base"
        )
        print(f"decode step, batch {batch}: base {cost['base']['min_ms']:.1f} ms (min of {args.step_trials}); {cells}")
    results["hook_work"] = {}
    for batch in [int(b) for b in args.batches.split(",")] if "hooks" in parts else []:
        work = results["hook_work"][batch] = _hook_work(model, batch)
        cells = ", ".join(f"{n} {w['us_per_token']:.0f} us" for n, w in work.items())
        print(f"hook work per generated token, batch {batch} (11 layers): {cells}")
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
