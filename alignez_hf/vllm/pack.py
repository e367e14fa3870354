"""A steering pack as a vLLM worker sees it: its axes and tensors, what vLLM can serve, per-request strengths.

Nothing here imports vLLM; the plugin (``plugin.py``) applies what this prepares.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..runtime import AlignEZConfig
from ..runtime.axes import AxisRegistry
from ..runtime.configuration_alignez import base_fingerprint
from ..runtime.constants import CONFIG_FILE, STEERING_FILE
from ..runtime.plan import AxisEdit, resolve_strengths
from ..runtime.serialization import base_location, pack_file, read_steering

PACK_ENV = "ALIGNEZ_VLLM_PACK"  # the folder of the pack the plugin steers with; unset: the plugin does nothing
REQUEST_KEY = "steering"  # SamplingParams(extra_args={"steering": ...}); over HTTP vllm_xargs={"steering": ...}
OFF = "off"


class UnsupportedOnVLLM(ValueError):
    """A pack uses something the vLLM integration cannot apply with the runtime's semantics."""


class ServedPack:
    """The axes of a local pack folder, checked for what vLLM can apply, with their default strengths."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not os.path.lexists(self.folder / CONFIG_FILE):  # present: pack_file says what is wrong with it, if anything
            raise FileNotFoundError(
                f"{self.folder} is not a steering pack folder (no config.json); give the folder `alignez build` or "
                "save_pretrained wrote (download a Hub pack first, e.g. with huggingface_hub.snapshot_download)."
            )
        source = str(self.folder)
        pack_file(source, CONFIG_FILE, None, "", {})  # a regular file inside the folder, of a sane size, or refused
        self.config = AlignEZConfig.from_pretrained(self.folder)
        self.registry = AxisRegistry(self.config)
        self.registry.load_state_dict(read_steering(pack_file(source, STEERING_FILE, None, "", {}), source), source)
        refusal = unsupported(self.config)
        if refusal:
            raise UnsupportedOnVLLM(
                f"The steering pack {self.folder} cannot be served with vLLM: {refusal}. Serve it with "
                "AlignEZForCausalLM (transformers) instead."
            )

    @property
    def names(self) -> list[str]:
        return self.registry.names

    @property
    def defaults(self) -> dict[str, float]:
        return {n: float(self.registry.entry(n)["strength"]) for n in self.names}

    def axes(self) -> list[AxisEdit]:
        return [self.registry.edit(n) for n in self.names]

    def base(self) -> str:
        """The folder or Hub id of the base model vLLM loads."""
        where, pinned = base_location(str(self.folder), self.config)
        if pinned.get("subfolder"):
            return str(self.folder / pinned["subfolder"])
        return where

    def check_base(self, hf_config) -> None:
        """Raise when the model vLLM loaded is not the pack's base (the fingerprint the pack recorded)."""
        expected, actual = self.config.base_fingerprint, base_fingerprint(hf_config)
        diffs = [k for k in expected if expected.get(k) is not None and expected.get(k) != actual.get(k)]
        if diffs:
            detail = ", ".join(f"{k}: pack {expected[k]!r} vs served {actual.get(k)!r}" for k in diffs)
            raise ValueError(f"The steering pack {self.folder} does not fit the model vLLM serves ({detail}).")

    def strengths(self, extra_args: Mapping[str, Any] | None) -> dict[str, float]:
        """One request's strengths: the pack's defaults, overridden by ``extra_args["steering"]``."""
        return request_strengths(extra_args, self.defaults)


def unsupported(config: AlignEZConfig) -> str | None:
    """What of a pack the vLLM integration cannot apply, or None."""
    if config.layer_policy != "static":
        return (
            "its per-query layer policy reads the unedited prompt at every layer before the first edit, a pass vLLM "
            "does not run"
        )
    prefill = [a["name"] for a in config.axes if (a.get("gate") or {}).get("kind") == "prefill"]
    if prefill:
        # vLLM runs one edited prefill (chunked, prefix-cached, batched with other requests): the gate's decision,
        # read from the unedited prompt at the gate layer, would come after the edits at the prompt's last token.
        return (
            f"axes {prefill} are gated by a prefill gate, which reads the whole unedited prompt at its layer before "
            "the first edit, a pass vLLM does not run; remove the gate (model.set_gate(name, None), then "
            "save_pretrained) to steer every request"
        )
    gated = [a["name"] for a in config.axes if a.get("gate")]
    if gated:
        return (
            f"axes {gated} are gated, and a self-judged gate needs an extra model pass per request; remove the gate "
            "(model.set_gate(name, None), then save_pretrained) to steer every request"
        )
    if getattr(config, "base_adapter_name_or_path", None) or getattr(config, "base_adapter_fingerprint", None):
        return (
            "its base carries a PEFT adapter, which vLLM would not load under the steering; export the pack with "
            "`alignez export PACK --merged OUT` (adapter and steering folded into one checkpoint) and serve that"
        )
    return None


def request_strengths(extra_args: Mapping[str, Any] | None, defaults: Mapping[str, float]) -> dict[str, float]:
    """Strengths from ``extra_args["steering"]``: absent (the defaults), ``"off"``, a dict, or that dict as JSON.

    Raises a ValueError (unknown axis, a strength that is not a finite number, a malformed value) that says how to
    write it.
    """
    value = (extra_args or {}).get(REQUEST_KEY)
    if value is None:
        return dict(defaults)
    if value == OFF:
        return dict.fromkeys(defaults, 0.0)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(_how(f"its value {value!r} is not JSON ({err.msg})")) from err
    if not isinstance(value, Mapping):
        raise ValueError(_how(f"got {value!r}"))
    try:
        resolved = resolve_strengths(value, defaults, 1)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(_how(str(err).strip("'\""))) from err
    return {name: float(t[0]) for name, t in resolved.items()}


def _how(problem: str) -> str:
    return (
        f"Bad {REQUEST_KEY!r} request parameter: {problem}. Give {{axis: strength}} "
        f"(SamplingParams(extra_args={{'{REQUEST_KEY}': {{'cheerful': 1.5}}}}); over HTTP "
        f"extra_body={{'vllm_xargs': {{'{REQUEST_KEY}': '{{\"cheerful\": 1.5}}'}}}}, a JSON string), or '{OFF}'."
    )


def strength_rows(pack: ServedPack, per_request: list[dict[str, float]]) -> dict[str, torch.Tensor]:
    """Per-axis strengths ``[requests]`` of one engine step."""
    return {n: torch.tensor([s[n] for s in per_request], dtype=torch.float32) for n in pack.names}
