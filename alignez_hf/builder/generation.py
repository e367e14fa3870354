"""Self-generated preference data: batched, seeded generation, recorded to JSONL as it is produced.

The record file is append-only and keyed by (query, axis, settings), so an interrupted build resumes where it
stopped and a finished one ships the file inside the pack for users to read.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..chat import chat_prompt, encode_texts, padding
from ..runtime.atomic import write_text_atomically
from . import prompts
from .axes import Axis

SIDES = ("positive", "negative")


@dataclass(frozen=True)
class SamplingSettings:
    """How the model samples its self-generated text (the paper does not give these)."""

    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0


@dataclass
class GenerationStats:
    """Counts for the build summary and the benchmark."""

    prompts: int = 0
    new_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def generate_texts(
    model,
    tokenizer,
    texts: list[str],
    max_new_tokens: int,
    sampling: SamplingSettings,
    batch_size: int = 8,
    seed: int = 0,
    stats: GenerationStats | None = None,
    steering: dict | None = None,
) -> list[str]:
    """Continue each prompt text (already formatted), batched with left padding; returns the new text only.

    ``steering`` (strengths per axis) is passed to an AlignEZForCausalLM's ``generate``.
    """
    out: list[str] = []
    with padding(tokenizer, "left"):
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            enc = {k: v.to(model.device) for k, v in encode_texts(tokenizer, batch).items()}
            torch.manual_seed(seed + start)
            extra = {"temperature": sampling.temperature, "top_p": sampling.top_p} if sampling.do_sample else {}
            began = time.perf_counter()
            with torch.no_grad():
                ids = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=sampling.do_sample,
                    pad_token_id=tokenizer.pad_token_id,
                    **extra,
                    **({"steering": steering} if steering is not None else {}),
                )
            new = ids[:, enc["input_ids"].shape[1] :].cpu()
            if stats is not None:
                stats.seconds += time.perf_counter() - began
                stats.prompts += len(batch)
                stats.new_tokens += _count_new_tokens(new, tokenizer)
            out.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return out


def _count_new_tokens(new: torch.Tensor, tokenizer) -> int:
    # Rows stop at their first end token; the rest is padding that cost nothing to the user.
    stops = {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
    total = 0
    for row in new.tolist():
        n = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        total += n
    return total


def record_key(**fields: Any) -> str:
    """A stable key for one record: the hash of the fields that decide its content."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:24]


class RecordStore:
    """An append-only JSONL file of self-generated records, read back on open so a rerun can skip them."""

    def __init__(self, path: str | Path | None, repair: bool = True):
        """``repair=False`` reads without rewriting a file that has unreadable lines (a copy in the Hub cache)."""
        self.path = Path(path) if path is not None else None
        self.repair = repair
        self.records: dict[str, dict] = {}
        if self.path is not None and self.path.is_file():
            self._load()

    def _load(self) -> None:
        bad = 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self.records[record["key"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                bad += 1  # a line cut short by an interrupted write; its query is generated again
        if bad:
            warnings.warn(f"{self.path}: dropped {bad} unreadable line(s) (an interrupted write?).", stacklevel=3)
            if not self.repair:
                return
            # Rewrite without them (atomically), so the file that ships in the pack is clean JSONL.
            write_text_atomically(
                self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records.values())
            )

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __getitem__(self, key: str) -> dict:
        return self.records[key]

    def append(self, records: Iterable[dict]) -> None:
        """Add records, writing each to disk (flushed and synced) before returning."""
        records = list(records)
        for record in records:
            self.records[record["key"]] = record
        if self.path is None or not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(fh.tell() - 1)
                if fh.read(1) != "\n":  # a previous run died mid-line: start a fresh line
                    fh.write("\n")
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())


def self_generate(
    job: str,
    model,
    tokenizer,
    axis: Axis,
    queries: list[str],
    store: RecordStore,
    sampling: SamplingSettings,
    answer_tokens: int,
    characteristics_tokens: int = 50,
    batch_size: int = 8,
    model_name: str = "",
    stats: GenerationStats | None = None,
    progress: bool = True,
) -> list[dict]:
    """Generate (or read back) one record per query with a positive and a negative answer.

    ``job="paper"`` runs the paper's two steps (characteristics, then answers conditioned on them);
    ``job="persona"`` answers the query under each side's persona system message.
    """
    if job not in ("paper", "persona"):
        raise ValueError(f"Unknown generation job {job!r}; known: paper, persona.")
    settings = {**asdict(sampling), "answer_tokens": answer_tokens, "job": job, "model": model_name}
    if job == "paper":
        settings["characteristics_tokens"] = characteristics_tokens
    keys = [
        record_key(query=q, axis=axis.name, positive=axis.positive, negative=axis.negative, settings=settings)
        for q in queries
    ]
    first = {k: i for i, k in reversed(list(enumerate(keys)))}  # duplicate queries are generated once
    unique = [i for i, k in enumerate(keys) if first[k] == i]
    # Each generate call holds both sides of a chunk of queries, so a chunk is half a batch. Chunks are cut from
    # all the queries, not from those still missing, so that a resumed build generates every chunk exactly as an
    # uninterrupted one would (same rows, same seed): the pack it ends with is the same.
    chunk = max(1, batch_size // 2)
    chunks = [unique[start : start + chunk] for start in range(0, len(unique), chunk)]
    chunks = [idx for idx in chunks if any(keys[i] not in store for i in idx)]
    bar = tqdm(total=sum(map(len, chunks)), desc=f"{axis.name}: self-generating", unit="query", disable=not progress)
    for idx in chunks:
        qs = [queries[i] for i in idx]
        seed = sampling.seed + int(keys[idx[0]][:6], 16)
        rows = [(q, side) for side in SIDES for q in qs]
        chars: dict[tuple[str, str], str] = {}
        if job == "paper":
            texts = [chat_prompt(tokenizer, prompts.characteristics_prompt(axis, s, q)) for q, s in rows]
            found = generate_texts(model, tokenizer, texts, characteristics_tokens, sampling, batch_size, seed, stats)
            chars = dict(zip(rows, found))
            texts = [chat_prompt(tokenizer, prompts.conditioned_prompt(axis, s, q, chars[(q, s)])) for q, s in rows]
        else:
            texts = [chat_prompt(tokenizer, q, system=prompts.persona_system(axis, s)) for q, s in rows]
        answers = dict(
            zip(rows, generate_texts(model, tokenizer, texts, answer_tokens, sampling, batch_size, seed + 1, stats))
        )
        store.append(
            {
                "key": keys[i],
                "query": q,
                "axis": axis.name,
                "positive": axis.positive,
                "negative": axis.negative,
                "characteristics": {s: chars[(q, s)] for s in SIDES} if chars else None,
                "answers": {s: answers[(q, s)] for s in SIDES},
                "settings": settings,
            }
            for i, q in zip(idx, qs)
            if keys[i] not in store  # a chunk cut short by a kill keeps the records it wrote
        )
        bar.update(len(idx))
    bar.close()
    return [store[k] for k in keys]
