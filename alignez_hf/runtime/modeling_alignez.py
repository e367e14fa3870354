"""AlignEZForCausalLM: a base causal LM plus steering subspaces, edited by hooks inside forward() and generate().

The facade of the runtime. The files of this folder import only each other (single-dot imports), torch,
transformers and safetensors, so a pack ships them as remote code: axes.py (the axis registry), plan.py (the
engine-neutral steering plan), hooks.py (the transformers hook adapter), serialization.py (pack files), edits.py,
gates.py, layers.py, positions.py, constants.py and configuration_alignez.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel

from .adapters import adapter_fields, check_adapter, inner_model, is_peft_model
from .atomic import save_atomically
from .axes import AxisRegistry, AxisView
from .configuration_alignez import AlignEZConfig, base_fingerprint, check_fingerprint
from .constants import CONFIG_FILE, HUB_KWARGS, STEERING_FILE
from .errors import AlignEZError, GateError, NotAPackError, pack_error, reason
from .files import check_pack_file
from .gates import (
    CACHE_NAMES,
    PREFILL_POOLINGS,
    apply_gates,
    check_gate,
    condition_scores,
    judge,
    prefill_fires,
    reading_conditions,
)
from .hooks import EditHooks, can_reuse_prefill, read_prompt
from .layers import find_decoder_layers
from .merge import merge_pack
from .options import SteeringOptions
from .plan import Steering, build_plan, check_strength, per_query_masks, resolve_strengths
from .positions import check_start, prompt_mask
from .serialization import (
    load_base,
    load_tokenizer,
    pack_file,
    read_steering,
    write_pack,
)


class AlignEZForCausalLM(SteeringOptions, PreTrainedModel, GenerationMixin):
    """A causal LM whose hidden states are edited along saved steering subspaces during forward and generate."""

    config_class = AlignEZConfig
    base_model_prefix = "base"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, config: AlignEZConfig, base_model: PreTrainedModel | None = None, tokenizer=None):
        super().__init__(config)
        if base_model is None:
            raise ValueError(
                "AlignEZForCausalLM needs a base model: use AlignEZForCausalLM.from_pretrained(pack) or "
                "AlignEZForCausalLM.from_base(base_model)."
            )
        self.base = base_model
        self.tokenizer = tokenizer
        check_fingerprint(config, base_model.config)
        check_adapter(config, base_model)
        num_layers = config.base_fingerprint.get("num_hidden_layers")
        path, self._decoder_layers = find_decoder_layers(inner_model(base_model), num_layers, config.layers_path)
        config.layers_path = path
        self._registry = AxisRegistry(config)
        self._disabled = False
        self._active = False  # a steering call is running (its hooks are in place)
        self._overrides: list[dict[str, Any]] = []
        if getattr(base_model, "generation_config", None) is not None:
            self.generation_config = base_model.generation_config
        self.post_init()

    # PreTrainedModel would re-initialise the base's weights; they are already trained.
    def init_weights(self):
        pass

    def _init_weights(self, module):
        pass

    # ------------------------------------------------------------------ axes
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
        base_adapter_name_or_path: str | None = None,
        base_adapter_revision: str | None = None,
    ) -> AlignEZForCausalLM:
        """Wrap a loaded causal LM or PeftModel (base + adapter: adapters.py) with no axes; add them by ``add_axis``."""
        if not isinstance(base_model, PreTrainedModel) and not is_peft_model(base_model):
            raise TypeError(f"base_model must be a PreTrainedModel or PeftModel, got {type(base_model).__name__}.")
        config = AlignEZConfig(
            base_model_name_or_path=base_model_name_or_path or base_model.config.name_or_path or None,
            base_model_revision=base_model_revision,
            base_fingerprint=base_fingerprint(base_model.config),
            hook_point=hook_point,
            layers_path=layers_path,
            layer_policy=layer_policy,
            top_n=top_n,
            positions=positions,
            composition=composition,
            **adapter_fields(base_model, base_adapter_name_or_path, base_adapter_revision),
        )
        return cls(config, base_model=base_model, tokenizer=tokenizer)

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
        gate: Mapping[str, Any] | None = None,
        replace: bool = False,
        **metadata: Any,
    ) -> None:
        """Add a steering axis from per-layer directions ``{layer: Tensor[k, d] or Tensor[d]}``.

        Directions are stored as unit rows; for the ``additive`` rule their norms become the push sizes unless
        ``scales`` gives them. ``gate`` is a self-judged gate (``gates.py``); ``stats`` holds extra tensors saved
        with the pack; ``metadata`` (JSON) is kept in the axis entry and shown by ``model.axes[name].metadata``.
        """
        self._registry.add(
            name,
            directions,
            rule,
            strength,
            scales=scales,
            positive=positive,
            negative=negative,
            stats=stats,
            gate=gate,
            replace=replace,
            metadata=metadata,
        )

    def remove_axis(self, name: str) -> None:
        """Remove a steering axis."""
        self._registry.remove(name)

    @contextlib.contextmanager
    def temporary_axis(self, name: str, directions: Mapping[int, torch.Tensor], **kwargs: Any) -> Iterator[str]:
        """An axis that exists only inside the block (``add_axis`` arguments); yields its name."""
        self.add_axis(name, directions, **kwargs)
        try:
            yield name
        finally:
            self.remove_axis(name)

    @contextlib.contextmanager
    def random_control(self, axis: str, seed: int = 0, name: str | None = None) -> Iterator[str]:
        """A temporary axis of the same size as ``axis`` along random orthonormal directions: same layers, ranks,
        push sizes, rule and gate, default strength 0. Yields its name; the noise floor of any effect of ``axis``."""
        view = self.axes[axis]
        name = name or f"random_control_{axis}"
        scales = self._registry.tensors(axis)["scales"]
        directions = self._registry.random_like(axis, seed)
        gate = dict(view.gate) if view.gate is not None else None
        with self.temporary_axis(
            name,
            directions,
            rule=self.effective_rule(axis),
            strength=0.0,
            scales=scales,
            gate=gate,
            random_control_of=axis,
            seed=seed,
        ):
            yield name

    @property
    def axes(self) -> Mapping[str, AxisView]:
        """Read-only view of the axes, by name."""
        return MappingProxyType({name: self._registry.view(name) for name in self._registry.names})

    def axis_tensors(self, name: str) -> dict[str, dict]:
        """Copies of one axis's stored tensors: ``directions``, ``scales`` (per layer) and ``stats``."""
        return self._registry.tensors(name)

    def update_axis_metadata(self, name: str, **metadata: Any) -> None:
        """Set JSON metadata keys of an axis (as ``add_axis(**metadata)`` does), e.g. the builder's report."""
        self._registry.update_metadata(name, metadata)

    def set_strength(self, name: str, value: float) -> None:
        """Set the default strength of one axis (0 turns it off)."""
        self._registry.entry(name)["strength"] = check_strength(name, value)

    def set_gate(self, name: str, gate: Mapping[str, Any] | None) -> None:
        """Put a gate on an axis (the builder makes them; see ``gates.py``), or remove it with ``None``.

        A prefill gate's dict carries its tensors: ``{"kind": "prefill", "layer", "pooling", "comparison",
        "threshold", "direction": Tensor[d], "mean": Tensor[d]}`` (without them, the axis's current ones are kept).
        """
        self._registry.set_gate(name, gate, self._vocab_size())

    def set_gate_threshold(self, name: str, value: float) -> None:
        """Move the threshold of an axis's gate (``set_gate(name, None)`` removes the gate)."""
        gate = self._registry.entry(name).get("gate")
        if not gate:
            raise ValueError(f"Axis {name!r} has no gate; build it with a gate (AlignEZBuilder(gate=True)) first.")
        self.set_gate(name, {**gate, "threshold": value})

    def gate_scores(self, name: str, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """What the gate of axis ``name`` compares with its threshold, per prompt (``Tensor[rows]``, float32, CPU):
        the model's own 0-9 rating (self_judge), or ``cos(h - mean, direction)`` of the prompt's state (prefill)."""
        gate = self._registry.entry(name).get("gate")
        if not gate:
            raise ValueError(f"Axis {name!r} has no gate.")
        check_gate(name, gate, self._vocab_size())
        if gate["kind"] == "prefill":
            states = self.prompt_states(input_ids, attention_mask, layers=[gate["layer"]], pooling=gate["pooling"])
            return condition_scores(states[gate["layer"]], self._registry.gate_tensors[name])
        return self._judge(gate, input_ids, attention_mask)

    @torch.no_grad()
    def prompt_states(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        layers: Sequence[int] | None = None,
        pooling: str = "last",
    ) -> dict[int, torch.Tensor]:
        """Unedited decoder-layer outputs pooled as a prefill gate reads them: ``{layer: Tensor[rows, d]}`` (float32,
        CPU). ``pooling``: ``"last"`` (each row's last real token) or ``"mean"`` (the mean over its real tokens).

        One pass over the prompts that stops after the deepest layer asked for (the head never runs).
        """
        if pooling not in PREFILL_POOLINGS:
            raise ValueError(f"pooling must be one of {PREFILL_POOLINGS}, got {pooling!r}.")
        if input_ids is None and inputs_embeds is None:
            raise ValueError("prompt_states reads the prompt: pass input_ids or inputs_embeds.")
        layers = range(len(self._decoder_layers)) if layers is None else [int(layer) for layer in layers]
        reads = [(layer, pooling) for layer in layers]
        with self.steering_disabled(), reading_conditions(self._decoder_layers, reads, attention_mask, True) as found:
            read_prompt(self.base, self._decoder_layers, "residual", [], input_ids, attention_mask, inputs_embeds)
        return {layer: found[(layer, pooling)] for layer in layers}

    def _vocab_size(self) -> int:
        return self.base.get_input_embeddings().weight.shape[0]

    def _judge(self, gate, input_ids, attention_mask):
        with self.steering_disabled():
            return judge(self.base, gate, input_ids, attention_mask)

    # ------------------------------------------------------------------ running
    def forward(self, *args, steering: Steering = None, steering_from=None, **kwargs):
        """The base model's forward, with hidden states edited as configured (``steering`` overrides strengths).

        ``steering_from`` (an int, or one per row) scores given text as generation would have made it: each row is
        edited at every column from that one on (the prompt's last token, i.e. its length minus 1), and gates and
        the per-query policy read only the prompt before it. Without it a forward pass edits by the pack's
        ``positions`` rule (``"last"``: only each row's last real token). Log-likelihoods of a continuation (DPO,
        lm-eval's multiple choice) need ``steering_from``: :mod:`alignez_hf.evaluation.lmeval` passes it.
        """
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        with self._steering(
            steering, input_ids, kwargs.get("attention_mask"), kwargs.get("inputs_embeds"), start=steering_from
        ):
            return self.base(*args, **kwargs)

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, steering: Steering = None, **kwargs):
        """``generate`` of the base model with steering; ``steering`` is a dict of strengths or one dict per row."""
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        mask, embeds = kwargs.get("attention_mask"), kwargs.get("inputs_embeds")
        with self._steering(steering, input_ids, mask, embeds, generate_kwargs=kwargs):
            return self.base.generate(inputs, **kwargs)

    def prepare_inputs_for_generation(self, *args, **kwargs):
        return self.base.prepare_inputs_for_generation(*args, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        return self.base.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module | None:
        return self.base.get_output_embeddings()

    @contextlib.contextmanager
    def _steering(
        self, steering, input_ids, attention_mask, inputs_embeds, generate_kwargs=None, start=None
    ) -> Iterator[None]:
        """Plan the call (strengths, gates, per-query layers) and keep its hooks in place for the block.

        ``start`` (forward's ``steering_from``): edit each row from that column on; what reads the prompt reads
        only the columns up to it.
        """
        if self._active:  # nested call (e.g. forward inside our own generate): the hooks are in place already
            yield
            return
        reference = input_ids if input_ids is not None else inputs_embeds
        rows = 1 if reference is None or reference.dim() < 2 else reference.shape[0]
        if start is not None:
            if reference is None or reference.dim() < 2:
                raise ValueError("steering_from names columns of the input: pass input_ids or inputs_embeds.")
            start = check_start(start, rows, reference.shape[1])
            attention_mask = prompt_mask(attention_mask, start, reference.shape[1])  # for the readers below only
        names = self._registry.names
        strengths = resolve_strengths(steering, {n: self._registry.entry(n)["strength"] for n in names}, rows)
        if self._disabled or not any(bool(s.any()) for s in strengths.values()):
            yield
            return
        gates = {n: self._registry.entry(n)["gate"] for n in names if self._registry.entry(n).get("gate")}
        for name, gate in gates.items():  # a few dozen token ids each: cheap, and never an IndexError in the judge
            check_gate(name, gate, self._vocab_size())
        apply_gates(strengths, gates, lambda gate: self._judge(gate, input_ids, attention_mask))
        # Prefill gates (and the per-query policy) read the unedited prompt: one pass for all of them.
        conditions = {
            n: g for n, g in gates.items() if g["kind"] == "prefill" and bool(strengths[n].any())
        }  # fmt: skip
        hook_point, masks, queries = self.steering_option("hook_point"), None, None
        per_query = self.steering_option("layer_policy") == "per_query"
        layers = sorted(
            {layer for n in names if bool(strengths[n].any()) for layer in self._registry.directions[n]}
        ) if per_query else []  # fmt: skip
        if conditions or layers:
            if reference is None:
                raise ValueError(
                    "Prefill gates and the per-query layer policy read the prompt; pass input_ids or inputs_embeds."
                )
            # In generate, the unedited pass over the prompt doubles as the prefill: edits only touch the last
            # position, so the KV cache of every earlier token is exact. Keep it minus the last token, and
            # generate recomputes that one token with edits: one extra token instead of one extra prompt pass.
            # Without that (forward, beams, ...) a pass only for gates stops after the deepest gate layer.
            reuse = generate_kwargs is not None and can_reuse_prefill(
                input_ids, generate_kwargs, self.generation_config, self.steering_option("positions")
            )
            reads = [(g["layer"], g["pooling"]) for g in conditions.values()]
            with reading_conditions(self._decoder_layers, reads, attention_mask, stop=not (reuse or layers)) as found:
                queries, cache = read_prompt(
                    self.base, self._decoder_layers, hook_point, layers, input_ids, attention_mask, inputs_embeds,
                    keep_cache=reuse,
                )  # fmt: skip
            if reuse and hasattr(cache, "crop"):
                cache.crop(-1)  # a negative count removes that many tokens in every transformers version
                generate_kwargs[CACHE_NAMES[0]] = cache
            for name, gate in conditions.items():
                scores = condition_scores(found[(gate["layer"], gate["pooling"])], self._registry.gate_tensors[name])
                strengths[name] = strengths[name] * prefill_fires(gate, scores).to(strengths[name].dtype)
        axes = [self._registry.edit(n, self.effective_rule(n)) for n in names if bool(strengths[n].any())]
        if not axes:
            yield
            return
        if per_query:
            masks = per_query_masks(axes, queries, self.steering_option("top_n"))
        plan = build_plan(
            axes,
            strengths,
            rows,
            composition=self.steering_option("composition"),
            positions=self.steering_option("positions"),
            masks=masks,
        )
        self._active = True
        try:
            with EditHooks(inner_model(self.base), self._decoder_layers, hook_point, plan, start=start):
                yield
        finally:
            self._active = False

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
        layers = range(len(self._decoder_layers)) if layers is None else layers
        hook_point = self.steering_option("hook_point")
        found, _ = read_prompt(
            self.base, self._decoder_layers, hook_point, list(layers), input_ids, attention_mask, inputs_embeds, last_k
        )
        return found

    def merge_and_unload(self, steering: Mapping[str, float] | None = None) -> PreTrainedModel:
        """Fold the pack into its base model's weights and return the base: a plain transformers model.

        The push of each edited layer (at the default strengths, or ``steering``) becomes a bias on that layer's
        MLP output, so the result steers on any engine with no hooks. As with PEFT the base is changed in place.
        Only static, ungated, additive packs on Llama- or GPT-2-style bases fold; the merged model edits every
        position (docs/serving.md).
        """
        return merge_pack(self, steering)

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
        return self._registry.state_dict()

    def save_pretrained(
        self, save_directory: str | os.PathLike, include_base: bool = False, push_to_hub: bool = False, **kwargs
    ) -> None:
        """Write a steering pack (config, ``steering.safetensors``, tokenizer, runtime code) atomically.

        With ``include_base=True`` the base model's weights are bundled in a ``base/`` subfolder.
        """
        if push_to_hub:
            raise ValueError("Use model.push_to_hub(repo_id) to upload a pack.")
        if not self.config.axes:
            raise ValueError("This model has no steering axes to save; add one with add_axis() first.")
        save_atomically(Path(save_directory), lambda folder: write_pack(self, folder, include_base, **kwargs))

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

        Usual loading kwargs (``dtype``, ``device_map``, ``token``, ``cache_dir``, ``trust_remote_code`` ...) go to
        the base (a base whose code lives in its repo runs only with ``trust_remote_code=True``); ``revision``
        and ``subfolder`` pin the pack. ``base_model`` attaches the pack to an already loaded model instead. The
        pack's tokenizer, when it has one, is attached as ``model.tokenizer``. A pack on a PEFT adapter loads it on the
        base (``base_adapter_name_or_path=`` and ``base_adapter_revision=`` override the recorded one; adapters.py).
        """
        source = str(pretrained_model_name_or_path)
        revision = kwargs.pop("revision", None)
        subfolder = kwargs.pop("subfolder", "") or ""
        # trust_remote_code stays in kwargs: the user's own choice goes on to the base, never a default of True.
        for ignored in ("_from_auto", "_from_pipeline", "_commit_hash", "adapter_kwargs", "use_safetensors"):
            kwargs.pop(ignored, None)
        hub = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        # Before anything reads config.json: a download is checked against its ETag, a local one must be a regular
        # file inside the folder, and either must be of a sane size (files.py).
        if config is None or not os.path.isdir(source):
            check_pack_file(pack_file(source, CONFIG_FILE, revision, subfolder, hub), CONFIG_FILE, source)
        if config is None:
            config = AlignEZConfig.from_pretrained(source, revision=revision, subfolder=subfolder, **hub)
        elif not isinstance(config, AlignEZConfig) and getattr(config, "model_type", None) == AlignEZConfig.model_type:
            # The same class loaded twice (remote code puts the config and model files in different dynamic
            # modules; or the package next to a pack's remote copy): take its fields, not its identity.
            config = AlignEZConfig.from_dict(config.to_dict())
        elif not isinstance(config, AlignEZConfig):
            raise NotAPackError(
                f"{source} is not an AlignEZ steering pack (its config is {type(config).__name__}); "
                "build one with `alignez build` or AlignEZForCausalLM.from_base()."
            )
        if not config.axes and not config.base_model_name_or_path:
            raise NotAPackError(
                f"{source} is not an AlignEZ steering pack (its config.json names no base model and no axes); "
                "build one with `alignez build` or AlignEZForCausalLM.from_base()."
            )
        tensors = read_steering(pack_file(source, STEERING_FILE, revision, subfolder, hub), source)
        if base_model is None:
            base_model = load_base(
                source, config, revision, subfolder, base_model_name_or_path, base_model_revision, *model_args, **kwargs
            )
        tokenizer = load_tokenizer(source, revision, subfolder, hub, base_model.config)
        try:
            model = cls(config, base_model=base_model, tokenizer=tokenizer)
            for axis in config.axes:
                if axis.get("gate") is not None:
                    check_gate(axis["name"], axis["gate"], model._vocab_size())
        except GateError as err:
            raise pack_error(CONFIG_FILE, source, str(err)) from err
        except AlignEZError:
            raise
        except Exception as err:  # e.g. a layers_path that names no layer list, a key that breaks the model class
            raise pack_error(CONFIG_FILE, source, reason(err)) from err
        model._registry.load_state_dict(tensors, source)
        model.name_or_path = source
        model.eval()
        return model
