"""The axis registry of a pack: each axis's JSON entry (in the config) and its tensors, kept in step.

An axis is a name, an edit rule, a default strength and, per layer, unit directions ``[k, d]`` with push sizes
``[k]``; extra build statistics travel with it. Tensors live here; everything JSON lives in ``config.axes``. A
prefill gate (``gates.py``) is JSON in the entry plus two tensors held here (``gate_tensors``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .constants import AXIS_NAME, AXIS_NAME_RULE, CONFIG_FILE, EDIT_RULES, MAX_SCALE, STEERING_FILE
from .errors import GateError, PackError, UnknownAxisError, pack_error
from .gates import PREFILL_TENSORS, check_condition, check_gate, split_gate
from .plan import AxisEdit, check_strength

# Keys of an axis entry that AxisView shows as fields; everything else is metadata (strategy, build report, ...).
CORE_KEYS = ("name", "rule", "strength", "layers", "rank", "positive", "negative", "gate")


@dataclass(frozen=True)
class AxisView:
    """A description of one steering axis (a copy: changing it changes nothing; use the model's setters)."""

    name: str
    rule: str
    strength: float
    layers: tuple[int, ...]
    rank: dict[int, int]
    positive: str | None = None
    negative: str | None = None
    gate: Mapping[str, Any] | None = None  # None: the axis steers every prompt; a prefill gate's tensors included
    metadata: Mapping[str, Any] = field(default_factory=dict)  # what the builder recorded (strategy, build, ...)

    @property
    def gate_threshold(self) -> float | None:
        return None if self.gate is None else self.gate["threshold"]


def check_directions(name: str, layer: int, tensor, hidden: int, num_layers: int) -> torch.Tensor:
    """``tensor`` as float32 ``[k, hidden]`` on the CPU, or a ValueError saying what is wrong with it."""
    if not 0 <= layer < num_layers:
        raise ValueError(f"Axis {name!r}: layer {layer} is out of range; the base has {num_layers} layers.")
    tensor = torch.as_tensor(tensor).detach().to("cpu", torch.float32)
    if tensor.dim() == 1:
        tensor = tensor[None, :]
    if tensor.dim() != 2 or tensor.shape[1] != hidden or tensor.shape[0] == 0:
        raise ValueError(
            f"Axis {name!r}, layer {layer}: directions must have shape [k, {hidden}] (hidden size of the base), "
            f"got {tuple(tensor.shape)}."
        )
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"Axis {name!r}, layer {layer}: directions contain NaN or Inf.")
    return tensor


