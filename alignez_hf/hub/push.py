"""Push a steering pack to the Hub: stage a copy, record a base others can fetch, add the tokenizer and a card.

Loading needs nothing from here: ``AlignEZForCausalLM.from_pretrained("org/pack")`` (or transformers' Auto classes
with ``trust_remote_code=True``) fetches the pack and its base.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, HfApi

from .. import AlignEZConfig
from ..runtime.constants import CONFIG_FILE
from ..runtime.errors import PackError, pack_error
from ..runtime.files import KINDS, check_pack_file, inside_pack
from .base import resolve_hub_adapter, resolve_hub_base
from .card import write_model_card
from .config import PushConfig

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
# Hidden files are caches, VCS data or leftovers of an interrupted atomic save: never part of a pack.
NOT_UPLOADED = (".*", "__pycache__", "*.pyc")
_DEFAULTS = PushConfig()


def stage(model_or_folder: Any, staging: Path) -> None:
    """Copy a pack folder, or save a model, into ``staging`` without touching the user's files."""
    if isinstance(model_or_folder, (str, os.PathLike)):
        source = Path(model_or_folder)
        if not (source / "config.json").is_file():
            raise FileNotFoundError(f"{source} is not a steering pack folder (it has no config.json).")
        check_tree(source)
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(*NOT_UPLOADED))
    elif hasattr(model_or_folder, "save_pretrained") and hasattr(model_or_folder, "steering_state_dict"):
        model_or_folder.save_pretrained(staging)
    else:
        raise TypeError(f"Expected an AlignEZForCausalLM or a pack folder, got {type(model_or_folder).__name__}.")


def check_tree(source: Path) -> None:
    """Refuse to upload a folder holding what is not its own: a link out of it (the copy would upload the target,
    say ``~/.ssh/id_rsa``), a linked folder (which may loop), a named pipe or a device. Links to files inside the
    folder are fine."""
    root = os.path.realpath(source)
    for folder, subfolders, files in os.walk(source):
        subfolders[:] = [d for d in subfolders if not _not_uploaded(d)]
        for name in (*subfolders, *(f for f in files if not _not_uploaded(f))):
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            if os.path.islink(path) and os.path.isdir(path):
                problem = f"a link to the folder {real}"
            elif not inside_pack(real, root):  # inside the folder (or, for a Hub-cache snapshot, its repo's blobs)
                problem = f"a link to {real}, outside the pack folder"
            elif not (os.path.isdir(path) or os.path.isfile(path)):
                problem = (
                    KINDS.get(stat.S_IFMT(os.stat(real).st_mode), "special")
                    if os.path.exists(real)
                    else "a broken link"
                )
            else:
                continue
            raise ValueError(
                f"{path} is {problem}: pushing would upload what is not part of the pack. Replace it with a copy of "
                "the file, or remove it, then push again."
            )


def _not_uploaded(name: str) -> bool:
    return any(fnmatch(name, pattern) for pattern in NOT_UPLOADED)


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


def read_config(path: Path, source: str) -> dict[str, Any]:
    """The staged ``config.json``, refused unless it is a valid AlignEZ config: the card is rendered from it."""
    check_pack_file(str(path), CONFIG_FILE, source, path.parent)
    try:
        config = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise pack_error(CONFIG_FILE, source, "it is not valid JSON (or not UTF-8)") from err
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != AlignEZConfig.model_type:
        raise ValueError(f"{source} is not an AlignEZ steering pack (model_type {model_type!r}).")
    try:
        AlignEZConfig.from_dict(dict(config))
    except PackError as err:
        raise pack_error(CONFIG_FILE, source, getattr(err, "problem", str(err))) from err
    return config


def push_pack(
    model_or_folder: Any,
    repo_id: str,
    *,
    base_model_id: str | None = _DEFAULTS.base_model_id,
    base_model_revision: str | None = _DEFAULTS.base_model_revision,
    base_adapter_id: str | None = _DEFAULTS.base_adapter_id,
    base_adapter_revision: str | None = _DEFAULTS.base_adapter_revision,
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
        config_path = staging / CONFIG_FILE
        source = str(model_or_folder) if isinstance(model_or_folder, (str, os.PathLike)) else "being pushed"
        config = read_config(config_path, source)
        recorded = config.get("base_model_name_or_path")
        base = resolve_hub_base(config, base_model_id, base_model_revision, api)
        config["base_model_name_or_path"], config["base_model_revision"] = base.repo_id, base.revision
        adapter = resolve_hub_adapter(config, base_adapter_id, base_adapter_revision, api)
        if adapter is not None:  # the base's PEFT adapter, recorded the same way
            config["base_adapter_name_or_path"], config["base_adapter_revision"] = adapter.repo_id, adapter.revision
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
