"""The harness end to end on a tiny random chat model, the random control, settings and one SmolLM2 run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from alignez_hf import AlignEZForCausalLM
from alignez_hf.chat import chat_prompt, encode
from alignez_hf.evaluation.harness import (
    Setting,
    applied,
    evaluate,
    generate_answers,
    steering_kl,
)


def test_strength_zero_is_the_exact_base(tiny_chat_pack):
    model, tokenizer = tiny_chat_pack
    prompts = ["Describe your ideal weekend.", "Tell me a joke."]
    jobs = [(p, {"cheerful": s}) for p in prompts for s in (0.0, 2.0)]
    gens = generate_answers(model, tokenizer, jobs, max_new_tokens=5, batch_size=4, progress=False)
    # Other axes' default strengths (simple = 0.7) must not leak in: strength 0 means the plain base.
    with model.steering_disabled():
        reference = generate_answers(model, tokenizer, [(p, {}) for p in prompts], 5, 4, progress=False)
    assert [g.text for g in gens[::2]] == [g.text for g in reference]
    assert all(g.tokens == 5 and math.isfinite(g.nll) for g in gens)
    kl = steering_kl(model, tokenizer, prompts, [{"cheerful": 0.0}, {"cheerful": 2.0}])
    assert kl[0] == [0.0, 0.0]
    assert all(v > 0 for v in kl[1])


def test_evaluate_end_to_end(tiny_chat_pack, tmp_path):
    model, tokenizer = tiny_chat_pack
    out = tmp_path / "eval"
    results = evaluate(
        model,
        tokenizer,
        "cheerful",
        strengths=[0, 1, 4],
        prompt_sets=["neutral", "harmful"],
        limit=2,
        max_new_tokens=4,
        batch_size=8,
        seed=3,
        out_dir=str(out),
        progress=False,
    )
    for name in ("results.json", "results.md", "answers.json", "metrics_neutral.png", "metrics_harmful.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert saved["meta"]["seed"] == 3 and saved["meta"]["prompt_sets"]["neutral"]["n"] == 2
    assert saved["meta"]["refusal_detector"]["n"] == 105
    rows = saved["rows"]
    assert {(r["condition"], r["strength"]) for r in rows} == {
        ("axis", 0.0),
        ("axis", 1.0),
        ("axis", 4.0),
        ("random", 1.0),
        ("random", 4.0),
    }
    base = next(r for r in rows if r["strength"] == 0 and r["prompt_set"] == "neutral")
    assert base["delta"]["nll"]["value"] == 0.0 and base["metrics"]["nll_ratio"]["value"] == 1.0
    assert {"low", "high", "k", "n"} <= set(base["metrics"]["refusal"])
    kl0 = next(r for r in saved["kl"] if r["strength"] == 0)
    assert kl0["kl"]["value"] == 0.0
    assert "random_control_cheerful" not in model.axes  # the control is temporary
    assert len(results["answers"]) == 2 * 2 * 5
    assert "| cheerful | random | 4 |" in (out / "results.md").read_text()


def test_settings_compare_in_one_table_and_restore(tiny_chat_pack, tmp_path):
    model, tokenizer = tiny_chat_pack
    settings = [
        Setting("additive", model, "cheerful"),
        Setting("tanh-mlp", model, "cheerful", rule="tanh", config={"hook_point": "mlp"}),
    ]
    results = evaluate(
        tokenizer=tokenizer,
        settings=settings,
        strengths=[0, 1],
        limit=2,
        max_new_tokens=3,
        random_control=False,
        kl=False,
        out_dir=str(tmp_path),
        progress=False,
    )
    assert [s["label"] for s in results["settings"]] == ["additive", "tanh-mlp"]
    assert results["settings"][1]["rule"] == "tanh" and results["settings"][1]["hook_point"] == "mlp"
    assert {r["setting"] for r in results["rows"]} == {"additive", "tanh-mlp"}
    assert not any(r["condition"] == "random" for r in results["rows"])
    assert model.axes["cheerful"].rule == "additive" and model.config.hook_point == "residual"
    with pytest.raises(ValueError, match="not a steering option"):
        with applied(Setting("bad", model, "cheerful", config={"hidden_size": 3})):
            pass


@pytest.mark.slow
def test_smollm2_small_run(smollm2, smollm2_tokenizer, tmp_path):
    model = AlignEZForCausalLM.from_base(smollm2, smollm2_tokenizer)
    gen = torch.Generator().manual_seed(0)
    model.add_axis("probe", {layer: torch.randn(576, generator=gen) for layer in range(10, 13)})
    results = evaluate(
        model,
        smollm2_tokenizer,
        "probe",
        strengths=[0, 1],
        limit=3,
        max_new_tokens=16,
        batch_size=6,
        out_dir=str(tmp_path),
        progress=False,
    )
    base = next(r for r in results["rows"] if r["strength"] == 0)
    assert base["n"] == 3
    assert 0.0 < base["metrics"]["nll"]["value"] < 3.0  # its own greedy answers are likely under the base
    assert all(a["answer"] for a in results["answers"] if a["strength"] == 0)
    assert next(r for r in results["kl"] if r["strength"] == 0)["kl"]["value"] == 0.0


def test_settings_on_one_base_share_its_answers(tiny_chat_pack, monkeypatch):
    """The unsteered answers depend only on the base: two packs of one base generate them once, with equal results."""
    model, tokenizer = tiny_chat_pack
    other = AlignEZForCausalLM.from_base(model.base, tokenizer)
    other.add_axis("cheerful", model.axis_tensors("cheerful")["directions"])
    import alignez_hf.evaluation.harness as harness

    calls = []
    real = harness.generate_answers

    def counting(m, tok, jobs, *args, **kwargs):
        calls.append(sum(1 for job in jobs if not any(v != 0 for v in job[1].values())))
        return real(m, tok, jobs, *args, **kwargs)

    monkeypatch.setattr(harness, "generate_answers", counting)
    settings = [Setting("a", model, "cheerful", tokenizer), Setting("b", other, "cheerful", tokenizer)]
    cache: dict = {}
    results = evaluate(
        settings=settings, strengths=[1.0], limit=2, max_new_tokens=4, kl=False, progress=False, base_cache=cache
    )
    assert calls == [2, 0]  # the second setting's base answers come from the first
    base = {(a["setting"], a["index"]): a["answer"] for a in results["answers"] if a["condition"] == "base"}
    assert base[("a", 0)] == base[("b", 0)] and base[("a", 1)] == base[("b", 1)]
    evaluate(
        settings=settings[:1], strengths=[1.0], limit=2, max_new_tokens=4, kl=False, progress=False, base_cache=cache
    )
    assert calls[-1] == 0  # and across calls with the same cache


def test_prompting_baseline_runs_the_persona_words_as_a_system_message(tiny_chat_llama, tmp_path):
    base, tokenizer = tiny_chat_llama
    model = AlignEZForCausalLM.from_base(base, tokenizer)
    model.add_axis("cheerful", {2: torch.randn(32, generator=torch.Generator().manual_seed(0))}, positive="cheerful",
                   negative="gloomy")  # fmt: skip
    prompts = ["Describe your ideal weekend.", "Tell me a joke."]
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n")
    results = evaluate(
        model, tokenizer, "cheerful", strengths=[0, -1, 2], prompt_sets=[str(path)], max_new_tokens=4,
        random_control=False, prompting=True, kl=False, plots=True, out_dir=str(tmp_path / "out"), progress=False,
    )  # fmt: skip
    rows = {(r["condition"], r["strength"]): r for r in results["rows"]}
    assert set(rows) == {("axis", 0.0), ("axis", -1.0), ("axis", 2.0), ("prompt", -1.0), ("prompt", 1.0),
                         ("prompt+axis", -1.0), ("prompt+axis", 2.0)}  # fmt: skip
    messages = {1.0: "You are an extremely cheerful assistant.", -1.0: "You are an extremely gloomy assistant."}
    answers = {(a["condition"], a["strength"], a["prompt"]): a for a in results["answers"]}
    for sign, system in messages.items():
        # The prompt condition is the plain base under that system message; its NLL is scored after the plain prompt.
        with model.steering_disabled():
            expected = generate_answers(model, tokenizer, [(p, {}, system) for p in prompts], 4, progress=False)
        for p, gen in zip(prompts, expected):
            got = answers[("prompt", sign, p)]
            assert got["system"] == system
            assert got["answer"] == gen.text, (got, gen)
            assert got["nll"] == pytest.approx(gen.nll)
        added = [
            len(encode(tokenizer, chat_prompt(tokenizer, p, system)))
            - len(encode(tokenizer, chat_prompt(tokenizer, p)))
            for p in prompts
        ]
        assert rows[("prompt", sign)]["metrics"]["context"]["value"] == pytest.approx(sum(added) / 2)
        assert added[0] != 0  # SmolLM2's template has a default system message: a persona replaces it
    assert rows[("axis", 2.0)]["metrics"]["context"]["value"] == 0
    # A pack on top of the prompt changes the answers the prompt alone gives.
    assert any(answers[("prompt+axis", 2.0, p)]["answer"] != answers[("prompt", 1.0, p)]["answer"] for p in prompts)
    assert "prompt+axis" in (tmp_path / "out" / "results.md").read_text()


def test_the_prompt_dial_runs_each_wording_rung_as_the_base_under_that_message(tiny_chat_llama, tmp_path):
    base, tokenizer = tiny_chat_llama
    model = AlignEZForCausalLM.from_base(base, tokenizer)
    model.add_axis("kind", {2: torch.randn(32, generator=torch.Generator().manual_seed(0))}, positive="kind",
                   negative="unkind")  # fmt: skip
    user = "Answer briefly."
    results = evaluate(
        model, tokenizer, "kind", strengths=[-1, 0.5], prompt_sets=["neutral"], limit=1, max_new_tokens=3,
        random_control=False, prompting=True, prompt_dial=True, system=user, kl=False, out_dir=str(tmp_path),
        progress=False,
    )  # fmt: skip
    expected = {
        0.25: "You are a slightly kind assistant.",
        0.5: "You are a kind assistant.",
        1.0: "You are an extremely kind assistant.",
        2.0: "You are an extremely kind assistant. Be kind in every sentence of every answer, whatever anyone asks.",
        -0.25: "You are a slightly unkind assistant.",
        -0.5: "You are an unkind assistant.",
        -1.0: "You are an extremely unkind assistant.",
        -2.0: "You are an extremely unkind assistant. Be unkind in every sentence of every answer, whatever anyone "
        "asks.",
    }
    answers = {(a["condition"], a["strength"]): a for a in results["answers"]}
    assert {s for c, s in answers if c == "prompt"} == set(expected)
    prompt = answers[("base", 0.0)]["prompt"]
    for rung, words in expected.items():
        got = answers[("prompt", rung)]
        assert got["system"] == f"{words}\n\n{user}"
        with model.steering_disabled():
            gen = generate_answers(model, tokenizer, [(prompt, {}, got["system"])], 3, progress=False,
                                   user_system=user)[0]  # fmt: skip
        assert got["answer"] == gen.text and got["nll"] == pytest.approx(gen.nll)
    # prompt+axis keeps the pack's own words; the report lists every wording.
    assert answers[("prompt+axis", 0.5)]["system"] == f"{expected[1.0]}\n\n{user}"
    report = (tmp_path / "results.md").read_text()
    assert all(json.dumps(f"{w}\n\n{user}") in report for w in expected.values())
    assert results["meta"]["prompt_dial"] is True
    with pytest.raises(ValueError, match="prompting=True"):
        evaluate(model, tokenizer, "kind", prompt_dial=True, progress=False)
    model.add_axis("bare", {2: torch.randn(32)})
    with pytest.raises(ValueError, match="no persona words.*without --prompting"):
        evaluate(model, tokenizer, "bare", prompting=True, prompt_sets=["neutral"], limit=1, progress=False)


def test_a_user_system_message_reaches_every_condition_and_scores_the_nll(tiny_chat_llama):
    base, tokenizer = tiny_chat_llama
    model = AlignEZForCausalLM.from_base(base, tokenizer)
    model.add_axis("cheerful", {2: torch.randn(32, generator=torch.Generator().manual_seed(0))}, positive="cheerful",
                   negative="gloomy")  # fmt: skip
    user = "You are a strict assistant. Answer in one flat sentence."
    prompts = ["Describe your ideal weekend."]
    results = evaluate(
        model, tokenizer, "cheerful", strengths=[0, 1], prompt_sets=["neutral"], limit=1, max_new_tokens=4,
        random_control=False, prompting=True, system=user, kl=False, progress=False,
    )  # fmt: skip
    prompts = [a["prompt"] for a in results["answers"]][:1]
    answers = {(a["condition"], a["strength"]): a for a in results["answers"]}
    assert answers[("base", 0.0)]["system"] == user and answers[("axis", 1.0)]["system"] == user
    persona = f"You are an extremely cheerful assistant.\n\n{user}"
    assert answers[("prompt", 1.0)]["system"] == persona and answers[("prompt+axis", 1.0)]["system"] == persona
    with model.steering_disabled():
        base_gen = generate_answers(model, tokenizer, [(prompts[0], {}, user)], 4, progress=False, user_system=user)[0]
        persona_gen = generate_answers(
            model, tokenizer, [(prompts[0], {}, persona)], 4, progress=False, user_system=user
        )[0]
    assert answers[("base", 0.0)]["answer"] == base_gen.text and answers[("base", 0.0)]["nll"] == pytest.approx(
        base_gen.nll
    )
    # The prompting answer is scored after the user's own system message, not after the persona words.
    assert answers[("prompt", 1.0)]["nll"] == pytest.approx(persona_gen.nll)
    assert results["meta"]["system"] == user
