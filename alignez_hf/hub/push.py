"""Push a steering pack to the Hub: stage a copy, record a base others can fetch, add the tokenizer and a card.

Loading needs nothing from here: ``AlignEZForCausalLM.from_pretrained("org/pack")`` (or transformers' Auto classes
with ``trust_remote_code=True``) fetches the pack and its base.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, HfApi

from .. import AlignEZConfig
from .base import resolve_hub_base
from .card import write_model_card
from .config import PushConfig

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
_DEFAULTS = PushConfig()


def stage(model_or_folder: Any, staging: Path) -> None:
    """Copy a pack folder, or save a model, into ``staging`` without touching the user's files."""
    if isinstance(model_or_folder, (str, os.PathLike)):
        source = Path(model_or_folder)
        if not (source / "config.json").is_file():
            raise FileNotFoundError(f"{source} is not a steering pack folder (it has no config.json).")
        # Hidden files are caches, VCS data or leftovers of an interrupted atomic save: never part of a pack.
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(".*", "__pycache__", "*.pyc"))
    elif hasattr(model_or_folder, "save_pretrained") and hasattr(model_or_folder, "steering_state_dict"):
        model_or_folder.save_pretrained(staging)
    else:
        raise TypeError(f"Expected an AlignEZForCausalLM or a pack folder, got {type(model_or_folder).__name__}.")


def add_tokenizer(staging: Path, recorded_base: str | None) -> None:
    """Give the pack a tokenizer (pipeline() reads it from the pack repo), copied from a local base if needed."""
    if (staging / "tokenizer_config.json").is_file():
        return
    local = Path(recorded_base).expanduser() if recorded_base else None
    if local is not None and local.is_dir() and (local / "tokenizer_config.json").is_file():
        for name in TOKENIZER_FILES:
            if (local / name).is_file():
                shutil.copyfile(local / name, staging / name)
        return
    logger.warning(
        "The pack has no tokenizer files; pipeline('text-generation', model=repo) will need tokenizer=. "
        "Wrap the base with a tokenizer (AlignEZForCausalLM.from_base(base, tokenizer)) to include one."
    )


def push_pack(
    model_or_folder: Any,
    repo_id: str,
    *,
    base_model_id: str | None = _DEFAULTS.base_model_id,
    base_model_revision: str | None = _DEFAULTS.base_model_revision,
    private: bool | None = _DEFAULTS.private,
    token: str | bool | None = _DEFAULTS.token,
    revision: str | None = _DEFAULTS.revision,
    commit_message: str | None = _DEFAULTS.commit_message,
    create_pr: bool = _DEFAULTS.create_pr,
    endpoint: str | None = _DEFAULTS.endpoint,
) -> CommitInfo:
    """Upload a steering pack (an AlignEZForCausalLM or a pack folder) with a model card to a Hub repo.

    The options and their defaults are those of :class:`~alignez_hf.hub.config.PushConfig`
    (``push_pack(pack, repo, **asdict(push_config))``).
    """
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="alignez-push-") as tmp:
        staging = Path(tmp) / "pack"
        stage(model_or_folder, staging)
        config_path = staging / "config.json"
        config = json.loads(config_path.read_text("utf-8"))
        if config.get("model_type") != AlignEZConfig.model_type:
            raise ValueError(
                f"{model_or_folder} is not an AlignEZ steering pack (model_type {config.get('model_type')!r})."
            )
        recorded = config.get("base_model_name_or_path")
        base = resolve_hub_base(config, base_model_id, base_model_revision, api)
        config["base_model_name_or_path"], config["base_model_revision"] = base.repo_id, base.revision
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", "utf-8")
        add_tokenizer(staging, recorded)
        write_model_card(
            config,
            staging,
            base.repo_id,
            base_model_revision=base.revision,
            repo_id=repo_id,
            license=base.license,
        )
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and not create_pr:
            api.create_branch(repo.repo_id, branch=revision, exist_ok=True)
        axes = ", ".join(a["name"] for a in config.get("axes") or [])
        return api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=staging,
            revision=revision,
            commit_message=commit_message or f"Upload AlignEZ steering pack ({axes}) for {base.repo_id}",
            create_pr=create_pr,
        )
