"""Bad packs and bad bases fail loudly with errors that say what is wrong and what to do."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from alignez_hf import AlignEZForCausalLM


@pytest.fixture
def pack(tiny_llama, tiny_base_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AlignEZForCausalLM.from_base(AutoModelForCausalLM.from_pretrained(tiny_base_dir))
    torch.manual_seed(0)
    model.add_axis("cheerful", {1: torch.randn(2, 32), 2: torch.randn(32)})
    path = tmp_path / "pack"
    model.save_pretrained(path)
    return path


def _rewrite_tensors(pack, edit):
    tensors = load_file(pack / "steering.safetensors")
    edit(tensors)
    save_file(tensors, str(pack / "steering.safetensors"))


def test_fingerprint_mismatch_names_both(pack, tmp_path):
    other = GPT2LMHeadModel(GPT2Config(vocab_size=256, n_embd=48, n_layer=2, n_head=4))
    with pytest.raises(ValueError, match=r"hidden_size: pack 32 vs base 48.*num_hidden_layers: pack 4 vs base 2"):
        AlignEZForCausalLM.from_pretrained(pack, base_model=other)


def test_missing_steering_file(pack):
    (pack / "steering.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no steering.safetensors"):
        AlignEZForCausalLM.from_pretrained(pack)


def test_truncated_steering_file(pack):
    data = (pack / "steering.safetensors").read_bytes()
    (pack / "steering.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        AlignEZForCausalLM.from_pretrained(pack)


def test_wrong_shape_tensor(pack):
    _rewrite_tensors(pack, lambda t: t.__setitem__("cheerful.layers.1.directions", torch.randn(2, 16)))
    with pytest.raises(ValueError, match=r"layer 1: directions must have shape \[k, 32\]"):
        AlignEZForCausalLM.from_pretrained(pack)


def test_nan_directions(pack):
    def poison(tensors):
        tensors["cheerful.layers.2.directions"][0, 3] = float("inf")

    _rewrite_tensors(pack, poison)
    with pytest.raises(ValueError, match="layer 2: directions contain NaN or Inf"):
        AlignEZForCausalLM.from_pretrained(pack)


def test_missing_layer_tensors(pack):
    _rewrite_tensors(pack, lambda t: t.pop("cheerful.layers.2.directions"))
    with pytest.raises(ValueError, match=r"lacks tensors of axis 'cheerful' for layers \[2\]"):
        AlignEZForCausalLM.from_pretrained(pack)


def test_tensor_for_unknown_axis(pack):
    _rewrite_tensors(pack, lambda t: t.__setitem__("gloomy.layers.1.directions", torch.randn(1, 32)))
    with pytest.raises(ValueError, match="axis that config.json does not list"):
        AlignEZForCausalLM.from_pretrained(pack)


def test_bad_config_values(pack):
    config = json.loads((pack / "config.json").read_text())
    config["axes"][0]["strength"] = "strong"
    (pack / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="finite number"):
        AlignEZForCausalLM.from_pretrained(pack)
    config["axes"][0]["strength"] = 1.0
    config["hook_point"] = "attention"
    (pack / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="hook_point must be one of"):
        AlignEZForCausalLM.from_pretrained(pack)


def test_pickles_are_never_loaded(pack):
    # a pack that offers only a pickle is refused, and the pickle is never opened
    (pack / "steering.safetensors").rename(pack / "steering.bin")
    (pack / "steering.bin").write_bytes(b"not even a pickle")
    with pytest.raises(FileNotFoundError, match="steering.safetensors"):
        AlignEZForCausalLM.from_pretrained(pack)


def test_missing_base_says_how_to_fix(pack):
    config = json.loads((pack / "config.json").read_text())
    config["base_model_name_or_path"] = str(pack.parent / "gone")
    (pack / "config.json").write_text(json.dumps(config))
    with pytest.raises(OSError, match="base_model_name_or_path="):
        AlignEZForCausalLM.from_pretrained(pack)


def test_not_a_pack(tiny_base_dir):
    from transformers import AutoConfig

    with pytest.raises(TypeError, match="not an AlignEZ steering pack"):
        AlignEZForCausalLM.from_pretrained(tiny_base_dir, config=AutoConfig.from_pretrained(tiny_base_dir))


def test_save_without_axes_is_refused(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="no steering axes"):
        AlignEZForCausalLM.from_base(tiny_llama).save_pretrained(tmp_path / "empty")
