"""Loading user queries from .txt, .jsonl or .csv files, and keeping them within the model's context."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

JSON_FIELDS = ("query", "prompt")


def load_queries(path: str | Path, column: str | None = None, max_queries: int | None = None) -> list[str]:
    """Read queries: ``.txt`` one per line, ``.jsonl`` with a ``query``/``prompt`` field, ``.csv`` with a column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Query file {path} does not exist or is not a file.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"Cannot read query file {path} as UTF-8 text: {err}") from err
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        queries = _from_jsonl(text, path, column)
    elif suffix == ".csv":
        queries = _from_csv(text, path, column)
    else:
        queries = [line.strip() for line in text.splitlines()]
    queries = [q for q in (q.strip() for q in queries) if q]
    if not queries:
        raise ValueError(f"Query file {path} holds no queries (it is empty or every entry is blank).")
    return queries[:max_queries] if max_queries else queries


def _from_jsonl(text: str, path: Path, column: str | None) -> list[str]:
    fields = (column,) if column else JSON_FIELDS
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg}).") from err
        value = next((record[f] for f in fields if isinstance(record, dict) and f in record), None)
        if not isinstance(value, str):
            raise ValueError(f"{path}, line {number}: needs a string field {' or '.join(repr(f) for f in fields)}.")
        out.append(value)
    return out


def _from_csv(text: str, path: Path, column: str | None) -> list[str]:
    reader = csv.DictReader(text.splitlines())
    names = reader.fieldnames or []
    chosen = column or next((f for f in JSON_FIELDS if f in names), None)
    if chosen is None or chosen not in names:
        raise ValueError(f"{path}: no column {column or 'query/prompt'!r}; its columns are {names}. Name one.")
    return [row[chosen] or "" for row in reader]


def truncate_queries(queries: list[str], tokenizer, max_tokens: int) -> list[str]:
    """Cut queries longer than ``max_tokens`` tokens, warning how many were cut."""
    out, cut = [], 0
    for query in queries:
        ids = tokenizer(query, add_special_tokens=False)["input_ids"]
        if len(ids) > max_tokens:
            cut += 1
            query = tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)
        out.append(query)
    if cut:
        warnings.warn(
            f"{cut} of {len(queries)} queries were longer than {max_tokens} tokens and were truncated to fit the "
            "model's context.",
            stacklevel=2,
        )
    return out
