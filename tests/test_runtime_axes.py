"""The axis registry (runtime/axes.py): entries and tensors in step, state dicts, views, random controls."""

import pytest
import torch

from alignez_hf import AlignEZConfig
from alignez_hf.runtime.axes import AxisRegistry

FINGERPRINT = {"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 3, "vocab_size": 16}


def _registry():
    registry = AxisRegistry(AlignEZConfig(base_fingerprint=FINGERPRINT))
    registry.add("a", {0: torch.randn(2, 8), 2: torch.randn(8)}, "additive", 1.5, stats={"norms": torch.ones(3)})
    return registry


def test_add_keeps_config_and_tensors_in_step():
    registry = _registry()
    entry = registry.entry("a")
    assert entry["layers"] == [0, 2] and entry["rank"] == {"0": 2, "2": 1} and entry["strength"] == 1.5
    assert torch.allclose(registry.directions["a"][0].norm(dim=-1), torch.ones(2))
    registry.remove("a")
    assert registry.names == [] and "a" not in registry.directions


def test_state_dict_round_trip_and_inconsistent_tensors():
    registry = _registry()
    tensors = registry.state_dict()
    assert set(tensors) == {
        "a.layers.0.directions",
        "a.layers.0.scales",
        "a.layers.2.directions",
        "a.layers.2.scales",
        "a.stats.norms",
    }
    other = AxisRegistry(AlignEZConfig(base_fingerprint=FINGERPRINT, axes=[dict(registry.entry("a"))]))
    other.load_state_dict(tensors, "here")
    assert all(torch.equal(other.directions["a"][k], v) for k, v in registry.directions["a"].items())
    with pytest.raises(ValueError, match="unexpected tensor 'a.layers.x.directions'"):
        other.load_state_dict({**tensors, "a.layers.x.directions": torch.ones(1, 8)}, "here")
    with pytest.raises(ValueError, match="lacks tensors of axis 'a' for layers \\[2\\]"):
        other.load_state_dict({k: v for k, v in tensors.items() if ".2." not in k}, "here")


def test_views_are_copies_and_random_controls_are_orthonormal():
    registry = _registry()
    registry.update_metadata("a", {"build": {"n": 1}})
    view = registry.view("a")
    view.metadata["build"]["n"] = 2
    assert registry.view("a").metadata == {"build": {"n": 1}}
    random = registry.random_like("a", seed=3)
    assert random.keys() == registry.directions["a"].keys()
    assert torch.allclose(random[0] @ random[0].T, torch.eye(2), atol=1e-5)
    assert torch.equal(random[0], registry.random_like("a", seed=3)[0])
    with pytest.raises(ValueError, match="metadata may not set"):
        registry.update_metadata("a", {"strength": 3})
    with pytest.raises(ValueError, match="letters, digits"):
        registry.add("a b", {0: torch.randn(8)}, "additive", 1.0)
