"""A pack's self-generated answer pairs as preference data: ``prompt`` / ``chosen`` / ``rejected`` rows.

Each record of ``self_generated.jsonl`` that holds answers (strategies that generate them: ``persona_answers``,
``paper``) becomes one row: the query as the prompt, the answer the model wrote for the axis's positive pole as
``chosen`` and the negative one as ``rejected``. With a chat tokenizer the rows are conversational (the prompt a
list with one user message, each answer a list with one assistant message), as TRL's preference trainers take
them; without one they are plain text, the prompt in the same ``User:/Assistant:`` format the build used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from ..chat import chat_prompt, has_chat_template
from ..runtime.atomic import write_text_atomically
from ..runtime.errors import PackFileError
from ..runtime.serialization import pack_file
from .generation import RecordStore
from .output import RECORDS_FILE
from .strategies import STRATEGIES

FORMATS = ("auto", "conversational", "standard")


def answer_strategies() -> list[str]:
    """The build strategies whose records hold answers (the others generate no text)."""
    return [name for name, strategy in STRATEGIES.items() if strategy.generation is not None]


def read_records(pack: str | os.PathLike, revision: str | None = None) -> list[dict]:
    """The self-generated records of a pack, by folder or Hub repo id (``revision``: a branch, tag or commit).

    A repo's ``self_generated.jsonl`` is downloaded into the Hub cache and checked against its ETag as every pack
    file is. A pack without records raises a FileNotFoundError saying which strategies write them.
    """
    missing = FileNotFoundError(
        f"{pack} has no {RECORDS_FILE}: its axes were built by a strategy that generates no answers (the "
        f"default, 'persona', reads prompts only). Rebuild it with --strategy {' or '.join(answer_strategies())}, "
        "which record the model's answer pairs."
    )
    if Path(pack).is_dir():
        path = Path(pack) / RECORDS_FILE
        if not path.is_file():
            raise missing
        return list(RecordStore(path).records.values())
    try:
        path = Path(pack_file(str(pack), RECORDS_FILE, revision, "", {"_raise_exceptions_for_missing_entries": False}))
    except PackFileError as err:
        raise missing from err
    return list(RecordStore(path, repair=False).records.values())  # never rewrite a file in the Hub cache


def preference_rows(records: Iterable[dict], tokenizer=None, form: str = "auto", axes=None) -> tuple[list[dict], int]:
    """Preference rows from records (``axes``: only those axes), and how many records were skipped.

    ``form`` is ``"conversational"``, ``"standard"`` or ``"auto"`` (conversational when ``tokenizer`` has a chat
    template). A record is skipped when it holds no answers, an empty one, or the same text on both sides (a pair
    that teaches nothing).
    """
    if form not in FORMATS:
        raise ValueError(f"form must be one of {', '.join(FORMATS)}, got {form!r}.")
    conversational = form == "conversational" or (form == "auto" and has_chat_template(tokenizer))
    rows, skipped = [], 0
    for record in records:
        if axes is not None and record.get("axis") not in axes:
            continue
        answers = record.get("answers") or {}
        chosen, rejected, query = answers.get("positive"), answers.get("negative"), record.get("query")
        if not (isinstance(query, str) and isinstance(chosen, str) and isinstance(rejected, str)):
            skipped += 1
            continue
        if not chosen.strip() or not rejected.strip() or chosen.strip() == rejected.strip():
            skipped += 1
            continue
        if conversational:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": query}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
        else:
            rows.append({"prompt": chat_prompt(tokenizer, query), "chosen": f" {chosen}", "rejected": f" {rejected}"})
    return rows, skipped


def write_jsonl(rows: list[dict], out: str | os.PathLike) -> Path:
    """Write ``rows`` as JSON lines to ``out`` atomically (a temporary file beside it, then moved into place)."""
    return write_text_atomically(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
