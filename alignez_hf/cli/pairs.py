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
    p.add_argument("pack", help="Folder of a steering pack built with a strategy that generates answers.")
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


def pack_tokenizer(pack: Path):
    """The tokenizer a pack ships, or None when it has none."""
    if not (pack / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(pack)


def run(args: argparse.Namespace) -> int:
    """Export the pairs (see ``alignez pairs --help``)."""
    from ..builder.pairs import preference_rows, read_records, write_jsonl

    pack = Path(args.pack)
    if not (pack / "config.json").is_file():
        raise FileNotFoundError(f"{pack} is not a steering pack folder (it has no config.json).")
    records = read_records(pack)
    known = sorted({r.get("axis") for r in records if isinstance(r.get("axis"), str)})
    unknown = sorted(set(args.axis or []) - set(known))
    if unknown:
        raise ValueError(f"{pack} has no self-generated pairs for the axes {unknown}; it has pairs for {known}.")
    rows, skipped = preference_rows(records, pack_tokenizer(pack), args.format, args.axis)
    if not rows:
        raise ValueError(f"{pack} has no usable answer pairs (all {skipped} were empty or had the same text twice).")
    write_jsonl(rows, args.out)
    form = "conversational" if isinstance(rows[0]["prompt"], list) else "standard"
    dropped = f"; skipped {skipped} with an empty answer or the same text twice" if skipped else ""
    print(f"Wrote {len(rows)} {form} preference pairs to {args.out}{dropped}.")
    return 0