def _check_metadata(name: str, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    metadata = dict(metadata or {})
    clash = sorted(set(metadata) & set(CORE_KEYS))
    if clash:
        raise ValueError(f"Axis {name!r}: metadata may not set {clash}; pass them as arguments.")
    json.dumps(metadata)  # fail now, not at save time, if metadata is not JSON
    return metadata


class AxisRegistry:
    """The axes of one model: entries in ``config.axes`` (JSON) and tensors here, added and removed together."""

    def __init__(self, config):
        self.config = config
        self.directions: dict[str, dict[int, torch.Tensor]] = {}
        self.scales: dict[str, dict[int, torch.Tensor]] = {}
        self.stats: dict[str, dict[str, torch.Tensor]] = {}
        self.gate_tensors: dict[str, dict[str, torch.Tensor]] = {}  # prefill gates: direction and mean

    @property
    def names(self) -> list[str]:
        return [a["name"] for a in self.config.axes]

    def entry(self, name: str) -> dict:
        """The JSON entry of axis ``name`` (a KeyError naming the known axes if there is none)."""
        for axis in self.config.axes:
            if axis["name"] == name:
                return axis
        raise UnknownAxisError(f"Unknown axis {name!r}; this model's axes: {', '.join(self.names) or 'none'}.")

    def view(self, name: str) -> AxisView:
        a = self.entry(name)
        return AxisView(
            name=a["name"],
            rule=a["rule"],
            strength=a["strength"],
            layers=tuple(a["layers"]),
            rank={int(k): v for k, v in a["rank"].items()},
            positive=a.get("positive"),
            negative=a.get("negative"),
            gate=self.gate_view(name),
            metadata=copy.deepcopy({k: v for k, v in a.items() if k not in CORE_KEYS}),
        )

    def gate_view(self, name: str) -> dict | None:
        """A copy of the gate of axis ``name`` (a prefill gate with copies of its tensors), or None."""
        gate = self.entry(name).get("gate")
        if not gate:
            return None
        tensors = {k: v.clone() for k, v in self.gate_tensors.get(name, {}).items()}
        return {**copy.deepcopy(gate), **tensors}

    def checked_gate(
        self, name: str, gate: Any, vocab_size: int | None = None, inherit: bool = True
    ) -> tuple[dict, dict]:
        """``gate`` as its JSON entry and its checked tensors (prefill), or a GateError. With ``inherit`` a prefill
        gate given without tensors keeps the axis's current ones (e.g. a new threshold)."""
        if not isinstance(gate, Mapping):
            check_gate(name, gate)  # raises: not a dict
        entry, tensors = split_gate(gate)
        fp = self.config.base_fingerprint
        check_gate(name, entry, vocab_size, fp.get("num_hidden_layers"))
        if entry["kind"] != "prefill":
            return entry, {}
        if inherit and not tensors and name in self.gate_tensors:
            tensors = self.gate_tensors[name]
        return entry, check_condition(name, tensors, fp.get("hidden_size"))

    def set_gate(self, name: str, gate: Mapping[str, Any] | None, vocab_size: int | None = None) -> None:
        """Put a gate on axis ``name`` (checked; see ``checked_gate``), or remove it with None."""
        entry = self.entry(name)
        if gate is None:
            entry.pop("gate", None)
            self.gate_tensors.pop(name, None)
            return
        gate, tensors = self.checked_gate(name, gate, vocab_size)
        entry["gate"] = gate
        if tensors:
            self.gate_tensors[name] = tensors
        else:
            self.gate_tensors.pop(name, None)

    def add(
        self,
        name: str,
        directions: Mapping[int, torch.Tensor],
        rule: str,
        strength: float,
        *,
        scales: Mapping[int, torch.Tensor] | None = None,
        positive: str | None = None,
        negative: str | None = None,
        stats: Mapping[str, torch.Tensor] | None = None,
        gate: Mapping[str, Any] | None = None,
        replace: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Validate and register an axis (see ``AlignEZForCausalLM.add_axis``)."""
        if not isinstance(name, str) or not AXIS_NAME.match(name):
            raise ValueError(f"Axis names use {AXIS_NAME_RULE}; got {name!r}.")
        if name in self.directions and not replace:
            raise ValueError(f"Axis {name!r} exists already; pass replace=True to overwrite it.")
        if rule not in EDIT_RULES:
            raise ValueError(f"Unknown edit rule {rule!r}; known rules: {', '.join(EDIT_RULES)}.")
        strength = check_strength(name, strength)
        if not directions:
            raise ValueError(f"Axis {name!r} needs directions for at least one layer.")
        gate_tensors: dict = {}
        if gate is not None:  # a replaced axis does not inherit its old gate's tensors
            gate, gate_tensors = self.checked_gate(name, gate, inherit=False)
        fp = self.config.base_fingerprint
        units, norms = {}, {}
        for layer, tensor in directions.items():
            layer = int(layer)
            tensor = check_directions(name, layer, tensor, fp["hidden_size"], fp["num_hidden_layers"])
            row_norms = tensor.norm(dim=-1)
            if bool((row_norms == 0).any()):
                raise ValueError(f"Axis {name!r}, layer {layer}: a direction is all zeros.")
            units[layer] = tensor / row_norms[:, None]
            norms[layer] = row_norms
        if scales is not None:
            norms = {}
            for layer, s in scales.items():
                s = torch.as_tensor(s, dtype=torch.float32).detach().cpu().reshape(-1)
                if int(layer) not in units or s.shape[0] != units[int(layer)].shape[0]:
                    raise ValueError(f"Axis {name!r}: scales for layer {layer} do not match its directions.")
                if not bool(torch.isfinite(s).all()):
                    raise ValueError(f"Axis {name!r}, layer {layer}: scales contain NaN or Inf.")
                norms[int(layer)] = s
            if set(norms) != set(units):
                raise ValueError(f"Axis {name!r}: scales must cover the same layers as the directions.")
        metadata = _check_metadata(name, metadata)
        entry = {
            "name": name,
            "rule": rule,
            "strength": strength,
            "layers": sorted(units),
            "rank": {str(k): int(v.shape[0]) for k, v in sorted(units.items())},
            "positive": positive,
            "negative": negative,
            **({"gate": gate} if gate is not None else {}),
            **metadata,
        }
        self.config.axes = [a for a in self.config.axes if a["name"] != name] + [entry]
        self.directions[name] = units
        self.scales[name] = norms
        self.stats[name] = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in (stats or {}).items()}
        if gate_tensors:
            self.gate_tensors[name] = gate_tensors
        else:
            self.gate_tensors.pop(name, None)

    def update_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        """Set JSON metadata keys of an existing axis."""
        self.entry(name).update(_check_metadata(name, metadata))

    def remove(self, name: str) -> None:
        self.entry(name)
        self.config.axes = [a for a in self.config.axes if a["name"] != name]
        for store in (self.directions, self.scales, self.stats, self.gate_tensors):
            store.pop(name, None)

    def tensors(self, name: str) -> dict[str, dict]:
        """Copies of one axis's tensors: ``directions``, ``scales`` (per layer), ``stats`` and ``gate`` (a prefill
        gate's ``direction`` and ``mean``; empty otherwise)."""
        self.entry(name)
        return {
            "directions": {k: v.clone() for k, v in self.directions[name].items()},
            "scales": {k: v.clone() for k, v in self.scales[name].items()},
            "stats": {k: v.clone() for k, v in self.stats[name].items()},
            "gate": {k: v.clone() for k, v in self.gate_tensors.get(name, {}).items()},
        }

    def edit(self, name: str, rule: str | None = None) -> AxisEdit:
        """The axis as the plan sees it (optionally under another rule)."""
        return AxisEdit(name, rule or self.entry(name)["rule"], self.directions[name], self.scales[name])

    def random_like(self, name: str, seed: int) -> dict[int, torch.Tensor]:
        """Random orthonormal directions with the layers and ranks of axis ``name`` (a control of the same size)."""
        generator = torch.Generator().manual_seed(seed)
        out = {}
        for layer in sorted(self.directions[name]):
            k, d = self.directions[name][layer].shape
            q, _ = torch.linalg.qr(torch.randn(d, k, generator=generator))
            out[layer] = q.T.contiguous()
        return out

    # ------------------------------------------------------------------ steering.safetensors
    def state_dict(self) -> dict[str, torch.Tensor]:
        """All tensors under ``{axis}.layers.{layer}.{directions|scales}``, ``{axis}.stats.{name}`` and (prefill
        gates) ``{axis}.gate.{direction|mean}``."""
        tensors = {}
        for name in self.names:
            for layer, directions in self.directions[name].items():
                tensors[f"{name}.layers.{layer}.directions"] = directions.contiguous()
                tensors[f"{name}.layers.{layer}.scales"] = self.scales[name][layer].contiguous()
            for stat, value in self.stats[name].items():
                tensors[f"{name}.stats.{stat}"] = value.contiguous()
            for key, value in self.gate_tensors.get(name, {}).items():
                tensors[f"{name}.gate.{key}"] = value.contiguous()
        return tensors

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor], source: str) -> None:
        """Take the tensors of every axis the config lists from a loaded ``steering.safetensors``, checking them.

        Anything wrong (a tensor the config does not list, layers or ranks that disagree with it, a non-float dtype,
        a wrong shape, directions that are not unit rows, NaN, Inf or absurd push sizes) is a PackError.
        """
        fp = self.config.base_fingerprint
        hidden, num_layers = fp.get("hidden_size"), fp.get("num_hidden_layers")
        if not isinstance(hidden, int) or not isinstance(num_layers, int):
            raise pack_error(
                CONFIG_FILE, source, f"base_fingerprint records no hidden_size or num_hidden_layers ({fp})"
            )
        names = set(self.names)
        by_axis: dict[str, dict] = {n: {"directions": {}, "scales": {}, "stats": {}, "gate": {}} for n in names}
        for key, value in tensors.items():
            parts = key.split(".")
            if parts[0] not in names:
                raise PackError(
                    f"{STEERING_FILE} in {source} holds tensor {key!r} for an axis that config.json does not list "
                    f"(listed: {', '.join(sorted(names)) or 'none'}); the pack is inconsistent: rebuild or "
                    "re-download it (force_download=True)."
                )
            if len(parts) == 4 and parts[1] == "layers" and parts[3] in ("directions", "scales") and _index(parts[2]):
                by_axis[parts[0]][parts[3]][int(parts[2])] = value
            elif len(parts) >= 3 and parts[1] == "stats":
                by_axis[parts[0]]["stats"][".".join(parts[2:])] = value
            elif len(parts) == 3 and parts[1] == "gate" and parts[2] in PREFILL_TENSORS:
                by_axis[parts[0]]["gate"][parts[2]] = value
            else:
                raise PackError(
                    f"{STEERING_FILE} in {source} holds an unexpected tensor {key!r}; rebuild or re-download the pack."
                )
        for axis in self.config.axes:
            name, found = axis["name"], by_axis[axis["name"]]
            if not isinstance(axis.get("layers"), list) or not isinstance(axis.get("rank"), dict):
                raise pack_error(CONFIG_FILE, source, f"axis {name!r} lists no 'layers' or no 'rank'")
            missing = sorted(set(axis["layers"]) - set(found["directions"]))
            if missing or set(found["directions"]) != set(found["scales"]):
                raise PackError(
                    f"{STEERING_FILE} in {source} lacks tensors of axis {name!r} for layers {missing or 'scales'}; "
                    "the pack is incomplete: rebuild or re-download it (force_download=True)."
                )
            extra = sorted(set(found["directions"]) - set(axis["layers"]))
            if extra:
                raise PackError(
                    f"{STEERING_FILE} in {source} holds tensors of axis {name!r} for layers {extra} that its entry in "
                    f"{CONFIG_FILE} does not list; the pack is inconsistent: rebuild or re-download it."
                )
            for layer, tensor in found["directions"].items():
                scales = found["scales"][layer]
                try:
                    found["directions"][layer] = check_directions(name, layer, _floats(tensor), hidden, num_layers)
                    if _floats(scales).shape != (tensor.shape[0],):
                        raise ValueError(f"scales have shape {tuple(scales.shape)}, not [{tensor.shape[0]}].")
                    _check_loaded(layer, found["directions"][layer], scales.float(), axis["rank"])
                except ValueError as err:
                    raise PackError(
                        f"{STEERING_FILE} in {source}: Axis {name!r}, layer {layer}: "
                        f"{str(err).removeprefix(f'Axis {name!r}, layer {layer}: ')} Rebuild or re-download the pack "
                        "(force_download=True)."
                    ) from err
            gate_tensors = _loaded_gate(name, axis.get("gate"), found["gate"], hidden, source)
            self.directions[name] = found["directions"]
            self.scales[name] = {k: v.float() for k, v in found["scales"].items()}
            self.stats[name] = found["stats"]
            if gate_tensors:
                self.gate_tensors[name] = gate_tensors
            else:
                self.gate_tensors.pop(name, None)


