"""Pack files on disk: atomic saving, the runtime files a pack ships as remote code, and safe reading of tensors.

A pack is ``config.json`` + ``steering.safetensors`` (+ tokenizer, generation config, runtime code, and for a bundle
the base model in ``base/``); docs/pack-format.md describes every field. Nothing here unpickles anything.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.dynamic_module_utils import get_relative_import_files

from .constants import BUNDLED_BASE_FOLDER, STEERING_FILE, STEERING_METADATA

RUNTIME_DIR = Path(__file__).resolve().parent
# Callables (config) -> local folder or None, consulted before the recorded base id; the alignez_hf package
# registers one that maps embedded models' Hub ids to their converted local copies (works offline).
BASE_RESOLVERS: list = []
# The entry points that a pack's auto_map names; the files they import are found the way transformers finds them.
ENTRY_FILES = ("configuration_alignez.py", "modeling_alignez.py")


def runtime_files() -> list[str]:
    """File names of the runtime a pack ships as remote code: the entry points and every file they import.

    Derived with transformers' own relative-import discovery, so the pack holds exactly what its loader will ask for.
    """
    names = set(ENTRY_FILES)
    for entry in ENTRY_FILES:
        names.update(Path(f).name for f in get_relative_import_files(RUNTIME_DIR / entry))
    return sorted(names)


def write_runtime(folder: Path) -> None:
    """Copy the runtime files into a pack folder."""
    for name in runtime_files():
        shutil.copyfile(RUNTIME_DIR / name, folder / name)


def write_steering(tensors: dict[str, torch.Tensor], folder: Path) -> None:
    """Write ``steering.safetensors`` (with the permissions of an ordinary file; safetensors makes it private)."""
    path = folder / STEERING_FILE
    save_file(tensors, str(path), metadata=dict(STEERING_METADATA))
    path.chmod(0o666 & ~_umask())


def read_steering(path: str, source: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``steering.safetensors``, or a ValueError saying the file is corrupt and what to do."""
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"{STEERING_FILE} of the steering pack {source} cannot be read ({err}); it is truncated or corrupt. "
            "Re-download the pack (force_download=True) or rebuild it."
        ) from err


def pack_file(source: str, filename: str, revision, subfolder: str, hub: dict) -> str:
    """Local path of one file of a pack given by folder or Hub repo id (downloaded into the Hub cache if needed)."""
    local = Path(source, subfolder, filename)
    if Path(source).is_dir():
        if not local.is_file():
            raise FileNotFoundError(f"{Path(source, subfolder)} has no {filename}; it is not a complete steering pack.")
        return str(local)
    from transformers.utils import cached_file

    path = cached_file(source, filename, revision=revision, subfolder=subfolder, **hub)
    if path is None:
        raise FileNotFoundError(f"The steering pack {source} has no {filename}.")
    return path


def save_atomically(target: Path, write) -> None:
    """Call ``write(staging_folder)``, then move the folder into place: a crash leaves the old pack or the new one."""
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a folder.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a saved pack is an ordinary folder
    try:
        write(staging)
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(staging: Path, target: Path) -> None:
    """Move a fully written folder into place; a crash leaves the old pack or the new one, never half of each."""
    if not target.exists():
        os.replace(staging, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(old, target)
        raise
    # Keep files in the old folder that the pack does not own (e.g. a user's notes); drop the rest.
    for item in old.iterdir():
        if not (target / item.name).exists():
            os.replace(item, target / item.name)
    shutil.rmtree(old, ignore_errors=True)


def write_pack(model, folder: Path, include_base: bool = False, **kwargs) -> None:
    """Write every file of ``model``'s pack into ``folder`` (kwargs go to the base's save_pretrained in a bundle)."""
    config = model.config
    config.architectures = [type(model).__name__]
    config.auto_map = {
        "AutoConfig": "configuration_alignez.AlignEZConfig",
        "AutoModelForCausalLM": "modeling_alignez.AlignEZForCausalLM",
    }
    config.bundled_base = BUNDLED_BASE_FOLDER if include_base else None
    config.save_pretrained(folder)
    write_steering(model.steering_state_dict(), folder)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(folder)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(folder)
    write_runtime(folder)
    if include_base:
        model.base.save_pretrained(folder / BUNDLED_BASE_FOLDER, **kwargs)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(folder / BUNDLED_BASE_FOLDER)


def load_base(source, config, revision, subfolder, name_or_path, base_revision, *args, **kwargs):
    """The base model a pack names: bundled in it, resolved locally (``BASE_RESOLVERS``) or by recorded id."""
    bundled = getattr(config, "bundled_base", None)
    if bundled:
        where, pinned = source, {"revision": revision, "subfolder": f"{subfolder}/{bundled}".strip("/")}
    else:
        resolved = None if name_or_path else next(filter(None, (r(config) for r in BASE_RESOLVERS)), None)
        where = name_or_path or resolved or config.base_model_name_or_path
        if not where:
            raise ValueError(f"The pack {source} does not name its base model; pass base_model_name_or_path=.")
        pinned = {"revision": base_revision or config.base_model_revision}
        if (name_or_path and not base_revision) or resolved:
            pinned = {}
    pinned = {k: v for k, v in pinned.items() if v}
    try:
        return AutoModelForCausalLM.from_pretrained(where, *args, **pinned, **kwargs)
    except OSError as err:
        raise OSError(
            f"Could not load the base model {where!r} (revision {pinned.get('revision')}) named by the steering "
            f"pack {source}: {err}\nIf the base lives elsewhere, pass base_model_name_or_path=."
        ) from err


def load_tokenizer(source: str, revision, subfolder: str, hub: dict, base_config):
    """The pack's own tokenizer, or None when it ships none.

    The base's config tells AutoTokenizer the model type: the pack's own config would send it to remote code.
    """
    if Path(source).is_dir() and not Path(source, subfolder, "tokenizer_config.json").is_file():
        return None
    try:
        return AutoTokenizer.from_pretrained(source, config=base_config, revision=revision, subfolder=subfolder, **hub)
    except (OSError, ValueError):
        return None
