"""``alignez eval``: measure a steering pack against its base model (the lead wires it into ``alignez_hf/cli.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .harness import DEFAULT_STRENGTHS
from .prompts import PROMPT_SETS


def _strengths(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--strengths takes comma-separated numbers, got {text!r}.") from err


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``alignez eval`` options to ``parser``."""
    parser.add_argument("pack", help="Steering pack: a local folder or a Hub repo id.")
    parser.add_argument(
        "--prompts",
        default="neutral",
        help=f"Comma-separated prompt sets ({', '.join(PROMPT_SETS)}) or paths to text files, one prompt a line.",
    )
    parser.add_argument("--axis", default=None, help="Axis to evaluate (needed when the pack has several).")
    parser.add_argument(
        "--strengths",
        type=_strengths,
        default=list(DEFAULT_STRENGTHS),
        help="Comma-separated strengths; 0 (the base model) is always included. Default: 0,0.5,1,2,4.",
    )
    parser.add_argument("--limit", type=int, default=20, help="Prompts per set (default 20).")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="Greedy tokens per answer (default 48).")
    parser.add_argument("--batch-size", type=int, default=8, help="Rows per generate call (default 8).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random control and the bootstrap.")
    parser.add_argument("--out", required=True, help="Output folder for results.json, results.md and plots.")
    parser.add_argument(
        "--random-control",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also run a random-direction axis of the same size (default: on).",
    )
    parser.add_argument("--no-kl", dest="kl", action="store_false", help="Skip the next-token KL on neutral text.")
    parser.add_argument(
        "--attach", action="store_true", help="Also store the summary in the pack's config.json (local packs only)."
    )
    return parser


def eval_command(args: argparse.Namespace) -> int:
    """Run ``alignez eval`` from parsed arguments; returns the exit code."""
    from transformers import AutoTokenizer

    from ..modeling_alignez import AlignEZForCausalLM
    from .harness import evaluate
    from .report import attach_evaluation

    model = AlignEZForCausalLM.from_pretrained(args.pack)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.pack)
    except (OSError, ValueError):  # a pack saved without a tokenizer: use its base model's
        tokenizer = AutoTokenizer.from_pretrained(model.config.base_model_name_or_path)
    results = evaluate(
        model,
        tokenizer,
        args.axis,
        strengths=args.strengths,
        prompt_sets=[p.strip() for p in args.prompts.split(",") if p.strip()],
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        batch_size=args.batch_size,
        random_control=args.random_control,
        kl=args.kl,
        out_dir=args.out,
    )
    if args.attach:
        if not Path(args.pack).is_dir():
            raise SystemExit("--attach needs a local pack folder.")
        attach_evaluation(args.pack, results)
    print(Path(args.out, "results.md").read_text(encoding="utf-8"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m alignez_hf.evaluation.cli``)."""
    parser = add_eval_arguments(argparse.ArgumentParser(prog="alignez eval", description=eval_command.__doc__))
    return eval_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
