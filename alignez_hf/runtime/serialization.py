"""Pack files on disk: atomic saving, the runtime files a pack ships as remote code, and safe reading of tensors.

A pack is ``config.json`` + ``steering.safetensors`` (+ tokenizer, generation config, runtime code, and for a bundle
the base model in ``base/``); docs/pack-format.md describes every field. Nothing here unpickles anything.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.dynamic_module_utils import get_relative_import_files

from .adapters import adapter_location, check_bundle, load_adapter
from .atomic import umask
from .constants import BUNDLED_BASE_FOLDER, CONFIG_FILE, HUB_KWARGS, STEERING_FILE, STEERING_METADATA
from .downloads import download_errors, verify_cached
from .errors import BaseModelError, PackError, PackFileError, pack_error
from .files import TOKENIZER_FILES, check_bundled_base, check_pack_file, check_present

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
    # safetensors refuses tensors that share memory (two axes given the same scales, say): write each its own copy.
    seen: set[int] = set()
    owned = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        owned[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    save_file(owned, str(path), metadata=dict(STEERING_METADATA))
    path.chmod(0o666 & ~umask())


# Bytes per element of the safetensors dtypes a steering file may hold; a header must fit the file's size.
SAFETENSORS_DTYPES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


def read_steering(path: str, source: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``steering.safetensors``, or a PackError saying the file is corrupt and what to do.

    The header is checked against the file's size before safetensors reads it, so that a corrupt or hostile
    header can make nothing allocate (or map) more than the file holds; the file itself must be a regular file
    of at most ``files.MAX_STEERING_BYTES``.
    """
    check_pack_file(path, STEERING_FILE, source)
    try:
        problem = safetensors_header_problem(path)
    except OSError as err:
        problem = str(err)
    if problem is None:
        try:
            return load_file(path)
        except BaseException as err:  # safetensors' Rust panics derive from BaseException
            if not isinstance(err, Exception) and type(err).__name__ != "PanicException":
                raise
            problem = f"{type(err).__name__}: {err}"
    raise PackError(
        f"{STEERING_FILE} of the steering pack {source} cannot be read ({problem}); it is truncated or corrupt. "
        "Re-download the pack (force_download=True) or rebuild it."
    )


def safetensors_header_problem(path: str) -> str | None:
    """What is wrong with the header of the safetensors file ``path`` given its size, or None.

    The header is an 8-byte little-endian length and that many bytes of JSON: ``{name: {"dtype", "shape",
    "data_offsets": [begin, end]}, "__metadata__": {str: str}}``, offsets into the data after it. Checked here:
    the length fits the file, the JSON parses, every dtype is known, every shape's size in bytes equals its span,
    and the spans tile the data exactly.
    """
    size = os.path.getsize(path)
    if size < 8:
        return f"the file has {size} bytes, too few for a safetensors header"
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > min(size - 8, MAX_HEADER_BYTES):
            return f"its header declares {length} bytes of JSON but the file holds {size - 8} after the length"
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "its header is not JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    data, spans = size - 8 - length, []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                return "its __metadata__ is not a map of strings"
            continue
        if not isinstance(info, dict):
            return f"the header entry of tensor {name!r} is not an object"
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
            return f"tensor {name!r} has an unknown dtype {dtype!r}"
        if not isinstance(shape, list) or not all(_count(d) for d in shape):
            return f"tensor {name!r} has a malformed shape {shape!r}"
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_count(o) for o in offsets)):
            return f"tensor {name!r} has malformed data_offsets {offsets!r}"
        begin, end = offsets
        if not begin <= end <= data:
            return f"tensor {name!r} has data_offsets {offsets} outside the {data} bytes of data the file holds"
        if math.prod(shape) * SAFETENSORS_DTYPES[dtype] != end - begin:
            return f"tensor {name!r} of shape {shape} ({dtype}) does not fill its {end - begin} bytes"
        spans.append((begin, end))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            return "its tensors' data overlap or leave gaps"
        position = end
    if position != data:
        return f"the file holds {data - position} bytes after its last tensor"
    return None


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def pack_file(source: str, filename: str, revision, subfolder: str, hub: dict) -> str:
    """Local path of one file of a pack given by folder or Hub repo id (downloaded into the Hub cache if needed)."""
    local = Path(source, subfolder, filename)
    if Path(source).is_dir():  # a regular file inside the folder, of a sane size (files.py); never opened otherwise
        return check_pack_file(str(local), filename, source, Path(source, subfolder))
    from transformers.utils import cached_file

    with download_errors(source, filename):
        path = cached_file(source, filename, revision=revision, subfolder=subfolder, **hub)
    if path is None:
        raise PackFileError(f"The steering pack {source} has no {filename}.")
    verify_cached(path, source, filename)  # the client checks only the size; a corrupt copy must not stay cached
    return path


