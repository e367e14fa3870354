"""One small real build on the embedded SmolLM2: the default strategy changes generation, and saves/loads."""

import warnings

import pytest
import torch

from alignez_hf import AlignEZForCausalLM
from alignez_hf.builder import AlignEZBuilder

pytestmark = pytest.mark.slow


def test_default_build_on_smollm2_steers_and_round_trips(tmp_path, smollm2, smollm2_tokenizer):
    tok = smollm2_tokenizer
    queries = ["How do I make tea?", "Tell me about trains.", "What should I cook tonight?", "Describe a city park."]
    builder = AlignEZBuilder(smollm2, tok, axes=["cheerful"], progress=False, verbose=False, check_queries=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aligned = builder.build(queries, output_dir=tmp_path / "pack")
    quality = aligned.config.axes[0]["build"]["quality"]
    assert quality["shift"] > quality["random_shift"]  # the persona contrast moves SmolLM2, more than random

    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Describe a rainy day."}], tokenize=False, add_generation_prompt=True
    )
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    with aligned.steering_disabled():
        base = aligned.generate(**enc, **settings)
    steered = aligned.generate(**enc, **settings, steering={"cheerful": -3.0})
    assert not torch.equal(base, steered)
    loaded = AlignEZForCausalLM.from_pretrained(tmp_path / "pack", base_model=smollm2)
    assert torch.equal(loaded.generate(**enc, **settings, steering={"cheerful": -3.0}), steered)
