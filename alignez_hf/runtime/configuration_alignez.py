"""AlignEZ configuration: which base model a steering pack belongs to, and how its axes edit it."""

from __future__ import annotations

import inspect
import re
import reprlib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig

from .constants import (
    AXIS_NAME,
    AXIS_NAME_RULE,
    COMPOSITIONS,
    CONFIG_FILE,
    EDIT_RULES,
    FINGERPRINT_KEYS,
    FORMAT_VERSION,
    HOOK_POINTS,
    LAYER_POLICIES,
    OPTION_FIELDS,
    POSITIONS,
)
from .errors import PackError, PackFileError, pack_error, reason
from .gates import check_gate
from .plan import check_strength

ALLOWED_OPTIONS = {
    "hook_point": HOOK_POINTS,
    "layer_policy": LAYER_POLICIES,
    "positions": POSITIONS,
    "composition": COMPOSITIONS,
}


def check_option(field: str, value: Any) -> None:
    """Raise a ValueError naming ``field`` when ``value`` is not one it allows (see ``constants.OPTION_FIELDS``)."""
    if field == "top_n":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"AlignEZConfig.top_n must be an integer of at least 1, got {value!r}.")
    elif field in ALLOWED_OPTIONS:
        if value not in ALLOWED_OPTIONS[field]:
            raise ValueError(f"AlignEZConfig.{field} must be one of {ALLOWED_OPTIONS[field]}, got {value!r}.")
    else:
        raise ValueError(f"{field!r} is not a steering option; options: {', '.join(OPTION_FIELDS)}.")


def base_fingerprint(base_config: PretrainedConfig) -> dict[str, Any]:
    """The few base-config fields a pack must match to be applied to a model."""
    text = base_config.get_text_config() if hasattr(base_config, "get_text_config") else base_config
    fingerprint = {"model_type": base_config.model_type}
    for key in FINGERPRINT_KEYS[1:]:
        fingerprint[key] = getattr(text, key, None)
    return fingerprint


