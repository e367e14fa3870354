"""The pack configuration (runtime/configuration_alignez.py): defaults, allowed values, format version."""

import pytest

from alignez_hf import AlignEZConfig
from alignez_hf.runtime.configuration_alignez import base_fingerprint, check_option
from alignez_hf.runtime.constants import FORMAT_VERSION, OPTION_FIELDS


def test_defaults_and_round_trip(tmp_path):
    config = AlignEZConfig(base_model_name_or_path="org/base", axes=[{"name": "a", "rule": "tanh", "strength": 2}])
    assert (config.hook_point, config.layer_policy, config.top_n, config.positions, config.composition) == (
        "residual",
        "static",
        5,
        "last",
        "sequential",
    )
    assert config.format_version == FORMAT_VERSION == 1 and config.axis_names == ["a"]
    config.save_pretrained(tmp_path)
    again = AlignEZConfig.from_pretrained(tmp_path)
    assert again.axes == config.axes and again.format_version == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hook_point", "attention", "hook_point must be one of"),
        ("layer_policy", "dynamic", "layer_policy must be one of"),
        ("positions", "first", "positions must be one of"),
        ("composition", "mean", "composition must be one of"),
        ("top_n", 0, "top_n must be an integer of at least 1"),
        ("top_n", 2.5, "top_n must be an integer"),
    ],
)
def test_bad_options_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        AlignEZConfig(**{field: value})
    with pytest.raises(ValueError, match=message):
        check_option(field, value)


def test_every_option_field_is_checked():
    for field in OPTION_FIELDS:
        check_option(field, getattr(AlignEZConfig(), field))
    with pytest.raises(ValueError, match="not a steering option"):
        check_option("strength", 1.0)


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ([{"rule": "additive", "strength": 1}], "non-empty string 'name'"),
        ([{"name": "a", "rule": "additive", "strength": 1}] * 2, "appears twice"),
        ([{"name": "a", "rule": "cube", "strength": 1}], "known rules"),
        ([{"name": "a", "rule": "additive", "strength": float("inf")}], "finite number"),
        ([{"name": "a", "rule": "additive", "strength": 1, "gate": {"kind": "x"}}], "'gate' must be a dict"),
    ],
)
def test_bad_axes_are_refused(axes, message):
    with pytest.raises(ValueError, match=message):
        AlignEZConfig(axes=axes)


def test_format_version_newer_than_known_is_refused():
    with pytest.raises(ValueError, match="format version 2, newer than the 1.*pip install -U alignez-hf"):
        AlignEZConfig(format_version=2)
    with pytest.raises(ValueError, match="format_version must be an integer"):
        AlignEZConfig(format_version="1")


def test_base_fingerprint(tiny_llama):
    assert base_fingerprint(tiny_llama.config) == {
        "model_type": "llama",
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "vocab_size": 256,
    }


@pytest.mark.parametrize("bundled", ["../base", "/etc", "..", "a/b", "C:base", 3])
def test_a_bundled_base_outside_the_pack_is_refused(bundled):
    with pytest.raises(ValueError, match="bundled_base must be a folder name inside the pack"):
        AlignEZConfig(bundled_base=bundled)
    assert AlignEZConfig(bundled_base="base").bundled_base == "base"
