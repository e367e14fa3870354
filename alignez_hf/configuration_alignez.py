"""AlignEZ configuration: which base model a steering pack belongs to, and how its axes edit it."""

from __future__ import annotations

import math
from typing import Any

from transformers import PretrainedConfig

from .gates import check_gate

STEERING_FILE = "steering.safetensors"
HOOK_POINTS = ("residual", "mlp")
LAYER_POLICIES = ("static", "per_query")
POSITIONS = ("last", "all")
COMPOSITIONS = ("sequential", "paper")
EDIT_RULES = ("additive", "tanh", "relu_suppress")
FINGERPRINT_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


def check_strength(name: str, value: Any) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"The strength of axis {name!r} must be a finite number, got {value!r}.")
    return float(value)


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
        **kwargs,
    ):
        self.base_model_name_or_path = base_model_name_or_path
        self.base_model_revision = base_model_revision
        self.base_fingerprint = dict(base_fingerprint or {})
        self.hook_point = hook_point
        self.layers_path = layers_path
        self.axes = [dict(a) for a in (axes or [])]
        self.layer_policy = layer_policy
        self.top_n = int(top_n)
        self.positions = positions
        self.composition = composition
        super().__init__(**kwargs)
        self.validate_steering()

    def validate_steering(self) -> None:
        """Raise a ValueError naming the field when a steering option is not one of its allowed values."""
        for field, allowed in (
            ("hook_point", HOOK_POINTS),
            ("layer_policy", LAYER_POLICIES),
            ("positions", POSITIONS),
            ("composition", COMPOSITIONS),
        ):
            if getattr(self, field) not in allowed:
                raise ValueError(f"AlignEZConfig.{field} must be one of {allowed}, got {getattr(self, field)!r}.")
        if self.top_n < 1:
            raise ValueError(f"AlignEZConfig.top_n must be at least 1, got {self.top_n}.")
        seen = set()
        for axis in self.axes:
            name = axis.get("name")
            if not name or not isinstance(name, str):
                raise ValueError(f"Every axis needs a non-empty string 'name', got {axis!r}.")
            if name in seen:
                raise ValueError(f"Axis {name!r} appears twice in the config.")
            seen.add(name)
            if axis.get("rule") not in EDIT_RULES:
                raise ValueError(f"Axis {name!r} has rule {axis.get('rule')!r}; known rules: {', '.join(EDIT_RULES)}.")
            check_strength(name, axis.get("strength"))
            if axis.get("gate") is not None:
                check_gate(name, axis["gate"])

    @property
    def axis_names(self) -> list[str]:
        return [a["name"] for a in self.axes]
