"""Find the decoder layers of a causal LM and the module whose output a steering hook edits."""

from __future__ import annotations

from torch import nn

# Dotted paths of the decoder-layer list in the common transformers families, tried in order.
KNOWN_LAYER_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2, Gemma, Phi-3, SmolLM
    "model.language_model.layers",  # multimodal wrappers
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom
    "gpt_neox.layers",
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
    "transformer.layers",
    "backbone.layers",
)
MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe")


def _resolve(model: nn.Module, path: str) -> nn.Module | None:
    module = model
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def find_decoder_layers(model: nn.Module, num_layers: int | None, path: str | None = None) -> tuple[str, nn.ModuleList]:
    """Return the dotted path and the ``nn.ModuleList`` of decoder layers of ``model``."""
    if path:
        layers = _resolve(model, path)
        if not isinstance(layers, nn.ModuleList):
            raise ValueError(
                f"layers_path={path!r} does not name an nn.ModuleList in {type(model).__name__}; "
                "give the dotted path of its decoder layers, e.g. 'model.layers'."
            )
        return path, layers
    for candidate in KNOWN_LAYER_PATHS:
        layers = _resolve(model, candidate)
        if isinstance(layers, nn.ModuleList) and (num_layers is None or len(layers) == num_layers):
            return candidate, layers
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == num_layers]
    if len(lists) == 1:
        return lists[0]
    raise ValueError(
        f"Could not find the decoder layers of {type(model).__name__} (expected an nn.ModuleList of "
        f"{num_layers} layers). Name it with layers_path='dotted.path' (e.g. 'model.layers') in "
        "AlignEZForCausalLM.from_base(..., layers_path=...) or in the pack's config.json."
    )


def hook_module(layer: nn.Module, hook_point: str, index: int) -> nn.Module:
    """The module whose output is edited: the decoder layer itself (residual) or its MLP."""
    if hook_point == "residual":
        return layer
    for name in MLP_NAMES:
        module = getattr(layer, name, None)
        if isinstance(module, nn.Module):
            return module
    raise ValueError(
        f"Decoder layer {index} ({type(layer).__name__}) has no MLP sub-module named one of {MLP_NAMES}; "
        "use hook_point='residual'."
    )
