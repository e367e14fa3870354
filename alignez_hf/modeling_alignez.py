"""AlignEZForCausalLM: a base causal LM plus steering subspaces, edited by hooks inside forward() and generate().

This module, ``configuration_alignez.py``, ``edits.py`` and ``layers.py`` form the runtime. They import nothing
else from the package, so a pack can ship them as remote code.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.generation import utils as generation_utils

from .configuration_alignez import (
    EDIT_RULES,
    STEERING_FILE,
    AlignEZConfig,
    base_fingerprint,
    check_strength,
)
from .edits import compose, last_positions, layer_scores, query_direction_mask, top_n_layers
from .gates import GATE_TOKEN_FIELDS, check_gate, expected_digit, judge_batch
from .layers import find_decoder_layers, hook_module

RUNTIME_FILES = ("configuration_alignez.py", "modeling_alignez.py", "edits.py", "gates.py", "layers.py")
BUNDLED_BASE_FOLDER = "base"
AXIS_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
# Keyword arguments of from_pretrained that locate files on the Hub; they apply to the pack and the base alike.
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "proxies")
# transformers 5.x renamed generate's `past_key_values` to `cache`; use whichever this version calls it.
CACHE_NAMES = tuple(getattr(generation_utils, "ALL_CACHE_NAMES", ("past_key_values",)))
# Callables (config) -> local folder or None, consulted before the recorded base id; the alignez_hf package
# registers one that maps embedded models' Hub ids to their converted local copies (works offline).
BASE_RESOLVERS: list = []
Steering = Mapping[str, float] | Sequence[Mapping[str, float]] | None


@dataclass(frozen=True)
class AxisView:
    """A read-only description of one steering axis."""

    name: str
    rule: str
    strength: float
    layers: tuple[int, ...]
    rank: dict[int, int]
    positive: str | None = None
    negative: str | None = None
    gate_threshold: float | None = None  # None: the axis steers every prompt


class _Session:
    """What the hooks of one forward()/generate() call need: per-layer edits and the positions to edit."""

    def __init__(self, plans: dict[int, list[tuple]], positions: str, composition: str, rows: int):
        self.plans = plans
        self.positions = positions
        self.composition = composition
        self.rows = rows
        self.gather: torch.Tensor | None = None  # per-row index of the last real token, None = last column
        self._cache: dict[tuple, list] = {}

    def edits_for(self, layer: int, n: int, device: torch.device) -> list:
        """This layer's edits on ``device`` in float32, with per-row tensors expanded to ``n`` rows (beams)."""
        key = (layer, n, device)
        if key not in self._cache:
            if n % self.rows:
                raise RuntimeError(f"Steering was set up for {self.rows} rows but a forward pass has {n}.")
            repeat = n // self.rows
            out = []
            for directions, scales, rule, mask, strength in self.plans[layer]:
                mask = None if mask is None else mask.repeat_interleave(repeat, 0).to(device)
                out.append(
                    (
                        directions.to(device),
                        scales.to(device),
                        rule,
                        mask,
                        strength.repeat_interleave(repeat).to(device),
                    )
                )
            self._cache[key] = out
        return self._cache[key]


