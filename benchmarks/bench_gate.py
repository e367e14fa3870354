"""Cost of a harm gate at generation time, on Qwen2.5-Coder-0.5B-Instruct (2-core CPU): none, prefill, self_judge.

A self-judged gate adds one forward pass over a judge prompt (the question plus the prompt's last user message)
per ``generate`` call. A prefill gate reads one layer's state in the unedited pass over the prompt that
``generate`` then reuses as its prefill, so it should cost about one recomputed token (target: at most 2 % of the
call). This times greedy generation of the same batch with the harmless axis ungated, prefill-gated and
self-judge-gated (each gate forced to fire on every row, so all three do the same steering work), interleaved in
a rotating order, several repetitions after a warm-up round, a fixed number of new tokens (no early stop). It
also counts the base model's passes over the whole prompt in each condition, and splits each timed call by forward
pass (``PassTimer``), so the gate's own extra work can be read apart from round-to-round noise (``gate_cost``).

    python benchmarks/eval_small_models.py --only qwen   # builds the Qwen harmless pack first (once; or
                                                         # qwen_prefill_gate.py, which builds the same pack)
    python benchmarks/bench_gate.py [--new-tokens 64] [--reps 5] [--batch 8]   # about 7 minutes on 2 cores
    python benchmarks/bench_gate.py --tiny               # a smoke run on a tiny random model (seconds)
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
FITTED = Path(__file__).resolve().parent / "results" / "issue15" / "qwen_prefill_gate" / "results.json"
OUT = Path(__file__).resolve().parent / "results" / "gate_cost.json"
CONDITIONS = ("ungated", "prefill", "self_judge")
TARGET = 0.02  # the prefill gate's cost, as a share of the ungated call


def load(tiny: bool):
    if tiny:
        from qwen_prefill_gate import tiny_pack

        pack, tok, _, _ = tiny_pack()
        return pack, tok, "tiny random Llama (smoke run, not a measurement)"
    if not (PACK / "steering.safetensors").is_file():
        sys.exit(f"{PACK} is missing: run `python benchmarks/eval_small_models.py --only qwen` first.")
    model, tok, _ = common.load_base("qwen2.5-coder-0.5b")
    return AlignEZForCausalLM.from_pretrained(PACK, base_model=model), tok, "Qwen2.5-Coder-0.5B-Instruct (float32)"


def gates(pack, tok) -> dict:
    """Both gates, forced to fire on every row. The prefill gate reads the layer qwen_prefill_gate.py chose when its
    results exist (the middle layer otherwise; in generate the read costs the same at any layer)."""
    layers = pack.config.base_fingerprint["num_hidden_layers"]
    layer, pooling = layers // 2, "last"
    if FITTED.is_file():
        fitted = json.loads(FITTED.read_text())["gates"]["prefill"]
        if fitted.get("layer") is not None and fitted["layer"] < layers:
            layer, pooling = fitted["layer"], fitted["pooling"]
    hidden = pack.config.base_fingerprint["hidden_size"]
    direction = torch.randn(hidden, generator=torch.Generator().manual_seed(0))
    prefill = {
        "kind": "prefill", "layer": layer, "pooling": pooling, "comparison": ">", "threshold": -2.0,  # cos > -2: always
        "direction": direction / direction.norm(), "mean": torch.zeros(hidden),
    }  # fmt: skip
    return {"ungated": None, "prefill": prefill, "self_judge": {**judge_tokens(tok), "threshold": -1.0}}


def prompt_passes(pack, enc, kwargs, steering) -> int:
    """How many times the base runs over the whole prompt in one generate call."""
    width, passes = enc["input_ids"].shape[1], []

    def count(module, args, kw):
        ids = kw.get("input_ids")
        passes.append(ids is not None and ids.shape[1] == width)

    handle = pack.base.register_forward_pre_hook(count, with_kwargs=True)
    try:
        pack.generate(**enc, steering=steering, **kwargs)
    finally:
        handle.remove()
    return sum(passes)


class PassTimer:
    """Times every forward pass of the base model: ``(input width, seconds)`` per pass, for the current call."""

    def __init__(self, model):
        self.passes: list[tuple[int, float]] = []
        self._began = 0.0
        self._handles = [
            model.register_forward_pre_hook(self._start, with_kwargs=True),
            model.register_forward_hook(self._stop, with_kwargs=True),
        ]

    def _start(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        self._width = ids.shape[1] if ids is not None else kwargs["inputs_embeds"].shape[1]
        self._began = time.perf_counter()

    def _stop(self, module, args, kwargs, output):
        self.passes.append((self._width, time.perf_counter() - self._began))

    def take(self) -> list[tuple[int, float]]:
        out, self.passes = self.passes, []
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def decompose(wall: float, passes: list[tuple[int, float]], width: int) -> dict:
    """One call's time split into passes over the whole prompt, single-token passes, other passes (the judge's) and
    what runs outside the base's forward (generate's loop, gate scoring, cache crop)."""
    prompt = [t for w, t in passes if w == width]
    steps = [t for w, t in passes if w == 1]
    other = [t for w, t in passes if w not in (width, 1)]
    return {
        "wall": wall,
        "prompt_passes": sum(prompt),
        "n_prompt_passes": len(prompt),
        "single_token_passes": len(steps),
        "step_median": statistics.median(steps) if steps else 0.0,
        "other_passes": sum(other),
        "outside": wall - sum(t for _, t in passes),
    }


def gate_cost(gated: dict, ungated: dict) -> float:
    """The prefill gate's extra work in one round, as a share of that round's ungated call: its pass over the prompt
    against the ungated one, the extra single-token pass(es) at the ungated step time, and the time outside the
    model. The decoding steps are the same computation in both (same plan, gate open on every row) and are left
    out, so this round's noise in 63 steps does not swamp a one-pass difference; their medians are reported."""
    extra_steps = gated["single_token_passes"] - ungated["single_token_passes"]
    extra = (
        gated["prompt_passes"] - ungated["prompt_passes"]
        + extra_steps * ungated["step_median"]
        + gated["other_passes"] - ungated["other_passes"]
        + gated["outside"] - ungated["outside"]
    )  # fmt: skip
    return extra / ungated["wall"]


