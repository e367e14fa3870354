"""Fold a static additive pack into its base model's weights: a bias on each edited layer's MLP output.

The merged checkpoint is a plain transformers model that any engine serves with no steering code. It edits
*every* position, where the pack edits the prompt's last token and each generated token only; see
docs/serving.md for what that does to the effect.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .adapters import merge_adapter
from .plan import build_plan, resolve_strengths

# Architectures whose MLP output is added straight to the residual stream, with the projection that carries the
# bias and the config switch that makes the checkpoint keep it (None: the projection always has a bias).
MERGEABLE = {
    "llama": ("down_proj", "mlp_bias"),
    "gpt2": ("c_proj", None),
}


def merge_refusal(config, gated: list[str], rules: Mapping[str, str]) -> str | None:
    """Why a pack cannot be folded into weights, or None when it can."""
    if config.layer_policy != "static":
        return "its layer policy is per-query (the layers change with every prompt); only a static pack has fixed edits"
    if gated:
        return f"axes {gated} are gated (they steer only prompts the model rates harmful); remove the gate first"
    other = sorted(name for name, rule in rules.items() if rule != "additive")
    if other:
        used = ", ".join(rules[n] for n in other)
        return f"axes {other} use rules that read the hidden state ({used}); only additive pushes are constant"
    model_type = config.base_fingerprint.get("model_type")
    if model_type not in MERGEABLE:
        return (
            f"the base is a {model_type!r} model; a merged push needs an MLP output projection whose bias the "
            f"checkpoint keeps ({', '.join(MERGEABLE)} only)"
        )
    return None


def fold_pushes(base_model: nn.Module, decoder_layers: nn.ModuleList, pushes: Mapping[int, torch.Tensor]) -> None:
    """Add each ``{layer: push [d]}`` to the bias of that layer's MLP output projection, in place."""
    model_type = base_model.config.model_type
    projection, switch = MERGEABLE[model_type]
    if switch is not None and not getattr(base_model.config, switch, False):
        # Every MLP projection of every layer gets a bias (zero), so the checkpoint loads as the same architecture.
        setattr(base_model.config, switch, True)
        for layer in decoder_layers:
            for module in layer.mlp.modules():
                if isinstance(module, nn.Linear) and module.bias is None:
                    module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=module.weight.dtype))
                    module.bias.data = module.bias.data.to(module.weight.device)
    for index, push in pushes.items():
        bias = getattr(decoder_layers[index].mlp, projection).bias
        with torch.no_grad():
            bias.add_(push.to(bias.device, torch.float32).to(bias.dtype))


def merge_pack(model, steering: Mapping[str, float] | None = None) -> nn.Module:
    """``AlignEZForCausalLM.merge_and_unload``: the base with the pack folded in, or a ValueError saying why not."""
    names = model._registry.names
    gated = [n for n in names if model._registry.entry(n).get("gate")]
    reason = merge_refusal(model.config, gated, {n: model.effective_rule(n) for n in names})
    defaults = {n: model._registry.entry(n)["strength"] for n in names}
    strengths = resolve_strengths(None if steering is None else dict(steering), defaults, 1)
    axes = [model._registry.edit(n) for n in names if bool(strengths[n].any())]
    plan = build_plan(axes, strengths, 1, composition=model.steering_option("composition"))
    if reason is None and any(edit.push is None for edit in plan.layers.values()):
        reason = "its 'paper' composition of several axes on one layer scales the hidden state"
    if reason is not None:
        raise ValueError(
            f"This steering pack cannot be merged into weights: {reason}. Serve it with AlignEZForCausalLM, or "
            "with vLLM through `alignez serve`, instead."
        )
    merge_adapter(model)  # a PEFT adapter under the pack is folded in first: the result is one plain checkpoint
    fold_pushes(model.base, model._decoder_layers, {layer: edit.push[0] for layer, edit in plan.layers.items()})
    return model.base
