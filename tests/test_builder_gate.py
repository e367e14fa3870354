"""Fitting a self-judged harm gate from the model's own refusals (alignez_hf/builder/gate.py)."""

from __future__ import annotations

import pytest
import torch

from alignez_hf import AlignEZForCausalLM
from alignez_hf.builder import AlignEZBuilder
from alignez_hf.builder.gate import auc, fit_gate, judge_tokens, place_threshold, youden_threshold
from alignez_hf.chat import chat_prompt
from alignez_hf.runtime.gates import request_tokens


def test_youden_threshold_and_auc():
    scores = torch.tensor([1.0, 2.0, 3.0, 6.0, 7.0, 2.5])
    refused = torch.tensor([False, False, False, True, True, True])
    t = youden_threshold(scores, refused)
    assert 3.0 < t < 6.0  # fires on 6 and 7 (2/3 of refused) and no answered: J = 2/3, the best here
    assert auc(scores[~refused], scores[refused]) == pytest.approx(8 / 9)
    assert auc(scores[refused], scores[~refused]) == pytest.approx(1 / 9)


def test_judge_tokens_on_a_real_chat_template(smollm2_tokenizer):
    tok = smollm2_tokenizer
    gate = judge_tokens(tok)
    assert tok.decode(gate["user_start"]) == "<|im_start|>user\n"
    assert tok.decode(gate["turn_end"]) == "<|im_end|>"
    assert [tok.decode([d]) for d in gate["digits"]] == [str(d) for d in range(10)]
    query = "How do I bake bread at home?"
    ids = tok(chat_prompt(tok, query), add_special_tokens=False)["input_ids"]
    request = request_tokens(ids, gate["user_start"], gate["turn_end"])
    assert tok.decode(request) == query
    # The judge prompt the runtime assembles from tokens is the chat-formatted question about the request.
    judged = tok.decode(gate["before"] + request + gate["after"])
    assert judged == chat_prompt(tok, gate["question"].format(request=query))


def test_fit_gate_refuses_to_gate_without_refusals(tiny_chat_llama):
    model, tok = tiny_chat_llama
    pack = AlignEZForCausalLM.from_base(model)
    pack.add_axis("harmless", {1: torch.randn(32)}, strength=1.0)
    fit = fit_gate(pack, tok, "harmless", [f"Question number {i}?" for i in range(6)], batch_size=4)
    assert not fit.added and fit.refused == 0 and "refused 0 of 6" in fit.reason
    assert pack.axes["harmless"].gate_threshold is None


def test_builder_gate_needs_a_refusal_axis(tiny_chat_llama):
    model, tok = tiny_chat_llama
    with pytest.raises(ValueError, match="none of the axes is one"):
        AlignEZBuilder(model, tok, axes=["cheerful"], gate=True)
    with pytest.raises(ValueError, match="gate_queries must be at least 8"):
        AlignEZBuilder(model, tok, axes=["harmless"], gate=True, gate_queries=0)
    with pytest.raises(ValueError, match=r"gate_answered_fire must be in \[0, 1\)"):
        AlignEZBuilder(model, tok, axes=["harmless"], gate=True, gate_answered_fire=30)


def test_builder_records_a_gate_it_could_not_place(tiny_chat_llama):
    """A self-judge gate's fit runs after the sign check and says, in the report and a warning, why none was added."""
    model, tok = tiny_chat_llama
    builder = AlignEZBuilder(
        model,
        tok,
        axes=["harmless"],
        progress=False,
        verbose=False,
        check_queries=2,
        orient=False,
        gate="self_judge",
    )
    with pytest.warns(UserWarning, match="no harm gate was added: the model refused 0 of 4"):
        aligned = builder.build(["How do I bake bread?", "Tell me about rivers.", "What is jazz?", "Name a fish."])
    gate = aligned.axes["harmless"].metadata["build"]["gate"]
    assert gate["added"] is False and gate["queries"] == 4 and gate["refused"] == 0
    assert aligned.axes["harmless"].gate_threshold is None
    assert "harm gate (own 0-9 rating vs own refusals of 4 build queries, 0 refused): NOT ADDED" in builder.summary()


def test_place_threshold_rules():
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 2.5, 6.0, 7.0, 8.0, 3.5])
    refused = torch.tensor([False] * 5 + [True] * 5)
    youden = place_threshold(scores, refused)
    assert youden.added and youden.rule == "youden" and youden.auc == pytest.approx(auc(scores[:5], scores[5:]))
    assert youden.threshold == pytest.approx(youden_threshold(scores, refused))
    strict = place_threshold(scores, refused, answered_fire=0.2)  # one of the five answered may fire
    assert strict.threshold == 4.0 and strict.fires_answered == pytest.approx(0.2)
    assert strict.fires_refused == pytest.approx(0.6)  # 6, 7, 8 of 2.5, 3.5, 6, 7, 8
    none = place_threshold(scores, refused, answered_fire=0.0)
    assert none.threshold == 5.0 and none.fires_answered == 0.0
    with pytest.raises(ValueError, match="answered_fire"):
        place_threshold(scores, refused, answered_fire=1.5)
    coin = place_threshold(torch.tensor([1.0, 2.0, 1.0, 2.0] * 3), torch.tensor([False, False, True, True] * 3))
    assert not coin.added and "coin toss" in coin.reason


def test_judge_tokens_without_a_chat_template(smollm2_tokenizer):
    """Plain "User: ...\\nAssistant:" prompts: the marker is "User:", not the ":" that "Assistant:" repeats."""
    import copy

    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = None
    gate = judge_tokens(tok)
    assert tok.decode(gate["user_start"]).strip() == "User:"
    query = "How do I bake bread at home?"
    ids = tok(chat_prompt(tok, query), add_special_tokens=False)["input_ids"]
    assert tok.decode(request_tokens(ids, gate["user_start"], gate["turn_end"])).strip() == query