def spread(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "iqr": q[2] - q[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="Smoke run on a tiny random model (not a measurement).")
    parser.add_argument(
        "--out", default=None, help=f"Result file (default {OUT}; --tiny: outputs/gate_cost_tiny.json)."
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else (Path("outputs/gate_cost_tiny.json") if args.tiny else OUT)
    pack, tok, model_name = load(args.tiny)
    prompts = load_prompt_set("ordinary", args.batch)
    enc = encode_chats(tok, prompts)  # left-padded chat prompts
    chosen = gates(pack, tok)
    kwargs = dict(
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        do_sample=False,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    steering = {"harmless": 2.0}
    times: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    parts: dict[str, list[dict]] = {c: [] for c in CONDITIONS}
    timer = PassTimer(pack.base)
    for rep in range(args.reps + 1):  # the first round warms up and is not counted
        order = CONDITIONS[rep % 3 :] + CONDITIONS[: rep % 3]  # rotated: no condition always runs first
        for label in order:
            pack.set_gate("harmless", chosen[label])
            timer.take()
            began = time.perf_counter()
            pack.generate(**enc, steering=steering, **kwargs)
            wall = time.perf_counter() - began
            if rep:
                times[label].append(wall)
                parts[label].append(decompose(wall, timer.take(), enc["input_ids"].shape[1]))
        common.log(
            f"round {rep}{' (warm-up)' if not rep else ''}: "
            + ", ".join(f"{c} {times[c][-1]:.2f} s" for c in CONDITIONS if times[c])
        )
    timer.remove()
    passes = {}
    for label in CONDITIONS:
        pack.set_gate("harmless", chosen[label])
        passes[label] = prompt_passes(pack, enc, {**kwargs, "max_new_tokens": 2, "min_new_tokens": 2}, steering)
    pack.set_gate("harmless", None)
    began = time.perf_counter()
    for _ in range(args.reps):
        judge(pack.base, chosen["self_judge"], enc["input_ids"], enc["attention_mask"])
    judge_seconds = (time.perf_counter() - began) / args.reps
    stats = {c: spread(v) for c, v in times.items()}
    ungated = stats["ungated"]["median"]
    rounds = {  # per round, against the ungated call of the same round
        c: [t / u - 1.0 for t, u in zip(times[c], times["ungated"])] for c in CONDITIONS[1:]
    }
    paired = {c: statistics.median(v) for c, v in rounds.items()}
    # The target is decided only when every round agrees; otherwise the machine's noise is larger than the target.
    verdict = True if max(rounds["prefill"]) <= TARGET else False if min(rounds["prefill"]) > TARGET else None
    by_parts = [gate_cost(g, u) for g, u in zip(parts["prefill"], parts["ungated"])]
    parts_verdict = True if max(by_parts) <= TARGET else False if min(by_parts) > TARGET else None
    step_medians = {c: statistics.median(p["step_median"] for p in parts[c]) for c in CONDITIONS}
    result = {
        "model": model_name,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}",
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "reps": args.reps,
        "prefill_gate": {k: chosen["prefill"][k] for k in ("layer", "pooling")},
        "seconds": times,
        "stats_seconds": stats,
        "median_seconds": {c: s["median"] for c, s in stats.items()},
        "overhead": {c: stats[c]["median"] / ungated - 1.0 for c in CONDITIONS[1:]},
        "overhead_paired_median": paired,
        "overhead_per_round": rounds,
        "prompt_passes_per_call": passes,
        "judge_pass_seconds": judge_seconds,
        "passes_per_round": parts,
        "decode_step_median_seconds": step_medians,
        "prefill_cost_by_passes_per_round": by_parts,
        "prefill_cost_by_passes_median": statistics.median(by_parts),
        "target": f"prefill overhead <= {TARGET:.0%} of the ungated call",
        "target_met": verdict,  # from whole-call wall time; None: not resolved (the rounds disagree)
        "target_met_by_passes": parts_verdict,  # from the per-pass split (decoding steps left out, reported above)
    }
    write_json_atomic(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=1))


if __name__ == "__main__":
    main()
