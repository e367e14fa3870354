"""A pack whose base model needs remote code: its code runs only when the user passes trust_remote_code=True."""

import json

import pytest
import torch

from alignez_hf import AlignEZForCausalLM

CONFIGURATION = """
from transformers import LlamaConfig


class TinyCustomConfig(LlamaConfig):
    model_type = "tinycustom"
"""
MODELING = """
import pathlib

from transformers import LlamaForCausalLM

from .configuration_tinycustom import TinyCustomConfig

pathlib.Path({marker!r}).write_text("the base's own code ran")


class TinyCustomForCausalLM(LlamaForCausalLM):
    config_class = TinyCustomConfig
"""


def test_remote_code_of_the_base_runs_only_when_trusted(tiny_llama, tmp_path):
    marker = tmp_path / "executed"
    base_dir = tmp_path / "custom-base"
    tiny_llama.save_pretrained(base_dir)
    config = json.loads((base_dir / "config.json").read_text())
    config.update(
        model_type="tinycustom",
        architectures=["TinyCustomForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_tinycustom.TinyCustomConfig",
            "AutoModelForCausalLM": "modeling_tinycustom.TinyCustomForCausalLM",
        },
    )
    (base_dir / "config.json").write_text(json.dumps(config))
    (base_dir / "configuration_tinycustom.py").write_text(CONFIGURATION)
    (base_dir / "modeling_tinycustom.py").write_text(MODELING.format(marker=str(marker)))
    pack = AlignEZForCausalLM.from_base(tiny_llama, base_model_name_or_path=str(base_dir))
    pack.config.base_fingerprint["model_type"] = "tinycustom"
    pack.add_axis("a", {1: torch.randn(32)})
    pack.save_pretrained(tmp_path / "pack")

    # unset: transformers asks on a terminal and refuses without one (here stdin is captured)
    with pytest.raises(OSError, match="trust_remote_code=True"):
        AlignEZForCausalLM.from_pretrained(tmp_path / "pack")
    with pytest.raises(OSError, match="trust_remote_code=True"):
        AlignEZForCausalLM.from_pretrained(tmp_path / "pack", trust_remote_code=False)
    assert not marker.exists()  # refused before any of the base's code ran
    loaded = AlignEZForCausalLM.from_pretrained(tmp_path / "pack", trust_remote_code=True)
    assert marker.exists() and type(loaded.base).__name__ == "TinyCustomForCausalLM"
