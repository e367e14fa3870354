"""The ``alignez`` command: ``build`` makes a steering pack, ``demo`` shows one at work, ``eval`` measures one,
``push`` shares one on the Hub, ``export`` folds one into its base's weights, ``serve`` serves one with vLLM,
``pairs`` writes one's self-generated answer pairs as preference data (for TRL's DPOTrainer), ``lm-eval`` runs
lm-evaluation-harness on one.

One module per subcommand, each with ``add_parser(subparsers)`` and ``run(args) -> exit code``, listed in
``COMMANDS``. Options shared with the library are generated from its option dataclasses (:mod:`.options`).
"""

from __future__ import annotations

import argparse
import os
import sys

from . import build, demo, export, lmeval, pairs, push, serve
from . import eval as eval_command

COMMANDS = {
    "build": build,
    "demo": demo,
    "eval": eval_command,
    "push": push,
    "export": export,
    "serve": serve,
    "pairs": pairs,
    "lm-eval": lmeval,
}
# Commands that hand the options they do not know to another program's command line.
PASSTHROUGH = {"serve", "lm-eval"}
# Errors that are the user's to fix: printed as one line, exit code 2 (anything else is a bug: traceback).
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, ModuleNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``alignez`` command."""
    parser = argparse.ArgumentParser(prog="alignez", description="Label-free self-alignment (AlignEZ) steering packs.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``alignez`` console script."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared CPUs: busy-waiting threads collapse throughput
    # `serve` hands the options it does not know to `vllm serve`, `lm-eval` all of them to `lm-eval run`; every
    # other command knows all of its own.
    args, passthrough = build_parser().parse_known_args(argv)
    if passthrough and args.command not in PASSTHROUGH:
        build_parser().parse_args(argv)  # exits with argparse's own message about the unknown options
    try:
        if args.command in PASSTHROUGH:
            return COMMANDS[args.command].run(args, passthrough)
        return COMMANDS[args.command].run(args)
    except Exception as err:
        from ..runtime.errors import AlignEZError  # a base model that cannot be loaded is an OSError of ours

        if not isinstance(err, (*USER_ERRORS, AlignEZError)):
            raise
        print(f"alignez {args.command}: error: {err}", file=sys.stderr)
        return 2


__all__ = ["COMMANDS", "build_parser", "main"]
