"""Finding the decoder layers and the module a hook edits (runtime/layers.py)."""

import pytest
from torch import nn

from alignez_hf import AlignEZForCausalLM
from alignez_hf.runtime.layers import find_decoder_layers, hook_module


@pytest.mark.parametrize(
    ("family", "path"), [("tiny_llama", "model.layers"), ("tiny_gpt2", "transformer.h"), ("tiny_qwen2", "model.layers")]
)
def test_known_paths(family, path, request):
    model = request.getfixturevalue(family)
    found, layers = find_decoder_layers(model, model.config.num_hidden_layers)
    assert found == path and len(layers) == model.config.num_hidden_layers


def test_an_unknown_layout_is_found_by_size(tiny_llama):
    class Wrapper(nn.Module):
        def __init__(self, layers):
            super().__init__()
            self.trunk = nn.ModuleDict({"blocks": layers, "head": nn.ModuleList([nn.Linear(2, 2)])})

    wrapped = Wrapper(tiny_llama.model.layers)
    path, layers = find_decoder_layers(wrapped, 4)
    assert path == "trunk.blocks" and layers is tiny_llama.model.layers
    wrapped.trunk["copy"] = nn.ModuleList(list(tiny_llama.model.layers))  # two lists of 4: ambiguous
    with pytest.raises(ValueError, match="layers_path='dotted.path'"):
        find_decoder_layers(wrapped, 4)
    path, _ = find_decoder_layers(wrapped, 4, "trunk.copy")
    assert path == "trunk.copy"


def test_layers_that_cannot_be_found_get_a_clear_error(tiny_llama):
    with pytest.raises(ValueError, match="layers_path="):
        AlignEZForCausalLM.from_base(tiny_llama, layers_path="model.blocks")
    # a module list hidden under an unusual name is found by its length, or named explicitly
    tiny_llama.model.blocks = tiny_llama.model.layers
    model = AlignEZForCausalLM.from_base(tiny_llama, layers_path="model.blocks")
    assert model.config.layers_path == "model.blocks"


def test_hook_module_is_the_layer_or_its_mlp(tiny_llama, tiny_gpt2):
    layer = tiny_llama.model.layers[0]
    assert hook_module(layer, "residual", 0) is layer and hook_module(layer, "mlp", 0) is layer.mlp
    assert hook_module(tiny_gpt2.transformer.h[0], "mlp", 0) is tiny_gpt2.transformer.h[0].mlp
    with pytest.raises(ValueError, match="use hook_point='residual'"):
        hook_module(nn.Linear(2, 2), "mlp", 3)