class AlignEZConfig(PretrainedConfig):
    """Configuration of a steering pack: the base model it edits and the axes it steers.

    Args:
        base_model_name_or_path: Hub id or local path of the base causal LM.
        base_model_revision: Revision of the base on the Hub (``None`` for a local folder).
        base_fingerprint: ``model_type``, ``hidden_size``, ``num_hidden_layers`` and ``vocab_size`` of the base.
        hook_point: ``"residual"`` edits each decoder layer's output, ``"mlp"`` the MLP output (the paper's choice).
        layers_path: Dotted path of the decoder-layer list (found automatically when ``None``).
        axes: One dict per axis: ``name``, ``rule``, ``strength``, ``layers`` and build metadata.
        layer_policy: ``"static"`` edits every stored layer; ``"per_query"`` picks the top-N layers per prompt.
        top_n: Layers edited per prompt under the per-query policy.
        positions: ``"last"`` edits the last position of each forward pass; ``"all"`` edits every position.
        composition: How several axes combine: ``"sequential"`` or the paper's ``"paper"`` weighted mix.
        format_version: Version of the pack format (docs/pack-format.md); packs saved before the field are 1.

    Packs on a base that carries a PEFT adapter also hold ``base_adapter_name_or_path``, ``base_adapter_revision``
    and ``base_adapter_fingerprint`` (keyword arguments, absent otherwise; see ``adapters.py``).
    """

    model_type = "alignez"

    def __init__(
        self,
        base_model_name_or_path: str | None = None,
        base_model_revision: str | None = None,
        base_fingerprint: dict[str, Any] | None = None,
        hook_point: str = "residual",
        layers_path: str | None = None,
        axes: list[dict[str, Any]] | None = None,
        layer_policy: str = "static",
        top_n: int = 5,
        positions: str = "last",
        composition: str = "sequential",
        format_version: int = FORMAT_VERSION,
        **kwargs,
    ):
        self.base_model_name_or_path = base_model_name_or_path
        self.base_model_revision = base_model_revision
        # Copies of what can be copied; anything else is kept as given for validate_steering to refuse.
        fingerprint = {} if base_fingerprint is None else base_fingerprint
        self.base_fingerprint = dict(fingerprint) if isinstance(fingerprint, Mapping) else fingerprint
        self.hook_point = hook_point
        self.layers_path = layers_path
        axes = [] if axes is None else axes
        self.axes = [dict(a) if isinstance(a, Mapping) else a for a in axes] if isinstance(axes, list) else axes
        self.layer_policy = layer_policy
        self.top_n = top_n
        self.positions = positions
        self.composition = composition
        self.format_version = format_version
        super().__init__(**kwargs)
        self.validate_steering()

    def validate_steering(self) -> None:
        """Raise a ValueError naming the field when a field has the wrong type or a value it does not allow."""
        if not isinstance(self.format_version, int) or isinstance(self.format_version, bool):
            raise ValueError(f"AlignEZConfig.format_version must be an integer, got {self.format_version!r}.")
        if self.format_version > FORMAT_VERSION:
            raise ValueError(
                f"This steering pack has format version {self.format_version}, newer than the {FORMAT_VERSION} this "
                "alignez-hf reads; upgrade it (pip install -U alignez-hf) to load the pack."
            )
        if self.format_version < 1:
            raise ValueError(f"AlignEZConfig.format_version must be at least 1, got {self.format_version}.")
        for field in OPTION_FIELDS:
            check_option(field, getattr(self, field))
        bundled = getattr(self, "bundled_base", None)
        if bundled is not None and (
            not isinstance(bundled, str) or bundled in ("", ".", "..") or any(c in bundled for c in "/\\:")
        ):
            # a bundled base lives in a subfolder of the pack, never elsewhere on the machine that loads it
            raise ValueError(f"AlignEZConfig.bundled_base must be a folder name inside the pack, got {bundled!r}.")
        for field in STRING_FIELDS:
            value = getattr(self, field, None)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"AlignEZConfig.{field} must be a string or null, got {value!r}.")
        check_adapter_fingerprint(getattr(self, "base_adapter_fingerprint", None))
        if self.layers_path is not None and (
            not isinstance(self.layers_path, str) or not LAYERS_PATH.match(self.layers_path)
        ):
            raise ValueError(
                "AlignEZConfig.layers_path must be a dotted attribute path such as 'model.layers', "
                f"got {self.layers_path!r}."
            )
        num_layers = check_base_fingerprint(self.base_fingerprint)
        if not isinstance(self.axes, list):
            raise ValueError(f"AlignEZConfig.axes must be a list of axis entries, got {self.axes!r}.")
        if len(self.axes) > MAX_AXES:
            raise ValueError(
                f"AlignEZConfig.axes holds {len(self.axes)} axes, more than the {MAX_AXES} a pack may hold."
            )
        seen = set()
        for index, axis in enumerate(self.axes):
            if not isinstance(axis, dict):
                raise ValueError(f"AlignEZConfig.axes[{index}] must be an object (an axis entry), got {axis!r}.")
            name = axis.get("name")
            if not name or not isinstance(name, str):
                raise ValueError(f"Every axis needs a non-empty string 'name', got {axis!r}.")
            if not AXIS_NAME.match(name):
                raise ValueError(f"Axis names use {AXIS_NAME_RULE}; got {name!r}.")
            if name in seen:
                raise ValueError(f"Axis {name!r} appears twice in the config.")
            seen.add(name)
            if axis.get("rule") not in EDIT_RULES:
                raise ValueError(f"Axis {name!r} has rule {axis.get('rule')!r}; known rules: {', '.join(EDIT_RULES)}.")
            check_strength(name, axis.get("strength"))
            if axis.get("gate") is not None:
                check_gate(name, axis["gate"], num_layers=num_layers)
            check_layers(name, axis, num_layers)
            for pole in ("positive", "negative"):
                if axis.get(pole) is not None and not isinstance(axis[pole], str):
                    raise ValueError(f"Axis {name!r}: {pole!r} must be a string or null, got {axis[pole]!r}.")

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        """The config of a loaded ``config.json``; any problem with it is a PackError naming the file."""
        try:
            if not isinstance(config_dict, dict):
                raise ValueError(f"it holds a JSON {type(config_dict).__name__}, not an object")
            clash = sorted(k for k in config_dict if _shadows(cls, k))
            if clash:
                raise ValueError(f"its keys {clash} would replace methods or read-only properties of AlignEZConfig")
            labels = config_dict.get("num_labels", 2)
            if not _int(labels) or not 0 <= labels <= MAX_LABELS:  # transformers builds a dict of that many labels
                raise ValueError(f"num_labels must be an integer from 0 to {MAX_LABELS}, got {labels!r}")
            return super().from_dict(config_dict, **kwargs)
        except PackError:
            raise
        except Exception as err:
            raise pack_error(CONFIG_FILE, None, reason(err)) from err

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load the config of a pack (folder or Hub id); a malformed ``config.json`` is a PackError naming it."""
        source = str(pretrained_model_name_or_path)
        folder = Path(source, kwargs.get("subfolder") or "")
        if folder.is_dir() and not (folder / CONFIG_FILE).is_file():
            raise PackFileError(f"{folder} has no {CONFIG_FILE}; it is not a complete steering pack.")
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except PackError as err:
            problem = getattr(err, "problem", None)
            if problem is None:
                raise
            raise pack_error(CONFIG_FILE, source, problem) from err
        except OSError as err:
            if "not a valid JSON" not in str(err):  # a download that failed, a missing file: not the pack's content
                raise
            raise pack_error(CONFIG_FILE, source, "it is not valid JSON (or not UTF-8)") from err
        except Exception as err:
            raise pack_error(CONFIG_FILE, source, reason(err)) from err

    @property
    def axis_names(self) -> list[str]:
        return [a["name"] for a in self.axes]


def check_fingerprint(config: AlignEZConfig, base_config) -> None:
    """Raise a PackError naming both models when ``base_config`` does not fit the pack.

    Fields the pack leaves out or null are taken from the base (all of them when the pack records none).
    """
    expected = config.base_fingerprint
    actual = base_fingerprint(base_config)
    diffs = [k for k in expected if expected.get(k) is not None and expected.get(k) != actual.get(k)]
    if diffs:
        detail = ", ".join(f"{k}: pack {expected[k]!r} vs base {actual.get(k)!r}" for k in diffs)
        raise PackError(
            f"This steering pack was built for {config.base_model_name_or_path or 'another model'} and does not fit "
            f"the base model {getattr(base_config, 'name_or_path', '') or type(base_config).__name__} ({detail}; "
            f"base_fingerprint in its {CONFIG_FILE}). Load it with the base it was built for."
        )
    config.base_fingerprint = {**actual, **{k: v for k, v in expected.items() if v is not None}}


MAX_LABELS = 1024  # a pack has no labels; PretrainedConfig makes num_labels of them, so a huge count would hang
# Packs hold a handful of axes; every entry costs work at load (transformers copies and prints the whole config),
# so a config listing hundreds of thousands (16 MiB of JSON holds that many) is refused before that work.
MAX_AXES = 4096
# Top-level fields that hold a string or null (the base_adapter_* fields: packs on a PEFT adapter, adapters.py).
STRING_FIELDS = (
    "base_model_name_or_path", "base_model_revision", "bundled_base",
    "base_adapter_name_or_path", "base_adapter_revision",
)  # fmt: skip
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A dotted attribute path: names of letters, digits and '_', not private.
LAYERS_PATH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*(\.[A-Za-z0-9][A-Za-z0-9_]*)*$")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_adapter_fingerprint(fingerprint: Any) -> None:
    """Raise a ValueError when ``base_adapter_fingerprint`` is neither null nor ``{"peft_type", "weights_sha256"}``."""
    if fingerprint is None:
        return
    if not (
        isinstance(fingerprint, dict)
        and set(fingerprint) == {"peft_type", "weights_sha256"}
        and isinstance(fingerprint["peft_type"], str)
        and isinstance(fingerprint["weights_sha256"], str)
        and SHA256.match(fingerprint["weights_sha256"])
    ):
        raise ValueError(
            "AlignEZConfig.base_adapter_fingerprint must be null or an object with a string 'peft_type' and a "
            f"64-hex-digit 'weights_sha256', got {reprlib.repr(fingerprint)}."
        )


def check_base_fingerprint(fingerprint: Any) -> int | None:
    """Raise a ValueError when ``base_fingerprint`` is malformed; return its layer count (None when unknown)."""
    if not isinstance(fingerprint, dict):
        raise ValueError(f"AlignEZConfig.base_fingerprint must be an object, got {fingerprint!r}.")
    unknown = sorted(map(str, set(fingerprint) - set(FINGERPRINT_KEYS)))
    if unknown:
        raise ValueError(
            f"AlignEZConfig.base_fingerprint has unknown keys {unknown}; known: {', '.join(FINGERPRINT_KEYS)}."
        )
    for key, value in fingerprint.items():
        ok = isinstance(value, str) if key == "model_type" else _int(value) and value >= 1
        if value is not None and not ok:
            kind = "a string" if key == "model_type" else "a positive integer"
            raise ValueError(f"AlignEZConfig.base_fingerprint[{key!r}] must be {kind} or null, got {value!r}.")
    return fingerprint.get("num_hidden_layers")


def check_layers(name: str, axis: dict, num_layers: int | None) -> None:
    """Raise a ValueError when an axis entry's ``layers`` or ``rank`` (optional here) are malformed or disagree."""
    layers = axis.get("layers")
    if layers is not None:
        if not isinstance(layers, list) or not all(_int(x) for x in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"Axis {name!r}: 'layers' must be a list of distinct layer indices, got {layers!r}.")
        out = [x for x in layers if x < 0 or (num_layers is not None and x >= num_layers)]
        if out:
            limit = f"; the base has {num_layers} layers" if num_layers is not None else ""
            raise ValueError(f"Axis {name!r}: layers {out} are out of range{limit}.")
    rank = axis.get("rank")
    if rank is not None:
        if not isinstance(rank, dict) or not all(
            isinstance(k, str) and k.isdigit() and k.isascii() and _int(v) and v >= 1 for k, v in rank.items()
        ):
            raise ValueError(f"Axis {name!r}: 'rank' must map layer numbers (strings) to counts >= 1, got {rank!r}.")
        if layers is not None and {int(k) for k in rank} != set(layers):
            raise ValueError(
                f"Axis {name!r}: 'rank' covers layers {sorted(int(k) for k in rank)}, not {sorted(layers)}."
            )


def _shadows(cls, key: Any) -> bool:
    """Whether setting attribute ``key`` on a config would replace a method or a read-only property of ``cls``."""
    attr = inspect.getattr_static(cls, key, None) if isinstance(key, str) else None
    if isinstance(attr, property):
        return attr.fset is None
    return isinstance(attr, (types.FunctionType, classmethod, staticmethod, types.BuiltinFunctionType))
