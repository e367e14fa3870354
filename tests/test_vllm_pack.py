"""The engine-free part of the vLLM integration (alignez_hf/vllm/pack.py, cli/serve.py): what can be served,
per-request strength parameters, and the errors a user sees. Runs without vLLM installed."""

import json

import pytest
import torch

from alignez_hf import AlignEZForCausalLM
from alignez_hf.cli import main
from alignez_hf.vllm import engine_args, steering
from alignez_hf.vllm.pack import ServedPack, UnsupportedOnVLLM, request_strengths

DEFAULTS = {"cheerful": 1.0, "simple": 0.0}


def _pack(tmp_path, tiny_llama, name="pack", **options):
    model = AlignEZForCausalLM.from_base(tiny_llama, base_model_name_or_path="org/tiny", **options)
    model.add_axis("cheerful", {1: torch.randn(32)})
    model.add_axis("simple", {2: torch.randn(32)}, strength=0.0)
    model.save_pretrained(tmp_path / name)
    return tmp_path / name


def test_request_strengths_from_every_form_of_the_parameter():
    assert request_strengths(None, DEFAULTS) == DEFAULTS
    assert request_strengths({"other": 1}, DEFAULTS) == DEFAULTS
    assert request_strengths({"steering": "off"}, DEFAULTS) == {"cheerful": 0.0, "simple": 0.0}
    assert request_strengths({"steering": {"simple": 2}}, DEFAULTS) == {"cheerful": 1.0, "simple": 2.0}
    assert request_strengths({"steering": '{"cheerful": -1.5}'}, DEFAULTS) == {"cheerful": -1.5, "simple": 0.0}
    assert steering({"cheerful": 2}) == {"steering": {"cheerful": 2.0}}
    assert json.loads(steering({"cheerful": 2}, http=True)["steering"]) == {"cheerful": 2.0}
    assert steering("off") == {"steering": "off"} and steering(None) == {}
    for bad, message in [
        ('{"nope": 1}', "Unknown axis 'nope'"),
        ('{"cheerful": "high"}', "finite number"),
        ("{cheerful", "not JSON"),
        ("[1, 2]", "got \\[1, 2\\]"),
        (3, "got 3"),
    ]:
        with pytest.raises(ValueError, match=message) as err:
            request_strengths({"steering": bad}, DEFAULTS)
        assert "vllm_xargs" in str(err.value)  # the message says how to write it


def test_served_pack_and_engine_args(tmp_path, tiny_llama):
    pack = ServedPack(_pack(tmp_path, tiny_llama))
    assert pack.names == ["cheerful", "simple"] and pack.defaults == {"cheerful": 1.0, "simple": 0.0}
    assert pack.base() == "org/tiny"
    pack.check_base(tiny_llama.config)
    tiny_llama.config.hidden_size = 64
    with pytest.raises(ValueError, match="hidden_size: pack 32 vs served 64"):
        pack.check_base(tiny_llama.config)
    args = engine_args(tmp_path / "pack", max_model_len=256)
    assert args == {
        "model": "org/tiny",
        "tokenizer": "org/tiny",
        "max_model_len": 256,
        "enforce_eager": True,
        "enable_prefix_caching": False,
    }
    with pytest.raises(ValueError, match="enable_prefix_caching=False"):
        engine_args(tmp_path / "pack", enable_prefix_caching=True)


def test_what_vllm_cannot_apply_is_refused(tmp_path, tiny_llama):
    with pytest.raises(UnsupportedOnVLLM, match="per-query layer policy"):
        ServedPack(_pack(tmp_path, tiny_llama, "pq", layer_policy="per_query"))
    model = AlignEZForCausalLM.from_pretrained(_pack(tmp_path, tiny_llama), base_model=tiny_llama)
    model.set_gate(
        "cheerful",
        {"kind": "self_judge", "user_start": [1], "turn_end": [2], "before": [5], "after": [7],
         "digits": list(range(10, 20)), "threshold": 4.0},
    )  # fmt: skip
    model.save_pretrained(tmp_path / "gated")
    with pytest.raises(UnsupportedOnVLLM, match="gated.*set_gate\\(name, None\\)"):
        ServedPack(tmp_path / "gated")
    with pytest.raises(FileNotFoundError, match="not a steering pack folder"):
        ServedPack(tmp_path / "nowhere")


def test_serve_without_vllm_says_how_to_get_it(tmp_path, tiny_llama, capsys):
    pytest.importorskip("transformers")
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here: tests/test_vllm_serving.py starts the real server")
    except ImportError:
        pass
    pack = _pack(tmp_path, tiny_llama)
    assert main(["serve", str(pack), "--port", "8123", "--max-model-len", "256"]) == 2
    assert "make serve-env" in capsys.readouterr().err
    assert main(["serve", str(pack), "--no-enforce-eager"]) == 2
    assert "--enforce-eager and --no-enable-prefix-caching" in capsys.readouterr().err


def test_unknown_options_of_other_commands_are_still_errors():
    with pytest.raises(SystemExit):
        main(["push", "pack", "org/repo", "--no-such-flag"])
