"""AlignEZ configuration: which base model a steering pack belongs to, and how its axes edit it."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from .constants import (
    COMPOSITIONS,
    EDIT_RULES,
    FINGERPRINT_KEYS,
    FORMAT_VERSION,
    HOOK_POINTS,
    LAYER_POLICIES,
    OPTION_FIELDS,
    POSITIONS,
)
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
        self.base_fingerprint = dict(base_fingerprint or {})
        self.hook_point = hook_point
        self.layers_path = layers_path
        self.axes = [dict(a) for a in (axes or [])]
        self.layer_policy = layer_policy
        self.top_n = top_n
        self.positions = positions
        self.composition = composition
        self.format_version = format_version
        super().__init__(**kwargs)
        self.validate_steering()

    def validate_steering(self) -> None:
        """Raise a ValueError naming the field when a steering option is not one of its allowed values."""
        if not isinstance(self.format_version, int) or isinstance(self.format_version, bool):
            raise ValueError(f"AlignEZConfig.format_version must be an integer, got {self.format_version!r}.")
        if self.format_version > FORMAT_VERSION:
            raise ValueError(
                f"This steering pack has format version {self.format_version}, newer than the {FORMAT_VERSION} this "
                "alignez-hf reads; upgrade it (pip install -U alignez-hf) to load the pack."
            )
        for field in OPTION_FIELDS:
            check_option(field, getattr(self, field))
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


def check_fingerprint(config: AlignEZConfig, base_config) -> None:
    """Raise a ValueError naming both models when ``base_config`` does not fit the pack (or record it if unset)."""
    expected = config.base_fingerprint
    actual = base_fingerprint(base_config)
    if not expected:
        config.base_fingerprint = actual
        return
    diffs = [k for k in expected if expected.get(k) is not None and expected.get(k) != actual.get(k)]
    if diffs:
        detail = ", ".join(f"{k}: pack {expected[k]!r} vs base {actual.get(k)!r}" for k in diffs)
        raise ValueError(
            f"This steering pack was built for {config.base_model_name_or_path or 'another model'} and does not fit "
            f"the base model {getattr(base_config, 'name_or_path', '') or type(base_config).__name__} ({detail})."
        )
