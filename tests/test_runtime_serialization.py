"""Bad packs and bad bases fail loudly with errors that say what is wrong and what to do."""

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from alignez_hf import (
    AlignEZError,
    AlignEZForCausalLM,
    BaseModelError,
    NotAPackError,
    PackError,
    PackFileError,
)


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
    with pytest.raises(PackError, match=r"hidden_size: pack 32 vs base 48.*num_hidden_layers: pack 4 vs base 2"):
        AlignEZForCausalLM.from_pretrained(pack, base_model=other)


def test_missing_steering_file(pack):
    (pack / "steering.safetensors").unlink()
    with pytest.raises(PackFileError, match="has no steering.safetensors") as err:
        AlignEZForCausalLM.from_pretrained(pack)
    assert isinstance(err.value, FileNotFoundError)  # existing `except FileNotFoundError/OSError` clauses still work


def test_missing_config_file(pack):
    (pack / "config.json").unlink()
    with pytest.raises(PackFileError, match="has no config.json"):
        AlignEZForCausalLM.from_pretrained(pack)


def test_truncated_steering_file(pack):
    data = (pack / "steering.safetensors").read_bytes()
    (pack / "steering.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(PackError, match="steering.safetensors of the steering pack .* truncated or corrupt") as err:
        AlignEZForCausalLM.from_pretrained(pack)
    assert isinstance(err.value, ValueError) and "force_download=True" in str(err.value)


def test_header_declaring_more_than_the_file_is_refused_before_reading(pack):
    """A header that claims huge sizes is checked against the file's size before safetensors maps anything."""
    data = (pack / "steering.safetensors").read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    with pytest.raises(PackError, match="header declares 18446744073709551615 bytes"):
        (pack / "steering.safetensors").write_bytes(b"\xff" * 8 + data[8:])
        AlignEZForCausalLM.from_pretrained(pack)
    name = "cheerful.layers.1.directions"
    for field, value, message in [
        ("shape", [2**40, 2**40], "does not fill its"),
        ("data_offsets", [0, 2**50], "outside the .* bytes of data the file holds"),
        ("dtype", "I32", "tensors must be floating point"),
        ("dtype", "Q4", "unknown dtype 'Q4'"),
    ]:
        rewritten = json.dumps({**header, name: {**header[name], field: value}}).encode()
        (pack / "steering.safetensors").write_bytes(
            len(rewritten).to_bytes(8, "little") + rewritten + data[8 + length :]
        )
        with pytest.raises(PackError, match=message):
            AlignEZForCausalLM.from_pretrained(pack)


def test_wrong_shape_tensor(pack):
    _rewrite_tensors(pack, lambda t: t.__setitem__("cheerful.layers.1.directions", torch.randn(2, 16)))
    with pytest.raises(PackError, match=r"steering.safetensors .* layer 1: directions must have shape \[k, 32\]"):
        AlignEZForCausalLM.from_pretrained(pack)


def test_nan_directions(pack):
    def poison(tensors):
        tensors["cheerful.layers.2.directions"][0, 3] = float("inf")

    _rewrite_tensors(pack, poison)
    with pytest.raises(PackError, match="layer 2: directions contain NaN or Inf"):
        AlignEZForCausalLM.from_pretrained(pack)


def test_absurd_scales_and_non_unit_directions(pack):
    _rewrite_tensors(pack, lambda t: t["cheerful.layers.1.scales"].fill_(1e38))  # finite, but overflows any push
    with pytest.raises(PackError, match="layer 1: scales must be finite numbers of magnitude at most"):
        AlignEZForCausalLM.from_pretrained(pack)
    _rewrite_tensors(
        pack, lambda t: (t["cheerful.layers.1.scales"].fill_(1.0), t["cheerful.layers.2.directions"].mul_(3))
    )
    with pytest.raises(PackError, match="layer 2: directions must be unit rows"):
        AlignEZForCausalLM.from_pretrained(pack)


def test_missing_layer_tensors(pack):
    _rewrite_tensors(pack, lambda t: t.pop("cheerful.layers.2.directions"))
    with pytest.raises(PackError, match=r"lacks tensors of axis 'cheerful' for layers \[2\]"):
        AlignEZForCausalLM.from_pretrained(pack)


def test_tensor_for_unknown_axis(pack):
    _rewrite_tensors(pack, lambda t: t.__setitem__("gloomy.layers.1.directions", torch.randn(1, 32)))
    with pytest.raises(PackError, match="axis that config.json does not list"):
        AlignEZForCausalLM.from_pretrained(pack)


def test_bad_config_values(pack):
    config = json.loads((pack / "config.json").read_text())
    config["axes"][0]["strength"] = "strong"
    (pack / "config.json").write_text(json.dumps(config))
    with pytest.raises(PackError, match="config.json of the steering pack .* finite number"):
        AlignEZForCausalLM.from_pretrained(pack)
    config["axes"][0]["strength"] = 1.0
    config["hook_point"] = "attention"
    (pack / "config.json").write_text(json.dumps(config))
    with pytest.raises(PackError, match="config.json .*hook_point must be one of"):
        AlignEZForCausalLM.from_pretrained(pack)
    config["hook_point"] = "residual"
    for field, value, message in [
        ("axes", [*config["axes"], 3], r"axes\[1\] must be an object"),  # was a bare AttributeError
        ("base_fingerprint", ["llama"], "base_fingerprint must be an object"),  # was a bare TypeError
        ("layers_path", 5, "layers_path must be a dotted attribute path"),  # was a bare AttributeError
        ("axis_names", ["x"], "would replace methods or read-only properties"),  # was a bare AttributeError
    ]:
        (pack / "config.json").write_text(json.dumps({**config, field: value}))
        with pytest.raises(PackError, match=f"config.json of the steering pack .*{message}"):
            AlignEZForCausalLM.from_pretrained(pack)
    (pack / "config.json").write_text("{not json")
    with pytest.raises(PackError, match="config.json .* not valid JSON"):
        AlignEZForCausalLM.from_pretrained(pack)


class _Tripwire:
    """Unpickling this creates a file: proof that a pickle was opened."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_are_never_loaded(pack, tmp_path):
    marker = tmp_path / "a-pickle-was-opened"
    payload = pickle.dumps(_Tripwire(marker))
    pickle.loads(payload)  # the tripwire works ...
    assert marker.exists()
    marker.unlink()
    # ... a pack that offers only pickles is refused without opening them
    (pack / "steering.safetensors").rename(pack / "steering.safetensors.orig")
    for name in ("steering.bin", "steering.pt", "pytorch_model.bin"):
        (pack / name).write_bytes(payload)
    with pytest.raises(PackFileError, match="steering.safetensors"):
        AlignEZForCausalLM.from_pretrained(pack)
    # ... and a pickle under the safetensors name is reported as corrupt, not unpickled
    (pack / "steering.safetensors").write_bytes(payload)
    with pytest.raises(PackError, match="truncated or corrupt"):
        AlignEZForCausalLM.from_pretrained(pack)
    assert not marker.exists()


def test_missing_base_says_how_to_fix(pack):
    config = json.loads((pack / "config.json").read_text())
    config["base_model_name_or_path"] = str(pack.parent / "gone")
    (pack / "config.json").write_text(json.dumps(config))
    with pytest.raises(BaseModelError, match="base_model_name_or_path=") as err:
        AlignEZForCausalLM.from_pretrained(pack)
    assert isinstance(err.value, OSError)


def test_not_a_pack(tiny_base_dir):
    from transformers import AutoConfig

    with pytest.raises(NotAPackError, match="not an AlignEZ steering pack") as err:
        AlignEZForCausalLM.from_pretrained(tiny_base_dir, config=AutoConfig.from_pretrained(tiny_base_dir))
    assert isinstance(err.value, TypeError) and isinstance(err.value, AlignEZError)


def test_save_without_axes_is_refused(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="no steering axes"):
        AlignEZForCausalLM.from_base(tiny_llama).save_pretrained(tmp_path / "empty")


def test_a_pack_ships_every_runtime_file(pack):
    """The files a pack ships come from transformers' relative-import discovery and leave none of the runtime out."""
    from pathlib import Path

    import alignez_hf.runtime as runtime
    from alignez_hf.runtime.serialization import runtime_files

    package = {p.name for p in Path(runtime.__file__).parent.glob("*.py") if p.name != "__init__.py"}
    assert set(runtime_files()) == package
    assert {p.name for p in pack.glob("*.py")} == package
