"""The ``alignez`` command: ``build`` makes a steering pack, ``demo`` shows one at work, ``eval`` measures one,
``push`` shares one on the Hub.

One module per subcommand, each with ``add_parser(subparsers)`` and ``run(args) -> exit code``, listed in
``COMMANDS``. Options shared with the library are generated from its option dataclasses (:mod:`.options`).
"""

from __future__ import annotations

import argparse
import os
import sys

from . import build, demo, push
from . import eval as eval_command

COMMANDS = {"build": build, "demo": demo, "eval": eval_command, "push": push}
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
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except USER_ERRORS as err:
        print(f"alignez {args.command}: error: {err}", file=sys.stderr)
        return 2


__all__ = ["COMMANDS", "build_parser", "main"]
