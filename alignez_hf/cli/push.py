"""``alignez push PACK REPO_ID``: upload a pack folder with a generated model card (options: ``hub.PushConfig``)."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from ..hub.config import PushConfig
from .options import add_config_arguments, config_from_args


def add_push_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The push options (every field of :class:`PushConfig`), also used by ``alignez build --push-to-hub``."""
    add_config_arguments(parser, PushConfig)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("push", help="Upload a pack with a generated model card to the Hub.")
    p.add_argument("pack", help="Folder of the steering pack to upload.")
    p.add_argument("repo_id", help="Hub repo to push to, e.g. your-name/smollm2-cheerful.")
    add_push_options(p)
    return p


def push_from_args(pack: str, repo_id: str, args: argparse.Namespace) -> int:
    """Push ``pack`` to ``repo_id`` with the push options in ``args``; prints where it went."""
    from ..hub import push_pack

    info = push_pack(pack, repo_id, **asdict(config_from_args(PushConfig, args)))
    print(f"Pushed {pack} to {info.pr_url or info.commit_url}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Push a pack folder (see ``alignez push --help``)."""
    return push_from_args(args.pack, args.repo_id, args)
