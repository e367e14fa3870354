"""Packs saved before the runtime/ split (commit 3d8a93c) load and steer exactly as they did then.

tests/fixtures/pack_v0_*: two bundles saved by that code with tiny random Llama bases (their shipped runtime .py
copies removed), with the greedy tokens, gate ratings and last-position logits that code produced.
"""

import json
from pathlib import Path

import pytest
import torch

from alignez_hf import AlignEZForCausalLM

FIXTURES = Path(__file__).parent / "fixtures"
GEN = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
PER_ROW = [{"a": 0.1}, {"a": -0.05, "b": 0.5}, {"b": 30.0}]


@pytest.mark.parametrize("name", ["pack_v0_static", "pack_v0_per_query"])
def test_old_pack_gives_the_same_outputs(name):
    """Each row of a batch gives what the old code gave for that row alone ("alone" in expected.json, recorded by
    3d8a93c). For the static pack that is also the old batched output; the old code's batched output of the
    per-query pack with the paper's composition depended on the other rows (fixed: see test_runtime_edits.py)."""
    folder = FIXTURES / name
    expected = json.loads((folder / "expected.json").read_text())
    model = AlignEZForCausalLM.from_pretrained(folder)
    assert "format_version" not in json.loads((folder / "config.json").read_text())
    assert model.config.format_version == 1
    ids = torch.tensor(expected["input_ids"])
    mask = (ids != 0).long()
    new = slice(ids.shape[1], None)
    if expected["gate_scores"] is not None:
        assert torch.allclose(model.gate_scores("b", ids, mask), torch.tensor(expected["gate_scores"]), atol=1e-5)
    default = model.generate(ids, attention_mask=mask, **GEN)
    per_row = model.generate(ids, attention_mask=mask, steering=PER_ROW, **GEN)
    assert default[:, new].tolist() == expected["alone"]["default"]
    assert per_row[:, new].tolist() == expected["alone"]["per_row"]
    if name == "pack_v0_static":
        assert default.tolist() == expected["default"] and per_row.tolist() == expected["per_row"]
    with model.steering_disabled():
        assert model.generate(ids, attention_mask=mask, **GEN).tolist() == expected["disabled"]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -1]
    assert torch.allclose(logits, torch.tensor(expected["alone"]["logits_last"]), atol=1e-4)
    assert expected["default"] != expected["disabled"]  # the fixture steers: the comparison can fail


def test_old_pack_resaves_with_a_format_version(tmp_path):
    model = AlignEZForCausalLM.from_pretrained(FIXTURES / "pack_v0_static")
    model.save_pretrained(tmp_path / "again")
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert config["format_version"] == 1
    again = AlignEZForCausalLM.from_pretrained(tmp_path / "again", base_model=model.base)
    assert again.steering_state_dict().keys() == model.steering_state_dict().keys()


def test_newer_format_is_refused_with_upgrade_advice(tmp_path):
    import shutil

    shutil.copytree(FIXTURES / "pack_v0_static", tmp_path / "p")
    path = tmp_path / "p" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": 2}))
    with pytest.raises(ValueError, match="format version 2.*upgrade"):
        AlignEZForCausalLM.from_pretrained(tmp_path / "p")
