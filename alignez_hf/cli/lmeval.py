"""``alignez lm-eval ...``: lm-evaluation-harness's own command line, with packs scored as generation steers.

Every option goes to ``lm-eval run`` unchanged; ``--model`` defaults to ``alignez``
(:mod:`alignez_hf.evaluation.lmeval`: multiple-choice and other log-likelihood scores edit each continuation as
generation would, where lm-eval's ``hf`` model edits only the final column). Example:

    alignez lm-eval --model_args pretrained=PACK,strength=1 --include_path TASKS --tasks my_task

Needs ``pip install "alignez-hf[lm-eval]"``.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return sub.add_parser(
        "lm-eval",
        help="Run lm-evaluation-harness on a pack (--model alignez; every option goes to `lm-eval run`).",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,  # --help is lm-eval's
    )


def run(args: argparse.Namespace, passthrough: list[str]) -> int:
    from ..evaluation.lmeval import cli  # registers the 'alignez' model

    cli(passthrough)
    return 0
