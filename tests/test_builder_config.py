"""BuildConfig: the build options, their defaults, and how AlignEZBuilder takes them."""

from __future__ import annotations

import math

import pytest

from alignez_hf.builder import DEFAULT_STRATEGY, STRATEGIES, AlignEZBuilder, BuildConfig
from alignez_hf.builder.config import DEFAULT_ANSWERED_FIRE, parse_share_or_youden, parse_threshold
from alignez_hf.builder.strategies import get_strategy


def test_defaults():
    config = BuildConfig()
    assert config.strategy == DEFAULT_STRATEGY == "persona" and DEFAULT_STRATEGY in STRATEGIES
    assert get_strategy() is STRATEGIES[DEFAULT_STRATEGY]
    assert config.gate_answered_fire == DEFAULT_ANSWERED_FIRE == 0.3
    assert (config.batch_size, config.seed, config.do_sample, config.temperature, config.top_p) == (
        8,
        0,
        True,
        0.7,
        0.9,
    )
    assert (config.orient_queries, config.gate, config.gate_queries, config.check_queries) == (16, False, 64, 4)


def test_replace_checks_option_names():
    assert BuildConfig().replace(batch_size=2).batch_size == 2
    with pytest.raises(TypeError, match=r"'bacth_size'.*valid ones: strategy, batch_size, seed"):
        BuildConfig().replace(bacth_size=2)


def test_parsers():
    assert parse_share_or_youden("youden") is None and parse_share_or_youden("0.2") == 0.2
    assert math.isinf(parse_threshold("off")) and parse_threshold("0.9") == 0.9
    for parse, text in ((parse_share_or_youden, "lots"), (parse_threshold, "high")):
        with pytest.raises(ValueError, match=repr(text)):
            parse(text)


def test_builder_takes_config_and_options(tiny_chat_llama):
    model, tok = tiny_chat_llama
    builder = AlignEZBuilder(model, tok, axes=["cheerful"])
    assert builder.config == BuildConfig() and builder.strategy.name == "persona" and builder.model is model
    config = BuildConfig(batch_size=3, seed=7, do_sample=False, layer_band=(0.25, 0.5), scale_fraction=0.1)
    builder = AlignEZBuilder(base_model=model, tokenizer=tok, axes=["cheerful"], config=config, seed=9)
    assert builder.batch_size == 3 and builder.sampling.seed == 9 and builder.sampling.do_sample is False
    assert builder.strategy.layer_band == (0.25, 0.5) and builder.strategy.scale_fraction == 0.1
    assert AlignEZBuilder(model, tok, ["cheerful"], "paper", config).strategy.name == "paper"
    assert AlignEZBuilder(model, tok, ["cheerful"], config=BuildConfig(strategy="paper")).strategy.name == "paper"
    # cos_threshold: None keeps the strategy's, a number replaces it, infinity ('off') records no filter.
    assert AlignEZBuilder(model, tok, ["cheerful"], "paper").strategy.cos_threshold == 0.8
    assert AlignEZBuilder(model, tok, ["cheerful"], "paper", cos_threshold=0.5).strategy.cos_threshold == 0.5
    assert AlignEZBuilder(model, tok, ["cheerful"], "paper", cos_threshold=math.inf).strategy.cos_threshold is None
    with pytest.raises(TypeError, match="valid ones"):
        AlignEZBuilder(model, tok, ["cheerful"], batchsize=2)
    with pytest.raises(TypeError, match="must be a BuildConfig"):
        AlignEZBuilder(model, tok, ["cheerful"], config={"batch_size": 2})
