"""One small real build on the embedded SmolLM2: the default strategy changes generation, and saves/loads."""

import warnings

import pytest
import torch

from alignez_hf import AlignEZForCausalLM
from alignez_hf.builder import AlignEZBuilder
from alignez_hf.builder.axes import Axis
from alignez_hf.builder.generation import SamplingSettings, generate_texts
from alignez_hf.evaluation.scorers import sentiment

pytestmark = pytest.mark.slow


def test_default_build_on_smollm2_steers_and_round_trips(tmp_path, smollm2, smollm2_tokenizer):
    tok = smollm2_tokenizer
    queries = ["How do I make tea?", "Tell me about trains.", "What should I cook tonight?", "Describe a city park."]
    builder = AlignEZBuilder(smollm2, tok, axes=["cheerful"], progress=False, verbose=False, check_queries=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aligned = builder.build(queries, output_dir=tmp_path / "pack")
    quality = next(iter(aligned.axes.values())).metadata["build"]["quality"]
    assert quality["shift"] > quality["random_shift"]  # the persona contrast moves SmolLM2, more than random
    # cheerful names sentiment: the sign was checked
    sign = next(iter(aligned.axes.values())).metadata["build"]["orientation"]
    assert sign["plus"] > sign["base"] > sign["minus"] and not sign["flipped"]

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


def test_axis_pointing_against_its_behaviour_is_flipped(smollm2, smollm2_tokenizer):
    """Keywords in the 'wrong' order for the named behaviour: the builder measures it and flips the axis."""
    tok = smollm2_tokenizer
    queries = ["How do I make tea?", "Tell me about trains.", "What should I cook tonight?", "Describe a city park."]
    axis = Axis("sunny", "gloomy", "cheerful", behaviour="sentiment")  # +strength must raise sentiment
    builder = AlignEZBuilder(smollm2, tok, axes=[axis], progress=False, verbose=False, check_queries=0)
    with pytest.warns(UserWarning, match="flipped the axis"):
        aligned = builder.build(queries)
    sign = next(iter(aligned.axes.values())).metadata["build"]["orientation"]
    assert sign["flipped"] and sign["minus"] > sign["plus"]  # as built, + pointed to gloom
    assert "FLIPPED" in builder.summary()
    # After the flip, + raises sentiment on prompts the check never saw.
    held_out = ["Describe a rainy afternoon.", "Tell me about your neighbourhood."]
    texts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in held_out
    ]
    greedy = SamplingSettings(do_sample=False)
    scores = {
        s: sum(map(sentiment, generate_texts(aligned, tok, texts, 24, greedy, 4, steering={"sunny": s})))
        for s in (-2.0, 2.0)
    }
    assert scores[2.0] > scores[-2.0]
