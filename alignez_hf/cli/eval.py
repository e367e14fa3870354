"""``alignez eval PACK --out DIR``: measure a steering pack against its base model (options: ``EvalConfig``)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from ..evaluation.config import EvalConfig
from .options import add_config_arguments, config_from_args


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``alignez eval`` arguments to ``parser``: the pack, ``--out``, ``--axis``, ``--attach`` and every
    field of :class:`EvalConfig`."""
    parser.add_argument("pack", help="Steering pack: a local folder or a Hub repo id.")
    parser.add_argument("--out", required=True, help="Output folder for results.json, results.md and plots.")
    parser.add_argument("--axis", default=None, help="Axis to evaluate (needed when the pack has several).")
    parser.add_argument(
        "--attach", action="store_true", help="Also store the summary in the pack's config.json (local packs only)."
    )
    add_config_arguments(parser, EvalConfig)
    return parser


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return add_eval_arguments(
        sub.add_parser("eval", help="Measure a pack against its base model at several strengths.")
    )


def run(args: argparse.Namespace) -> int:
    """Run ``alignez eval`` from parsed arguments; returns the exit code."""
    from transformers import AutoTokenizer

    from .. import AlignEZForCausalLM
    from ..evaluation import attach_evaluation, evaluate

    if args.attach and not Path(args.pack).is_dir():
        raise ValueError("--attach needs a local pack folder.")
    config = config_from_args(EvalConfig, args)
    model = AlignEZForCausalLM.from_pretrained(args.pack)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.pack)
    except (OSError, ValueError):  # a pack saved without a tokenizer: use its base model's
        tokenizer = AutoTokenizer.from_pretrained(model.config.base_model_name_or_path)
    results = evaluate(model, tokenizer, args.axis, **asdict(config), out_dir=args.out)
    if args.attach:
        attach_evaluation(args.pack, results)
    print(Path(args.out, "results.md").read_text(encoding="utf-8"))
    return 0