def _loaded_gate(name: str, gate: Any, tensors: dict, hidden: int, source: str) -> dict:
    """The checked tensors of a loaded axis's prefill gate (none for other gates), or a PackError."""
    prefill = isinstance(gate, dict) and gate.get("kind") == "prefill"
    if not prefill and tensors:
        raise PackError(
            f"{STEERING_FILE} in {source} holds gate tensors {sorted(tensors)} of axis {name!r}, whose entry in "
            f"{CONFIG_FILE} has no prefill gate; the pack is inconsistent: rebuild or re-download it."
        )
    if not prefill:
        return {}
    try:
        return check_condition(name, tensors, hidden, loaded=True)
    except GateError as err:
        raise PackError(
            f"{STEERING_FILE} in {source}: {err} (tensors '{name}.gate.direction' and '{name}.gate.mean'). Rebuild "
            "or re-download the pack (force_download=True)."
        ) from err


def _index(text: str) -> bool:
    """Whether ``text`` is a layer index as tensor names write it (ASCII digits only)."""
    return text.isascii() and text.isdigit()


def _floats(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, or a ValueError when it is not a floating-point tensor."""
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise ValueError(f"tensors must be floating point, got {getattr(tensor, 'dtype', type(tensor).__name__)}.")
    return tensor


def _check_loaded(layer: int, directions: torch.Tensor, scales: torch.Tensor, rank: Mapping) -> None:
    """What a saved axis promises: ``rank[layer]`` unit directions and finite push sizes of a sane magnitude."""
    if rank.get(str(layer)) != directions.shape[0]:
        raise ValueError(
            f"{directions.shape[0]} directions, but {CONFIG_FILE} gives rank {rank.get(str(layer))!r} for the layer."
        )
    norms = directions.norm(dim=-1)
    if not bool(((norms - 1).abs() <= 1e-3).all()):
        raise ValueError(f"directions must be unit rows, got norms {[round(float(n), 4) for n in norms]}.")
    if not bool(torch.isfinite(scales).all()) or not bool((scales.abs() <= MAX_SCALE).all()):
        raise ValueError(f"scales must be finite numbers of magnitude at most {MAX_SCALE:g}, got {scales.tolist()}.")
