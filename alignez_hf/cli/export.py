"""``alignez export PACK --merged OUT``: fold a static additive pack into its base's weights (``merge_and_unload``).

The result is a plain transformers checkpoint (with the pack's tokenizer) that any engine serves with no steering
code; it edits every position, where the pack edits from the prompt's last token on (docs/serving.md).
"""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="Fold a static additive pack into its base model's weights.")
    p.add_argument("pack", help="Steering pack: a local folder or a Hub repo id.")
    p.add_argument("--merged", required=True, metavar="OUT", help="Folder for the merged transformers checkpoint.")
    p.add_argument(
        "--steering",
        default=None,
        metavar="JSON",
        help="Strengths to fold in, e.g. '{\"cheerful\": 1.5}' (default: the pack's default strengths).",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Merge and save (see ``alignez export --help``)."""
    from ..runtime import AlignEZForCausalLM

    try:
        steering = json.loads(args.steering) if args.steering else None
    except json.JSONDecodeError as err:
        raise ValueError(f"--steering must be a JSON object such as '{{\"cheerful\": 1.5}}': {err.msg}") from err
    model = AlignEZForCausalLM.from_pretrained(args.pack)
    tokenizer = model.tokenizer
    merged = model.merge_and_unload(steering)
    merged.save_pretrained(args.merged)
    if tokenizer is not None:
        tokenizer.save_pretrained(args.merged)
    print(f"Wrote the merged checkpoint to {args.merged}: load it with AutoModelForCausalLM.from_pretrained.")
    return 0
