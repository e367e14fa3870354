"""Self-judged gates: token plumbing, runtime behaviour on a tiny model, the builder's fit, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import make_tiny_llama

from alignez_hf import AlignEZConfig, AlignEZForCausalLM
from alignez_hf.builder.gate import judge_tokens
from alignez_hf.chat import chat_prompt
from alignez_hf.runtime.gates import expected_digit, judge, judge_batch, request_tokens

GATE = {
    "kind": "self_judge",
    "user_start": [7, 8],
    "turn_end": [9],
    "before": [20, 21],
    "after": [22],
    "digits": list(range(30, 40)),
    "threshold": 4.5,
}


def test_request_tokens_takes_the_last_user_message():
    row = [3, 7, 8, 11, 12, 9, 7, 8, 13, 14, 15, 9, 5]
    assert request_tokens(row, [7, 8], [9]) == [13, 14, 15]
    assert request_tokens([7, 8, 13, 14], [7, 8], [9]) == [13, 14]  # no turn end: the rest
    assert request_tokens([13, 14], [7, 8], [9]) == [13, 14]  # no chat markers: the whole prompt


def test_judge_batch_wraps_each_request_and_left_pads():
    ids = torch.tensor([[0, 0, 7, 8, 13, 9], [7, 8, 13, 14, 15, 9]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    out, out_mask = judge_batch(ids, mask, GATE)
    assert out.tolist() == [[0, 0, 20, 21, 13, 22], [20, 21, 13, 14, 15, 22]]
    assert out_mask.tolist() == [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]


def test_expected_digit_is_the_mean_of_the_renormalised_digit_distribution():
    logits = torch.full((2, 50), -1e4)
    logits[0, 33] = 0.0  # all mass on "3"
    logits[1, 30], logits[1, 39] = 0.0, 0.0  # half "0", half "9"
    logits[1, 45] = 5.0  # a non-digit token does not count
    assert expected_digit(logits, GATE["digits"]).tolist() == pytest.approx([3.0, 4.5])


@pytest.fixture
def gated_pack():
    torch.manual_seed(0)
    pack = AlignEZForCausalLM.from_base(make_tiny_llama())
    pack.add_axis("push", {1: torch.randn(32) * 40, 2: torch.randn(32) * 40}, strength=1.0)
    pack.add_axis("plain", {1: torch.randn(32) * 40}, strength=0.0)
    return pack


def _prompts():
    torch.manual_seed(3)
    return torch.randint(3, 250, (3, 7)), torch.ones(3, 7, dtype=torch.long)


def _generate(pack, ids, mask, **kw):
    return pack.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0, **kw)


def test_gate_steers_exactly_the_rows_it_fires_on(gated_pack):
    ids, mask = _prompts()
    steered = _generate(gated_pack, ids, mask)
    with gated_pack.steering_disabled():
        base = _generate(gated_pack, ids, mask)
    assert not torch.equal(steered, base)  # the axis changes these prompts when ungated

    gated_pack.set_gate("push", dict(GATE, threshold=0.0))
    scores = gated_pack.gate_scores("push", ids, mask)
    assert torch.equal(scores, judge(gated_pack.base, GATE, ids, mask))  # the threshold plays no part in the rating
    assert scores.shape == (3,) and bool(((scores >= 0) & (scores <= 9)).all())
    gated_pack.set_gate_threshold("push", float(scores.min()) - 1.0)  # fires on every row
    assert torch.equal(_generate(gated_pack, ids, mask), steered)
    gated_pack.set_gate_threshold("push", float(scores.max()) + 1.0)  # fires on none
    assert torch.equal(_generate(gated_pack, ids, mask), base)
    # Between: rows above the threshold are steered, the others are the base's answers, in one batch.
    middle = float(scores.sort().values[1])
    gated_pack.set_gate_threshold("push", middle - 1e-6)
    fires = scores > middle - 1e-6
    assert fires.sum() == 2
    mixed = _generate(gated_pack, ids, mask)
    for row in range(3):
        assert torch.equal(mixed[row], (steered if fires[row] else base)[row])
    assert gated_pack.axes["push"].gate_threshold == pytest.approx(middle - 1e-6)
    gated_pack.set_gate("push", None)  # removes the gate
    assert gated_pack.axes["push"].gate_threshold is None
    assert torch.equal(_generate(gated_pack, ids, mask), steered)


def test_gate_errors_are_clear(gated_pack):
    with pytest.raises(ValueError, match="has no gate"):
        gated_pack.set_gate_threshold("plain", 3.0)
    gated_pack.set_gate("push", GATE)
    with pytest.raises(ValueError, match="finite number"):
        gated_pack.set_gate_threshold("push", float("nan"))
    embeds = gated_pack.get_input_embeddings()(torch.tensor([[5, 6, 7]]))
    with pytest.raises(ValueError, match="pass input_ids"):
        gated_pack(inputs_embeds=embeds)
    bad = dict(GATE, digits=[1, 2])
    with pytest.raises(ValueError, match="ten digit"):
        gated_pack.set_gate("push", bad)
    with pytest.raises(ValueError, match="ten digit"):
        AlignEZConfig(base_fingerprint={}, axes=[{"name": "a", "rule": "additive", "strength": 1.0, "gate": bad}])


def test_gate_survives_save_and_load(gated_pack, tmp_path):
    ids, mask = _prompts()
    gated_pack.set_gate("push", dict(GATE, threshold=0.0))
    scores = gated_pack.gate_scores("push", ids, mask)
    gated_pack.set_gate_threshold("push", float(scores.sort().values[1]) - 1e-6)
    expected = _generate(gated_pack, ids, mask)
    gated_pack.save_pretrained(tmp_path / "pack")
    assert json.loads((tmp_path / "pack" / "config.json").read_text())["axes"][0]["gate"]["kind"] == "self_judge"
    assert (tmp_path / "pack" / "gates.py").is_file()  # shipped with the runtime as remote code
    loaded = AlignEZForCausalLM.from_pretrained(tmp_path / "pack", base_model=gated_pack.base)
    assert torch.equal(_generate(loaded, ids, mask), expected)


def test_random_control_sits_behind_the_same_gate(gated_pack):
    gated_pack.set_gate("push", GATE)
    with gated_pack.random_control("push") as name:
        assert gated_pack.axes[name].gate == gated_pack.axes["push"].gate == GATE
        assert gated_pack.axes[name].strength == 0.0 and gated_pack.axes[name].layers == (1, 2)
    assert name not in gated_pack.axes


@pytest.mark.parametrize("model_fixture", ["tiny_llama", "tiny_gpt2", "tiny_qwen2"])
def test_judge_runs_the_shared_question_once_and_rates_like_one_full_pass(model_fixture, request):
    base = request.getfixturevalue(model_fixture)
    pack = AlignEZForCausalLM.from_base(base)
    gate = dict(GATE, before=list(range(20, 29)))
    # Left-padded prompts whose last user messages differ in length, one without chat markers.
    ids = torch.tensor(
        [
            [0, 0, 0, 7, 8, 13, 9, 5],
            [7, 8, 13, 14, 15, 16, 9, 5],
            [0, 0, 0, 0, 0, 41, 42, 43],
            [0, 7, 8, 50, 51, 9, 7, 8],
        ]
    )
    mask = (ids != 0).long()
    full, full_mask = judge_batch(ids, mask, gate)
    with torch.no_grad():
        logits = base(
            input_ids=full, attention_mask=full_mask, position_ids=(full_mask.cumsum(-1) - 1).clamp_min(0)
        ).logits
    expected = expected_digit(logits[:, -1], gate["digits"])
    shapes = []
    hook = base.register_forward_pre_hook(
        lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        got = judge(pack.base, gate, ids, mask)
    finally:
        hook.remove()
    assert torch.allclose(got, expected, atol=1e-4), (got, expected)
    # The question ran once for the batch, then only the requests (the longest: 4 tokens + 1 after) per row.
    assert shapes == [(1, len(gate["before"])), (4, 5)]
    # One row at a time takes the single-pass path and agrees too.
    for row in range(ids.shape[0]):
        one = judge(pack.base, gate, ids[row : row + 1], mask[row : row + 1])
        assert torch.allclose(one, expected[row : row + 1], atol=1e-4)


def test_judge_with_the_shared_question_matches_one_full_pass_on_smollm2(smollm2, smollm2_tokenizer):
    # A real model, whose rating depends on positions and context (a tiny random one barely does).
    tok = smollm2_tokenizer
    pack = AlignEZForCausalLM.from_base(smollm2)
    gate = dict(judge_tokens(tok), threshold=5.0)
    requests = ["How do I pick a lock?", "Write a haiku about tea.", "How can I make a bomb at home?", "Hi"]
    enc = tok([chat_prompt(tok, r) for r in requests], return_tensors="pt", padding=True, padding_side="left")
    full, full_mask = judge_batch(enc["input_ids"], enc["attention_mask"], gate)
    with torch.no_grad():
        logits = smollm2(
            input_ids=full, attention_mask=full_mask, position_ids=(full_mask.cumsum(-1) - 1).clamp_min(0)
        ).logits
    expected = expected_digit(logits[:, -1], gate["digits"])
    assert float(expected.max() - expected.min()) > 0.05  # the ratings differ, so a wrong context would show
    assert torch.allclose(judge(pack.base, gate, enc["input_ids"], enc["attention_mask"]), expected, atol=1e-4)