class AlignEZForCausalLM(PreTrainedModel, GenerationMixin):
    """A causal LM whose hidden states are edited along saved steering subspaces during forward and generate."""

    config_class = AlignEZConfig
    base_model_prefix = "base"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, config: AlignEZConfig, base: PreTrainedModel | None = None, tokenizer=None):
        super().__init__(config)
        if base is None:
            raise ValueError(
                "AlignEZForCausalLM needs a base model: use AlignEZForCausalLM.from_pretrained(pack) or "
                "AlignEZForCausalLM.from_base(base_model)."
            )
        self.base = base
        self.tokenizer = tokenizer
        _check_fingerprint(config, base.config)
        num_layers = config.base_fingerprint.get("num_hidden_layers")
        path, self._decoder_layers = find_decoder_layers(base, num_layers, config.layers_path)
        config.layers_path = path
        self._directions: dict[str, dict[int, torch.Tensor]] = {}
        self._scales: dict[str, dict[int, torch.Tensor]] = {}
        self._stats: dict[str, dict[str, torch.Tensor]] = {}
        self._disabled = False
        self._session: _Session | None = None
        if getattr(base, "generation_config", None) is not None:
            self.generation_config = base.generation_config
        self.post_init()

    # PreTrainedModel would re-initialise the base's weights; they are already trained.
    def init_weights(self):
        pass

    def _init_weights(self, module):
        pass

    # ------------------------------------------------------------------ building
    @classmethod
    def from_base(
        cls,
        base_model: PreTrainedModel,
        tokenizer=None,
        *,
        hook_point: str = "residual",
        layer_policy: str = "static",
        top_n: int = 5,
        positions: str = "last",
        composition: str = "sequential",
        layers_path: str | None = None,
        base_model_name_or_path: str | None = None,
        base_model_revision: str | None = None,
    ) -> AlignEZForCausalLM:
        """Wrap a loaded causal LM with no axes yet; add them with ``add_axis``."""
        if not isinstance(base_model, PreTrainedModel):
            raise TypeError(f"base_model must be a transformers PreTrainedModel, got {type(base_model).__name__}.")
        config = AlignEZConfig(
            base_model_name_or_path=base_model_name_or_path or base_model.config.name_or_path or None,
            base_model_revision=base_model_revision or getattr(base_model.config, "_commit_hash", None),
            base_fingerprint=base_fingerprint(base_model.config),
            hook_point=hook_point,
            layers_path=layers_path,
            layer_policy=layer_policy,
            top_n=top_n,
            positions=positions,
            composition=composition,
        )
        return cls(config, base=base_model, tokenizer=tokenizer)

    def add_axis(
        self,
        name: str,
        directions: Mapping[int, torch.Tensor],
        rule: str = "additive",
        strength: float = 1.0,
        *,
        scales: Mapping[int, torch.Tensor] | None = None,
        positive: str | None = None,
        negative: str | None = None,
        stats: Mapping[str, torch.Tensor] | None = None,
        replace: bool = False,
        **metadata: Any,
    ) -> None:
        """Add a steering axis from per-layer directions ``{layer: Tensor[k, d] or Tensor[d]}``.

        Directions are stored as unit rows; for the ``additive`` rule their norms become the push sizes unless
        ``scales`` gives them. ``stats`` holds extra tensors saved with the pack; ``metadata`` must be JSON.
        """
        if not isinstance(name, str) or not AXIS_NAME.match(name):
            raise ValueError(f"Axis names use letters, digits, '_' and '-' only; got {name!r}.")
        if name in self._directions and not replace:
            raise ValueError(f"Axis {name!r} exists already; pass replace=True to overwrite it.")
        if rule not in EDIT_RULES:
            raise ValueError(f"Unknown edit rule {rule!r}; known rules: {', '.join(EDIT_RULES)}.")
        strength = check_strength(name, strength)
        if not directions:
            raise ValueError(f"Axis {name!r} needs directions for at least one layer.")
        fp = self.config.base_fingerprint
        units, norms = {}, {}
        for layer, tensor in directions.items():
            layer = int(layer)
            tensor = _check_directions(name, layer, tensor, fp["hidden_size"], fp["num_hidden_layers"])
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
        json.dumps(metadata)  # fail now, not at save time, if metadata is not JSON
        entry = {
            "name": name,
            "rule": rule,
            "strength": strength,
            "layers": sorted(units),
            "rank": {str(k): int(v.shape[0]) for k, v in sorted(units.items())},
            "positive": positive,
            "negative": negative,
            **metadata,
        }
        self.config.axes = [a for a in self.config.axes if a["name"] != name] + [entry]
        self._directions[name] = units
        self._scales[name] = norms
        self._stats[name] = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in (stats or {}).items()}

    def remove_axis(self, name: str) -> None:
        """Remove a steering axis."""
        self._axis_entry(name)
        self.config.axes = [a for a in self.config.axes if a["name"] != name]
        for store in (self._directions, self._scales, self._stats):
            store.pop(name, None)

    # ------------------------------------------------------------------ controls
    @property
    def axes(self) -> Mapping[str, AxisView]:
        """Read-only view of the axes, by name."""
        return MappingProxyType(
            {
                a["name"]: AxisView(
                    name=a["name"],
                    rule=a["rule"],
                    strength=a["strength"],
                    layers=tuple(a["layers"]),
                    rank={int(k): v for k, v in a["rank"].items()},
                    positive=a.get("positive"),
                    negative=a.get("negative"),
                    gate_threshold=a["gate"]["threshold"] if a.get("gate") else None,
                )
                for a in self.config.axes
            }
        )

    def set_strength(self, name: str, value: float) -> None:
        """Set the default strength of one axis (0 turns it off)."""
        self._axis_entry(name)["strength"] = check_strength(name, value)

    def set_gate(self, name: str, gate: Mapping[str, Any] | None) -> None:
        """Put a self-judged gate on an axis (see ``gates.py``; the builder makes them), or remove it with ``None``."""
        entry = self._axis_entry(name)
        if gate is not None:
            gate = dict(gate)
            check_gate(name, gate)
        entry["gate"] = gate

    def set_gate_threshold(self, name: str, value: float | None) -> None:
        """Move the threshold of an axis's gate; ``None`` removes the gate (the axis steers everything)."""
        gate = self._axis_entry(name).get("gate")
        if value is not None and not gate:
            raise ValueError(f"Axis {name!r} has no gate; build it with a gate (AlignEZBuilder(gate=True)) first.")
        self.set_gate(name, None if value is None else {**gate, "threshold": value})

    def gate_scores(self, name: str, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """The model's own 0-9 rating of each prompt that the gate of axis ``name`` compares with its threshold."""
        gate = self._axis_entry(name).get("gate")
        if not gate:
            raise ValueError(f"Axis {name!r} has no gate.")
        return self.judge(gate, input_ids, attention_mask)

    @torch.no_grad()
    def judge(self, gate: Mapping[str, Any], input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Expected digit of the unsteered model's answer to ``gate``'s judge prompt about each row's last user
        message: ``Tensor[rows]`` (float32, on the CPU). Any gate dict works; its threshold is not used here."""
        if input_ids is None:
            raise ValueError("A self-judged gate reads token ids; pass input_ids, not inputs_embeds.")
        rows, mask_cpu = input_ids.shape[0], None if attention_mask is None else attention_mask.cpu()
        device = self.get_input_embeddings().weight.device
        params = inspect.signature(self.base.forward).parameters
        # Only the last position's logits are needed; most models can skip the others (a large vocabulary x prompt).
        extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        cache_arg = next((name for name in CACHE_NAMES if name in params), None)
        with self.steering_disabled():
            cache = None
            if rows > 1 and cache_arg is not None:
                # The judge question (most of each judge prompt) is the same for every row: run it once and let
                # the batch share its key/value cache.
                head = self.base(input_ids=torch.tensor([list(gate["before"])], device=device), use_cache=True)
                cache = next((head[name] for name in CACHE_NAMES if name in head), None)
            if hasattr(cache, "batch_repeat_interleave"):
                cache.batch_repeat_interleave(rows)
                ids, rest_mask = judge_batch(input_ids.cpu(), mask_cpu, gate, with_before=False)
                # Padding now sits between the shared question and each request; the mask and positions say so.
                mask = torch.cat([torch.ones(rows, len(gate["before"]), dtype=torch.long), rest_mask], 1)
                extra.update({cache_arg: cache, "use_cache": True})
            else:
                ids, mask = judge_batch(input_ids.cpu(), mask_cpu, gate)
                extra["use_cache"] = False
            logits = self.base(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=_position_ids(mask)[:, -ids.shape[1] :].to(device),
                **extra,
            ).logits
        return expected_digit(logits[:, -1], gate["digits"]).cpu()

    def axis_tensors(self, name: str) -> dict[str, dict[int, torch.Tensor] | dict[str, torch.Tensor]]:
        """Copies of one axis's stored tensors: ``directions``, ``scales`` (per layer) and ``stats``."""
        self._axis_entry(name)
        return {
            "directions": {k: v.clone() for k, v in self._directions[name].items()},
            "scales": {k: v.clone() for k, v in self._scales[name].items()},
            "stats": {k: v.clone() for k, v in self._stats[name].items()},
        }

    @contextlib.contextmanager
    def steering_disabled(self) -> Iterator[None]:
        """Run the unedited base model inside this block."""
        previous, self._disabled = self._disabled, True
        try:
            yield
        finally:
            self._disabled = previous

    def _axis_entry(self, name: str) -> dict:
        for axis in self.config.axes:
            if axis["name"] == name:
                return axis
        known = ", ".join(self.config.axis_names) or "none"
        raise KeyError(f"Unknown axis {name!r}; this model's axes: {known}.")

    # ------------------------------------------------------------------ running
    def forward(self, *args, steering: Steering = None, **kwargs):
        """The base model's forward, with hidden states edited as configured (``steering`` overrides strengths)."""
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        with self._steering_session(steering, input_ids, kwargs.get("attention_mask"), kwargs.get("inputs_embeds")):
            return self.base(*args, **kwargs)

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, steering: Steering = None, **kwargs):
        """``generate`` of the base model with steering; ``steering`` is a dict of strengths or one dict per row."""
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        session = self._steering_session(
            steering, input_ids, kwargs.get("attention_mask"), kwargs.get("inputs_embeds"), generate_kwargs=kwargs
        )
        with session:
            return self.base.generate(inputs, **kwargs)

    def _can_reuse_prefill(self, input_ids, kwargs: dict) -> bool:
        config = kwargs.get("generation_config") or self.generation_config
        plain = all(
            kwargs.get(key, getattr(config, key, None) or 1) == 1 for key in ("num_beams", "num_return_sequences")
        )
        return (
            plain
            and self.config.positions == "last"
            and input_ids is not None
            and input_ids.dim() == 2
            and input_ids.shape[1] > 1
            and all(kwargs.get(name) is None for name in CACHE_NAMES)
            and kwargs.get("inputs_embeds") is None
            and kwargs.get("assistant_model") is None
        )

    def prepare_inputs_for_generation(self, *args, **kwargs):
        return self.base.prepare_inputs_for_generation(*args, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        return self.base.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module | None:
        return self.base.get_output_embeddings()

    def _strengths(self, steering: Steering, rows: int) -> dict[str, torch.Tensor]:
        defaults = {a["name"]: float(a["strength"]) for a in self.config.axes}
        if steering is None:
            per_row = [{}] * rows
        elif isinstance(steering, Mapping):
            per_row = [steering] * rows
        elif isinstance(steering, Sequence) and not isinstance(steering, str):
            if len(steering) != rows:
                raise ValueError(f"steering has {len(steering)} entries but the batch has {rows} rows.")
            per_row = list(steering)
        else:
            raise TypeError("steering must be None, a dict {axis: strength}, or a list of such dicts (one per row).")
        out = {}
        for name, default in defaults.items():
            out[name] = torch.tensor([default] * rows, dtype=torch.float32)
        for i, row in enumerate(per_row):
            if not isinstance(row, Mapping):
                raise TypeError(f"steering[{i}] must be a dict {{axis: strength}}, got {type(row).__name__}.")
            for name, value in row.items():
                if name not in out:
                    known = ", ".join(defaults) or "none"
                    raise KeyError(f"Unknown axis {name!r} in steering; this model's axes: {known}.")
                out[name][i] = check_strength(name, value)
        return out

    @contextlib.contextmanager
    def _steering_session(
        self, steering, input_ids, attention_mask, inputs_embeds, generate_kwargs: dict | None = None
    ) -> Iterator[None]:
        if self._session is not None:  # nested call (e.g. forward inside our own generate): hooks already active
            yield
            return
        reference = input_ids if input_ids is not None else inputs_embeds
        rows = 1 if reference is None or reference.dim() < 2 else reference.shape[0]
        strengths = self._strengths(steering, rows)
        if not self._disabled:
            self._apply_gates(strengths, input_ids, attention_mask)
        active = [a for a in self.config.axes if bool(strengths[a["name"]].abs().sum() > 0)]
        if self._disabled or not active:
            yield
            return
        masks = None
        if self.config.layer_policy == "per_query":
            if input_ids is None and inputs_embeds is None:
                raise ValueError("The per-query layer policy needs input_ids or inputs_embeds to read the prompt.")
            layers = sorted({layer for axis in active for layer in axis["layers"]})
            # In generate, the unedited pass over the prompt doubles as the prefill: edits only touch the last
            # position, so the KV cache of every earlier token is exact. Keep it minus the last token, and
            # generate recomputes that one token with edits: one extra token instead of one extra prompt pass.
            reuse = generate_kwargs is not None and self._can_reuse_prefill(input_ids, generate_kwargs)
            queries, cache = self._read_prompt(input_ids, attention_mask, inputs_embeds, layers, keep_cache=reuse)
            if reuse and hasattr(cache, "crop"):
                cache.crop(-1)  # a negative count removes that many tokens in every transformers version
                generate_kwargs[CACHE_NAMES[0]] = cache
            masks = self._per_query_masks(active, queries)
        plans: dict[int, list[tuple]] = {}
        for axis in active:
            name = axis["name"]
            for layer in axis["layers"]:
                strength = strengths[name]
                dir_mask = None
                if masks is not None:
                    layer_mask, dir_mask = masks[name][layer]
                    strength = strength * layer_mask
                    if not bool(strength.abs().sum() > 0):
                        continue
                plans.setdefault(layer, []).append(
                    (self._directions[name][layer], self._scales[name][layer], axis["rule"], dir_mask, strength)
                )
        session = _Session(plans, self.config.positions, self.config.composition, rows)
        handles = [self.base.register_forward_pre_hook(self._positions_hook, with_kwargs=True)]
        for layer in plans:
            module = hook_module(self._decoder_layers[layer], self.config.hook_point, layer)
            handles.append(module.register_forward_hook(self._make_edit_hook(layer)))
        self._session = session
        try:
            yield
        finally:
            self._session = None
            for handle in handles:
                handle.remove()

    def _apply_gates(self, strengths: dict[str, torch.Tensor], input_ids, attention_mask) -> None:
        """Zero the strength of a gated axis on the rows whose self-judged rating is not above its threshold."""
        judged: dict[str, torch.Tensor] = {}  # axes sharing a judge prompt share one judge pass
        for axis in self.config.axes:
            gate, name = axis.get("gate"), axis["name"]
            if not gate or not bool(strengths[name].abs().sum() > 0):
                continue
            key = json.dumps({k: gate[k] for k in GATE_TOKEN_FIELDS})
            if key not in judged:
                judged[key] = self.judge(gate, input_ids, attention_mask)
            strengths[name] = strengths[name] * (judged[key] > gate["threshold"]).float()

    def _positions_hook(self, module, args, kwargs):
        session = self._session
        if session is None or session.positions == "all":
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        reference = ids if ids is not None else kwargs.get("inputs_embeds")
        q_len = reference.shape[1] if reference is not None and reference.dim() >= 2 else 1
        session.gather = last_positions(kwargs.get("attention_mask"), q_len)
        return None

    def _make_edit_hook(self, layer: int):
        def hook(module, args, output):
            session = self._session
            if session is None:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            edits = session.edits_for(layer, hidden.shape[0], hidden.device)
            # Edit in place when no graph is recorded (generation); with gradients, work on a copy.
            edited = hidden if not torch.is_grad_enabled() or session.positions == "all" else hidden.clone()
            if session.positions == "all":  # builds a new tensor: no copy needed
                flat = edited.reshape(-1, edited.shape[-1])
                per_pos = [
                    (
                        d,
                        s,
                        r,
                        None if m is None else m.repeat_interleave(edited.shape[1], 0),
                        w.repeat_interleave(edited.shape[1]),
                    )
                    for d, s, r, m, w in edits
                ]
                new = compose(flat.float(), per_pos, session.composition)
                edited = new.to(hidden.dtype).reshape(hidden.shape)
            elif session.gather is None:
                edited[:, -1, :] = compose(edited[:, -1, :].float(), edits, session.composition).to(hidden.dtype)
            else:
                rows = torch.arange(edited.shape[0], device=edited.device)
                cols = session.gather.to(edited.device)
                if cols.shape[0] != edited.shape[0]:
                    cols = cols.repeat_interleave(edited.shape[0] // cols.shape[0])
                edited[rows, cols, :] = compose(edited[rows, cols, :].float(), edits, session.composition).to(
                    hidden.dtype
                )
            if isinstance(output, tuple):
                return (edited,) + tuple(output[1:])
            return edited

        return hook

    @torch.no_grad()
    def query_embeddings(
        self,
        input_ids=None,
        attention_mask=None,
        inputs_embeds=None,
        layers: Sequence[int] | None = None,
        last_k: int | torch.Tensor = 1,
    ) -> dict[int, torch.Tensor]:
        """Unedited hook-point outputs at each row's last real token, ``{layer: Tensor[rows, d]}`` (float32).

        ``last_k`` (an int, or one count per row) averages over each row's last k real tokens instead.
        """
        return self._read_prompt(input_ids, attention_mask, inputs_embeds, layers, last_k)[0]

    @torch.no_grad()
    def _read_prompt(self, input_ids, attention_mask, inputs_embeds, layers, last_k=1, keep_cache=False):
        """One unedited pass over the prompt: per-layer read-outs and, if asked, the KV cache it built."""
        layers = list(range(len(self._decoder_layers))) if layers is None else list(layers)
        found: dict[int, torch.Tensor] = {}
        reference = input_ids if input_ids is not None else inputs_embeds
        gather = last_positions(attention_mask, reference.shape[1])
        window = None
        if not (isinstance(last_k, int) and last_k == 1):
            rows, q_len = reference.shape[0], reference.shape[1]
            last = gather.cpu() if gather is not None else torch.full((rows,), q_len - 1, dtype=torch.long)
            counts = torch.as_tensor(last_k, dtype=torch.long).expand(rows).clamp_min(1)
            offsets = torch.arange(int(counts.max()))
            index = last[:, None] - offsets[None, :]
            # Only real tokens count: not before the sequence, not padding, not beyond the row's own k.
            valid = (index >= 0) & (offsets[None, :] < counts[:, None])
            index = index.clamp_min(0)
            if attention_mask is not None and attention_mask.dim() == 2:
                valid &= attention_mask[:, -q_len:].cpu().gather(1, index).bool()
            window = (index, valid.float())

        def recorder(layer):
            def hook(module, args, output):
                hidden = output[0] if isinstance(output, tuple) else output
                if window is not None:
                    index, weight = (t.to(hidden.device) for t in window)
                    picked = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1])).float()
                    found[layer] = (picked * weight[..., None]).sum(1) / weight.sum(1, keepdim=True).clamp_min(1)
                elif gather is None:
                    found[layer] = hidden[:, -1, :].float()
                else:
                    found[layer] = hidden[
                        torch.arange(hidden.shape[0], device=hidden.device), gather.to(hidden.device)
                    ].float()

            return hook

        handles = [
            hook_module(self._decoder_layers[i], self.config.hook_point, i).register_forward_hook(recorder(i))
            for i in layers
        ]
        try:
            with self.steering_disabled():
                out = self.base(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    inputs_embeds=inputs_embeds,
                    position_ids=_position_ids(attention_mask),
                    use_cache=keep_cache,
                )
        finally:
            for handle in handles:
                handle.remove()
        cache = next((out[name] for name in CACHE_NAMES if name in out), None) if keep_cache else None
        return {i: found[i].cpu() for i in layers}, cache

    def _per_query_masks(self, active, queries: dict[int, torch.Tensor]):
        masks = {}
        for axis in active:
            name = axis["name"]
            dir_masks, scores = {}, {}
            for layer in axis["layers"]:
                directions = self._directions[name][layer]
                dir_masks[layer] = query_direction_mask(queries[layer], directions)
                scores[layer] = layer_scores(queries[layer], directions, dir_masks[layer])
            chosen = top_n_layers(scores, self.config.top_n)
            masks[name] = {layer: (chosen[layer], dir_masks[layer]) for layer in axis["layers"]}
        return masks

    # ------------------------------------------------------------------ saving
    def push_to_hub(self, repo_id: str, **kwargs: Any):
        """Upload this pack with a model card to the Hub (see ``alignez_hf.hub.push_pack`` for the options)."""
        # Imported here, inside try/except, so the file still loads as remote code where alignez_hf is absent:
        # transformers' dynamic-module scan skips imports within try blocks.
        try:
            from alignez_hf.hub import push_pack
        except ImportError as err:
            raise ImportError(
                "Pushing a steering pack needs the alignez-hf package (pip install alignez-hf); loading one does not."
            ) from err
        return push_pack(self, repo_id, **kwargs)

    def steering_state_dict(self) -> dict[str, torch.Tensor]:
        """All steering tensors under ``{axis}.layers.{layer}.{directions|scales}`` and ``{axis}.stats.{name}``."""
        tensors = {}
        for name in self.config.axis_names:
            for layer, directions in self._directions[name].items():
                tensors[f"{name}.layers.{layer}.directions"] = directions.contiguous()
                tensors[f"{name}.layers.{layer}.scales"] = self._scales[name][layer].contiguous()
            for stat, value in self._stats[name].items():
                tensors[f"{name}.stats.{stat}"] = value.contiguous()
        return tensors

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        include_base: bool = False,
        push_to_hub: bool = False,
        **kwargs,
    ) -> None:
        """Write a steering pack (config, ``steering.safetensors``, tokenizer, runtime code) atomically.

        With ``include_base=True`` the base model's weights are bundled in a ``base/`` subfolder.
        """
        if push_to_hub:
            raise ValueError("Use model.push_to_hub(repo_id) to upload a pack.")
        if not self.config.axes:
            raise ValueError("This model has no steering axes to save; add one with add_axis() first.")
        target = Path(save_directory)
        if target.exists() and not target.is_dir():
            raise NotADirectoryError(f"{target} exists and is not a folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a saved pack is an ordinary folder
        try:
            self._write_pack(staging, include_base, kwargs)
            _publish(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _write_pack(self, folder: Path, include_base: bool, kwargs: dict) -> None:
        config = self.config
        config.architectures = [type(self).__name__]
        config.auto_map = {
            "AutoConfig": "configuration_alignez.AlignEZConfig",
            "AutoModelForCausalLM": "modeling_alignez.AlignEZForCausalLM",
        }
        config.bundled_base = BUNDLED_BASE_FOLDER if include_base else None
        config.save_pretrained(folder)
        save_file(self.steering_state_dict(), str(folder / STEERING_FILE), metadata={"format": "pt", "alignez": "1"})
        (folder / STEERING_FILE).chmod(0o666 & ~_umask())  # safetensors writes it private
        if self.generation_config is not None:
            self.generation_config.save_pretrained(folder)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)
        here = Path(__file__).parent
        for name in RUNTIME_FILES:
            shutil.copyfile(here / name, folder / name)
        if include_base:
            self.base.save_pretrained(folder / BUNDLED_BASE_FOLDER, **kwargs)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(folder / BUNDLED_BASE_FOLDER)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        config: AlignEZConfig | None = None,
        base_model: PreTrainedModel | None = None,
        base_model_name_or_path: str | None = None,
        base_model_revision: str | None = None,
        **kwargs,
    ) -> AlignEZForCausalLM:
        """Load a pack (or bundle): its base model by recorded id and revision, then the steering tensors.

        Usual loading kwargs (``dtype``, ``device_map``, ``token``, ``cache_dir``, ...) go to the base; ``revision``
        and ``subfolder`` pin the pack. ``base_model`` attaches the pack to an already loaded model instead.
        """
        source = str(pretrained_model_name_or_path)
        revision = kwargs.pop("revision", None)
        subfolder = kwargs.pop("subfolder", "") or ""
        kwargs.pop("trust_remote_code", None)
        for ignored in ("_from_auto", "_from_pipeline", "_commit_hash", "adapter_kwargs", "use_safetensors"):
            kwargs.pop(ignored, None)
        hub = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        if config is None:
            config = AlignEZConfig.from_pretrained(source, revision=revision, subfolder=subfolder, **hub)
        elif not isinstance(config, AlignEZConfig):
            raise TypeError(
                f"{source} is not an AlignEZ steering pack (its config is {type(config).__name__}); "
                "build one with `alignez build` or AlignEZForCausalLM.from_base()."
            )
        if not config.axes and not config.base_model_name_or_path:
            raise TypeError(
                f"{source} is not an AlignEZ steering pack (its config.json names no base model and no axes); "
                "build one with `alignez build` or AlignEZForCausalLM.from_base()."
            )
        steering_path = _pack_file(source, STEERING_FILE, revision, subfolder, hub)
        tensors = _load_steering(steering_path, source)
        if base_model is None:
            bundled = getattr(config, "bundled_base", None)
            if bundled:
                base_source, base_kwargs = (
                    source,
                    {"revision": revision, "subfolder": f"{subfolder}/{bundled}".strip("/")},
                )
            else:
                resolved = (
                    None if base_model_name_or_path else next(filter(None, (r(config) for r in BASE_RESOLVERS)), None)
                )
                base_source = base_model_name_or_path or resolved or config.base_model_name_or_path
                if not base_source:
                    raise ValueError(f"The pack {source} does not name its base model; pass base_model_name_or_path=.")
                base_kwargs = {"revision": base_model_revision or config.base_model_revision}
                if (base_model_name_or_path and not base_model_revision) or resolved:
                    base_kwargs = {}
            base_kwargs = {k: v for k, v in base_kwargs.items() if v}
            try:
                base_model = AutoModelForCausalLM.from_pretrained(base_source, *model_args, **base_kwargs, **kwargs)
            except OSError as err:
                raise OSError(
                    f"Could not load the base model {base_source!r} (revision {base_kwargs.get('revision')}) named by "
                    f"the steering pack {source}: {err}\nIf the base lives elsewhere, pass base_model_name_or_path=."
                ) from err
        model = cls(config, base=base_model)
        model._load_steering_tensors(tensors, source)
        model.name_or_path = source
        model.eval()
        return model

    def _load_steering_tensors(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        fp = self.config.base_fingerprint
        names = set(self.config.axis_names)
        by_axis: dict[str, dict] = {n: {"directions": {}, "scales": {}, "stats": {}} for n in names}
        for key, value in tensors.items():
            parts = key.split(".")
            if parts[0] not in names:
                raise ValueError(
                    f"{STEERING_FILE} in {source} holds tensor {key!r} for an axis that config.json does not list "
                    f"(listed: {', '.join(sorted(names)) or 'none'}); the pack is inconsistent."
                )
            if len(parts) == 4 and parts[1] == "layers" and parts[3] in ("directions", "scales"):
                by_axis[parts[0]][parts[3]][int(parts[2])] = value
            elif len(parts) >= 3 and parts[1] == "stats":
                by_axis[parts[0]]["stats"][".".join(parts[2:])] = value
            else:
                raise ValueError(f"{STEERING_FILE} in {source} holds an unexpected tensor {key!r}.")
        for axis in self.config.axes:
            name, found = axis["name"], by_axis[axis["name"]]
            missing = sorted(set(axis["layers"]) - set(found["directions"]))
            if missing or set(found["directions"]) != set(found["scales"]):
                raise ValueError(
                    f"{STEERING_FILE} in {source} lacks tensors of axis {name!r} for layers {missing or 'scales'}; "
                    "the pack is incomplete: rebuild or re-download it."
                )
            for layer, tensor in found["directions"].items():
                _check_directions(name, layer, tensor, fp["hidden_size"], fp["num_hidden_layers"])
                scales = found["scales"][layer]
                if scales.shape != (tensor.shape[0],) or not bool(torch.isfinite(scales).all()):
                    raise ValueError(
                        f"Axis {name!r}, layer {layer}: scales have shape {tuple(scales.shape)} or non-finite values."
                    )
            self._directions[name] = {k: v.float() for k, v in found["directions"].items()}
            self._scales[name] = {k: v.float() for k, v in found["scales"].items()}
            self._stats[name] = found["stats"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _position_ids(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Positions as generate() computes them for left-padded rows, so a separate prompt pass matches it."""
    if attention_mask is None or attention_mask.dim() != 2:
        return None
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def _check_fingerprint(config: AlignEZConfig, base_config) -> None:
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


def _check_directions(name: str, layer: int, tensor, hidden: int, num_layers: int) -> torch.Tensor:
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


def _pack_file(source: str, filename: str, revision, subfolder: str, hub: dict) -> str:
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


def _load_steering(path: str, source: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"{STEERING_FILE} of the steering pack {source} cannot be read ({err}); it is truncated or corrupt. "
            "Re-download the pack (force_download=True) or rebuild it."
        ) from err


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
