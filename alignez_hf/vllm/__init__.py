"""Serve steering packs with vLLM: the same edits as the transformers runtime, per-request strengths, stock vLLM.

Offline::

    from alignez_hf.vllm import steered_llm, steering
    from vllm import SamplingParams

    llm = steered_llm("packs/cheerful")                   # vLLM's LLM on the pack's base, steered by the pack
    llm.generate(prompts, SamplingParams(max_tokens=40, extra_args=steering({"cheerful": 1.5})))
    llm.generate(prompts, SamplingParams(max_tokens=40, extra_args=steering("off")))

Server: ``alignez serve PACK --host 127.0.0.1 --port 8000`` (vLLM's OpenAI-compatible server; other vLLM options
pass through), then ``extra_body={"vllm_xargs": steering({"cheerful": 1.5}, http=True)}`` from the ``openai`` client.
See docs/serving.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .pack import OFF, PACK_ENV, REQUEST_KEY, ServedPack, UnsupportedOnVLLM

# Engine settings steering needs (checked again in every worker): hooks fire only in eager mode, and a prefix
# cache would hand later prompts the steered keys and values of generated tokens.
REQUIRED_ENGINE_ARGS = {"enforce_eager": True, "enable_prefix_caching": False}


def steering(strengths: Mapping[str, float] | str | None = None, *, http: bool = False) -> dict[str, Any]:
    """The request parameters that set a request's strengths: ``extra_args`` of ``SamplingParams`` offline, or
    with ``http=True`` the ``vllm_xargs`` of an OpenAI-API request (values there must be strings or numbers).

    ``None``: the pack's default strengths; ``"off"``: no steering; ``{axis: strength}``: those axes changed.
    """
    if strengths is None:
        return {}
    if strengths == OFF:
        return {REQUEST_KEY: OFF}
    value = {k: float(v) for k, v in dict(strengths).items()}
    return {REQUEST_KEY: json.dumps(value) if http else value}


def engine_args(pack: str | os.PathLike, **overrides: Any) -> dict[str, Any]:
    """``vllm.LLM`` / engine arguments that serve ``pack``: its base model and tokenizer, eager, no prefix cache."""
    served = ServedPack(pack)
    for key, value in REQUIRED_ENGINE_ARGS.items():
        if key in overrides and overrides[key] != value:
            raise ValueError(f"Steering needs {key}={value!r}; leave it out or set it so.")
    base = served.base()
    return {"model": base, "tokenizer": base, **overrides, **REQUIRED_ENGINE_ARGS}


def activate(pack: str | os.PathLike) -> None:
    """Point the plugin at ``pack`` in this process and the vLLM processes it starts from now on."""
    os.environ[PACK_ENV] = str(Path(pack).resolve())
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    from .plugin import register

    register()


def steered_llm(pack: str | os.PathLike, **llm_kwargs: Any):
    """A ``vllm.LLM`` on the pack's base model, steered by the pack (other keyword arguments go to ``LLM``)."""
    kwargs = engine_args(pack, **llm_kwargs)
    activate(pack)
    from vllm import LLM

    return LLM(**kwargs)


__all__ = ["PACK_ENV", "ServedPack", "UnsupportedOnVLLM", "activate", "engine_args", "steered_llm", "steering"]
