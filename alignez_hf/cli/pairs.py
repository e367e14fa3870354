"""``alignez pairs PACK --out pairs.jsonl``: a pack's self-generated answer pairs as preference data.

The file has one ``prompt`` / ``chosen`` / ``rejected`` record a line (``alignez_hf.builder.pairs``), so that
``datasets.load_dataset("json", data_files=...)`` reads it and TRL's ``DPOTrainer`` trains on it as it is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..builder.pairs import FORMATS


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("pairs", help="Write a pack's self-generated answer pairs as prompt/chosen/rejected JSONL.")
    p.add_argument(
        "pack",
        help="Folder or Hub repo id of a steering pack built with a strategy that generates answers (a pushed pack "
        "carries its self_generated.jsonl).",
    )
    p.add_argument("--revision", default=None, help="Branch, tag or commit of a Hub pack (default: main).")
    p.add_argument("--out", required=True, help="The JSONL file to write (replaced if it exists).")
    p.add_argument(
        "--axis", action="append", default=None, help="Only this axis's pairs (repeat for several; default: all)."
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="conversational (lists of chat messages), standard (plain text), or auto: conversational when the "
        "pack's tokenizer has a chat template.",
    )
    return p


def pack_tokenizer(pack: str, revision: str | None = None):
    """The tokenizer a pack ships (folder or Hub repo), or None when it has none."""
    from transformers import AutoTokenizer

    if Path(pack).is_dir():
        return AutoTokenizer.from_pretrained(pack) if (Path(pack) / "tokenizer_config.json").is_file() else None
    from ..runtime.errors import PackFileError
    from ..runtime.serialization import pack_file

    try:
        pack_file(pack, "tokenizer_config.json", revision, "", {"_raise_exceptions_for_missing_entries": False})
    except PackFileError:
        return None
    return AutoTokenizer.from_pretrained(pack, revision=revision)


def run(args: argparse.Namespace) -> int:
    """Export the pairs (see ``alignez pairs --help``)."""
    from ..builder.pairs import preference_rows, read_records, write_jsonl
    from ..runtime.serialization import pack_file

    pack = args.pack
    if Path(pack).is_dir() and not (Path(pack) / "config.json").is_file():
        raise FileNotFoundError(f"{pack} is not a steering pack folder (it has no config.json).")
    if not Path(pack).is_dir():
        pack_file(pack, "config.json", args.revision, "", {})  # a clear error for a repo that is not a pack
    records = read_records(pack, args.revision)
    known = sorted({r.get("axis") for r in records if isinstance(r.get("axis"), str)})
    unknown = sorted(set(args.axis or []) - set(known))
    if unknown:
        raise ValueError(f"{pack} has no self-generated pairs for the axes {unknown}; it has pairs for {known}.")
    rows, skipped = preference_rows(records, pack_tokenizer(pack, args.revision), args.format, args.axis)
    if not rows:
        raise ValueError(f"{pack} has no usable answer pairs (all {skipped} were empty or had the same text twice).")
    write_jsonl(rows, args.out)
    form = "conversational" if isinstance(rows[0]["prompt"], list) else "standard"
    dropped = f"; skipped {skipped} with an empty answer or the same text twice" if skipped else ""
    print(f"Wrote {len(rows)} {form} preference pairs to {args.out}{dropped}.")
    return 0
