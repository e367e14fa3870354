"""merge_and_unload: a static additive pack folded into its base's MLP biases (runtime/merge.py)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from alignez_hf import AlignEZForCausalLM


def _pack(base, rule="additive", **kwargs):
    torch.manual_seed(5)
    hidden = base.config.get_text_config().hidden_size
    model = AlignEZForCausalLM.from_base(base, **kwargs)
    model.add_axis("a", {1: torch.randn(2, hidden), 2: torch.randn(hidden)}, rule=rule, strength=0.05)
    model.add_axis("b", {2: torch.randn(hidden)}, strength=0.0)
    return model


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("hook_point", ["residual", "mlp"])
def test_merged_model_equals_the_pack_at_every_position(family, hook_point, request, tmp_path):
    base = request.getfixturevalue(family)
    model = _pack(base, hook_point=hook_point)
    ids = torch.randint(3, 250, (2, 6))
    with torch.no_grad():
        with model.steering_disabled():
            plain = model(input_ids=ids).logits
        with model.steering_options(positions="all"):
            steered = model(input_ids=ids, steering={"a": 0.05, "b": 0.02}).logits
    assert not torch.allclose(steered, plain, atol=1e-4)  # the pack steers these logits
    merged = model.merge_and_unload(steering={"a": 0.05, "b": 0.02})
    assert merged is base and type(merged).__name__ in ("LlamaForCausalLM", "GPT2LMHeadModel")
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, steered, atol=1e-5)
    merged.save_pretrained(tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, steered, atol=1e-5)


def test_what_cannot_be_merged_is_refused_with_the_reason(tiny_llama, tiny_qwen2):
    with pytest.raises(ValueError, match="rules that read the hidden state \\(tanh\\)"):
        _pack(tiny_llama, rule="tanh").merge_and_unload()
    with pytest.raises(ValueError, match="per-query"):
        _pack(tiny_llama, layer_policy="per_query").merge_and_unload()
    with pytest.raises(ValueError, match="'paper' composition"):
        _pack(tiny_llama, composition="paper").merge_and_unload(steering={"a": 1.0, "b": 1.0})
    gated = _pack(tiny_llama)
    gated.set_gate(
        "a",
        {"kind": "self_judge", "user_start": [1], "turn_end": [2], "before": [5], "after": [7],
         "digits": list(range(10, 20)), "threshold": 4.0},
    )  # fmt: skip
    with pytest.raises(ValueError, match="gated"):
        gated.merge_and_unload()
    with pytest.raises(ValueError, match="'qwen2' model.*alignez serve"):
        _pack(tiny_qwen2).merge_and_unload()
    assert tiny_llama.config.mlp_bias is False  # nothing was changed by a refusal
