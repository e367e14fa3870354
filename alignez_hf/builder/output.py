"""The output folder of a build: refuse to mix two packs, and the file that makes a build resumable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

RECORDS_FILE = "self_generated.jsonl"


class PackExistsError(FileExistsError):
    """The output folder holds a different pack (or another model) and overwriting was not asked for."""


def check_output_dir(folder: Path, identity: dict, overwrite: bool) -> None:
    """Refuse a folder that holds a different pack or another model, unless ``overwrite``."""
    config = folder / "config.json"
    if not config.is_file():
        return
    try:
        existing = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        existing = {}
    same = (
        existing.get("model_type") == "alignez"
        and existing.get("base_model_name_or_path") == identity["base_model_name_or_path"]
        and existing.get("base_adapter_fingerprint") == identity.get("base_adapter_fingerprint")
        and [[a.get("name"), a.get("positive"), a.get("negative"), a.get("strategy")] for a in existing.get("axes", [])]
        == identity["axes"]
    )
    if same:
        return
    if not overwrite:
        what = (
            "a different steering pack"
            if existing.get("model_type") == "alignez"
            else "something that is not this pack"
        )
        raise PackExistsError(
            f"{folder} already holds {what} (base {existing.get('base_model_name_or_path')!r}, axes "
            f"{[a.get('name') for a in existing.get('axes', [])]}). Choose another folder or pass overwrite=True "
            "(--overwrite) to replace it."
        )
    # Another pack's self-generated records would ship with this one: drop them.
    (folder / RECORDS_FILE).unlink(missing_ok=True)
    if existing.get("model_type") != "alignez":
        shutil.rmtree(folder)