def write_pack(model, folder: Path, include_base: bool = False, **kwargs) -> None:
    """Write every file of ``model``'s pack into ``folder`` (kwargs go to the base's save_pretrained in a bundle)."""
    config = model.config
    config.architectures = [type(model).__name__]
    config.auto_map = {
        "AutoConfig": "configuration_alignez.AlignEZConfig",
        "AutoModelForCausalLM": "modeling_alignez.AlignEZForCausalLM",
    }
    if include_base:
        check_bundle(model)
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


def base_location(source, config, revision=None, subfolder="", name_or_path=None, base_revision=None):
    """Where the base model a pack names lives: ``(folder or Hub id, {revision, subfolder})``.

    Bundled in the pack, resolved to a local copy (``BASE_RESOLVERS``), or the recorded id at its recorded revision;
    ``name_or_path`` (and ``base_revision``) override the record.
    """
    bundled = getattr(config, "bundled_base", None)
    if bundled:
        if os.path.isdir(source):
            check_bundled_base(Path(source, subfolder), bundled, source)
        where, pinned = source, {"revision": revision, "subfolder": f"{subfolder}/{bundled}".strip("/")}
    else:
        resolved = None if name_or_path else next(filter(None, (r(config) for r in BASE_RESOLVERS)), None)
        where = name_or_path or resolved or config.base_model_name_or_path
        if not where:
            raise pack_error(
                CONFIG_FILE, source, "it names no base model (base_model_name_or_path)",
                "Pass base_model_name_or_path= (or base_model=) to from_pretrained.",
            )  # fmt: skip
        pinned = {"revision": base_revision or config.base_model_revision}
        if (name_or_path and not base_revision) or resolved:
            pinned = {}
    return where, {k: v for k, v in pinned.items() if v}


def load_base(source, config, revision, subfolder, name_or_path, base_revision, *args, **kwargs):
    """The base model a pack names (see :func:`base_location`), loaded with ``from_pretrained(*args, **kwargs)``."""
    adapter = adapter_location(source, config, kwargs)  # and the PEFT adapter on top of it, when the pack names one
    where, pinned = base_location(source, config, revision, subfolder, name_or_path, base_revision)
    try:
        base = AutoModelForCausalLM.from_pretrained(where, *args, **pinned, **kwargs)
    except (OSError, ValueError) as err:  # not found, not downloadable, or not a model transformers knows
        raise BaseModelError(
            f"Could not load the base model {where!r} (revision {pinned.get('revision')}) named by the steering "
            f"pack {source} (in its {CONFIG_FILE}): {err}\nIf the base lives elsewhere, pass base_model_name_or_path=."
        ) from err
    hub = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
    return base if adapter is None else load_adapter(base, *adapter, f"the steering pack {source}", hub)


def load_tokenizer(source: str, revision, subfolder: str, hub: dict, base_config):
    """The pack's own tokenizer, or None when it ships none.

    The base's config tells AutoTokenizer the model type: the pack's own config would send it to remote code.
    """
    if Path(source).is_dir():
        check_present(Path(source, subfolder), TOKENIZER_FILES, source)  # before the try: these errors must show
        if not Path(source, subfolder, "tokenizer_config.json").is_file():
            return None
    try:
        return AutoTokenizer.from_pretrained(source, config=base_config, revision=revision, subfolder=subfolder, **hub)
    except (OSError, ValueError):
        return None
