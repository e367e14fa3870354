"""The runtime on the real embedded SmolLM2: Auto classes, pipeline with chat messages, per-call steering."""

import pytest
import torch
from transformers import AutoModelForCausalLM, pipeline

import alignez_hf
from alignez_hf import AlignEZForCausalLM

MESSAGES = [{"role": "user", "content": "Write one sentence about the sea."}]


@pytest.fixture(scope="module")
def smollm2_pack(smollm2, smollm2_tokenizer, smollm2_path, tmp_path_factory):
    model = AlignEZForCausalLM.from_base(smollm2, smollm2_tokenizer)
    torch.manual_seed(0)
    model.add_axis("noise", {layer: torch.randn(576) * 20 for layer in range(10, 16)})
    path = tmp_path_factory.mktemp("packs") / "smollm2-noise"
    model.save_pretrained(path)
    return path


def test_default_base_model_is_cached(smollm2_path):
    assert alignez_hf.default_base_model() == smollm2_path


def test_pipeline_with_chat_messages(smollm2_pack, smollm2, smollm2_tokenizer):
    generator = pipeline("text-generation", model=str(smollm2_pack))
    assert isinstance(generator.model, AlignEZForCausalLM)
    kwargs = {"max_new_tokens": 12, "do_sample": False}
    steered = generator(MESSAGES, **kwargs)[0]["generated_text"][-1]
    assert steered["role"] == "assistant"
    plain = generator(MESSAGES, steering={"noise": 0.0}, **kwargs)[0]["generated_text"][-1]["content"]
    with generator.model.steering_disabled():
        disabled = generator(MESSAGES, **kwargs)[0]["generated_text"][-1]["content"]
    reference = pipeline("text-generation", model=smollm2, tokenizer=smollm2_tokenizer)(MESSAGES, **kwargs)
    assert plain == disabled == reference[0]["generated_text"][-1]["content"]
    assert steered["content"] != plain


def test_auto_class_loads_pack(smollm2_pack):
    model = AutoModelForCausalLM.from_pretrained(smollm2_pack, dtype=torch.bfloat16)
    assert isinstance(model, AlignEZForCausalLM) and model.base.dtype == torch.bfloat16
    assert model.axes["noise"].layers == tuple(range(10, 16))
