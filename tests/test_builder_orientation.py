"""The sign check: an axis that names a behaviour is oriented by it on the model's own build queries."""

import warnings

import pytest
import torch

from alignez_hf.builder import AlignEZBuilder
from alignez_hf.builder.axes import Axis
from alignez_hf.builder.builder import CHECK_TOKENS
from alignez_hf.builder.generation import SamplingSettings, generate_texts
from alignez_hf.builder.orientation import Orientation, flip_axis, measure_orientation, spread
from alignez_hf.builder.prompts import persona_system
from alignez_hf.chat import chat_prompt

QUERIES = ["How do I bake bread?", "Tell me about rivers.", "How can I steal a bike?", "What is a good book?"]


def _build(model, tok, axes, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random tiny model rightly triggers the "does nothing" warning
        builder = AlignEZBuilder(model, tok, axes=axes, progress=False, verbose=False, check_queries=2, **kwargs)
        return builder, builder.build(QUERIES)


def test_spread_picks_evenly_spaced_items():
    assert spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert spread([1, 2], 5) == [1, 2]
    assert spread(list(range(7)), 1) == [0]


def test_flip_axis_makes_plus_do_what_minus_did(tiny_chat_llama):
    model, tok = tiny_chat_llama
    _, aligned = _build(model, tok, ["cheerful"], orient=False)
    before = aligned.axis_tensors("cheerful")
    entry = aligned.axes["cheerful"]
    enc = tok(["Tell me about the sea."], return_tensors="pt")
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    minus = aligned.generate(**enc, **settings, steering={"cheerful": -4.0})
    plus = aligned.generate(**enc, **settings, steering={"cheerful": 4.0})
    assert not torch.equal(minus, plus)  # the push is large enough to matter on the tiny model

    flip_axis(aligned, "cheerful")
    after = aligned.axis_tensors("cheerful")
    assert torch.equal(aligned.generate(**enc, **settings, steering={"cheerful": 4.0}), minus)
    for layer, d in before["directions"].items():
        # add_axis normalises each row again: a unit row can come back 1 ulp away from -d.
        torch.testing.assert_close(after["directions"][layer], -d, rtol=0, atol=1e-6)
        assert torch.equal(after["scales"][layer], before["scales"][layer])
        assert torch.equal(after["stats"][f"mean_pos_proj.{layer}"], -before["stats"][f"mean_pos_proj.{layer}"])
    assert torch.equal(after["stats"]["norms"], before["stats"]["norms"])
    kept = aligned.axes["cheerful"]
    assert (kept.rule, kept.strength, kept.layers, kept.rank) == (entry.rule, entry.strength, entry.layers, entry.rank)
    assert {k: v for k, v in kept.metadata.items() if k != "build"} == {
        k: v for k, v in entry.metadata.items() if k != "build"
    }


def test_orientation_is_measured_recorded_and_printed(tiny_chat_llama):
    model, tok = tiny_chat_llama
    builder, aligned = _build(model, tok, ["harmless"], orient_queries=3, orient_strength=1.5)
    orientation = next(iter(aligned.axes.values())).metadata["build"]["orientation"]
    assert orientation["behaviour"] == "refusal" and orientation["queries"] == 3 and orientation["strength"] == 1.5
    assert all(0.0 <= orientation[k] <= 1.0 for k in ("minus", "base", "plus"))
    gap = 2.0 / 3  # two of the three queries
    assert orientation["flipped"] == (orientation["minus"] - orientation["plus"] >= gap - 1e-9)
    assert "sign check (refusal, 3 build queries, +-1.5)" in builder.summary()
    # The measurement is reproducible: greedy answers, the same queries.
    again = measure_orientation(aligned, tok, "harmless", "refusal", spread(QUERIES, 3), strength=1.5)
    expected = (
        (orientation["plus"], orientation["minus"])
        if not orientation["flipped"]
        else (
            orientation["minus"],
            orientation["plus"],
        )
    )
    assert (again.plus, again.minus) == expected


def test_axes_without_a_behaviour_or_with_orient_off_are_not_checked(tiny_chat_llama):
    model, tok = tiny_chat_llama
    _, aligned = _build(model, tok, ["helpful", Axis("shy", "shy", "bold")])
    assert all(view.metadata["build"]["orientation"] is None for view in aligned.axes.values())
    _, aligned = _build(model, tok, ["harmless"], orient=False)
    assert next(iter(aligned.axes.values())).metadata["build"]["orientation"] is None


def test_orientation_words():
    o = Orientation("sentiment", 8, 2.0, minus=0.5, base=0.2, plus=-0.1)
    assert o.decided and "0.50 at -2" in o.measured() and "-0.10 at +2" in o.measured()
    assert o.points_backwards
    assert not Orientation("refusal", 8, 2.0, 0.0, 0.0, 0.0).decided
    one_query = Orientation("refusal", 8, 2.0, minus=0.125, base=0.0, plus=0.0)  # one refusal in 8 is noise
    assert not one_query.decided and not one_query.points_backwards
    assert Orientation("refusal", 8, 2.0, minus=0.25, base=0.0, plus=0.0).points_backwards
    assert not Orientation("sentiment", 8, 2.0, minus=0.3, base=0.2, plus=0.25).decided
    with pytest.raises(ValueError):
        measure_orientation(None, None, "x", "politeness", ["q"])


def test_identical_persona_continuations_are_counted(tiny_chat_llama):
    model, tok = tiny_chat_llama
    builder = AlignEZBuilder(model, tok, axes=["cheerful"], progress=False, verbose=False, check_queries=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aligned = builder.build(QUERIES)
    quality = next(iter(aligned.axes.values())).metadata["build"]["quality"]
    # The self-check's continuations, made again: greedy, 16 tokens, under each persona system message.
    axis = builder.axes[0]
    texts = [
        chat_prompt(tok, q, system=persona_system(axis, side)) for side in ("positive", "negative") for q in QUERIES
    ]
    made = generate_texts(model, tok, texts, CHECK_TOKENS, SamplingSettings(do_sample=False), 8)
    expected = sum(a.strip() == b.strip() for a, b in zip(made[:4], made[4:]))
    assert quality["prompts"] == 4 and quality["identical"] == expected
