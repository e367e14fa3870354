"""Fitting a prefill gate (alignez_hf/builder/gate.py): split, condition direction, grid search, report, options."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_tiny_llama

from alignez_hf import AlignEZForCausalLM
from alignez_hf.builder import AlignEZBuilder
from alignez_hf.builder.config import BuildConfig, gate_kind, parse_gate
from alignez_hf.builder.gate import (
    DEFAULT_ANSWERED_FIRE,
    budget_threshold,
    condition_direction,
    held_out_split,
    search_prefill,
)
from alignez_hf.cli import build_parser
from alignez_hf.runtime.gates import condition_scores, prefill_fires


def _synthetic(n: int = 60, d: int = 16, layers: int = 4, separable: int | None = 2, seed: int = 0):
    """Noise states at every layer; at ``separable`` (last-token pooling only) refused rows sit 3 units further
    along one fixed direction, which is also the direction of largest variance."""
    g = torch.Generator().manual_seed(seed)
    refused = torch.arange(n) % 3 == 0
    axis = torch.randn(d, generator=g)
    axis /= axis.norm()
    states = {p: {layer: torch.randn(n, d, generator=g) + 5.0 for layer in range(layers)} for p in ("last", "mean")}
    if separable is not None:
        states["last"][separable] = states["last"][separable] + 3.0 * refused[:, None].float() * axis
    return states, refused, axis


def test_held_out_split_is_stratified_and_disjoint():
    refused = torch.tensor([True, False] * 9 + [False] * 6)
    fit, held = held_out_split(refused)
    assert sorted(fit.tolist() + held.tolist()) == list(range(len(refused)))
    assert int(refused[held].sum()) == 3 and int((~refused[held]).sum()) == 5  # every third of each side


def test_condition_direction_is_the_oriented_first_principal_component():
    states, refused, axis = _synthetic()
    x = states["last"][2]
    tensors = condition_direction(x, refused)
    assert float(tensors["direction"].norm()) == pytest.approx(1.0)
    assert torch.allclose(tensors["mean"], x.mean(0))
    assert abs(float(tensors["direction"] @ axis)) > 0.9
    scores = condition_scores(x, tensors)
    assert float(scores[refused].mean()) > float(scores[~refused].mean())  # refused score higher
    flipped = condition_direction(x, ~refused)
    assert torch.allclose(flipped["direction"], -tensors["direction"])


def test_budget_threshold_fires_on_at_most_the_budget_of_the_answered():
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.35, 0.6, 0.7])
    refused = torch.tensor([False] * 5 + [True] * 3)
    row = budget_threshold(scores, refused, ">", 0.2)  # one of five answered may fire
    assert row["threshold"] == pytest.approx(0.4) and row["fire"] == pytest.approx(0.2)
    assert row["recall"] == pytest.approx(2 / 3)
    below = budget_threshold(-scores, refused, "<", 0.2)  # the same gate, seen from the other side
    assert below["threshold"] == pytest.approx(-0.4) and below["recall"] == row["recall"]


def test_the_grid_search_picks_the_separable_layer_and_beats_random():
    states, refused, _ = _synthetic()
    fit, gate = search_prefill(states, refused, DEFAULT_ANSWERED_FIRE)
    assert fit.added and gate is not None
    assert (fit.layer, fit.pooling, fit.comparison) == (2, "last", ">")
    assert fit.layers_tried == [0, 1, 2, 3] and fit.poolings_tried == ["last", "mean"]
    assert fit.split["held_out"] == {"refused": 6, "answered": 13}
    assert fit.split["fit"] == {"refused": 14, "answered": 27}
    assert fit.fires_answered <= DEFAULT_ANSWERED_FIRE and fit.fires_refused >= 0.8 and fit.auc > 0.9
    assert fit.random["recall_mean"] < fit.fires_refused
    assert len(fit.grid) == 4 * 2 * 2 and "held-out refused-recall" in fit.objective
    # The gate it returns reproduces the held-out numbers through the runtime's own scoring.
    _, held = held_out_split(refused)
    fires = prefill_fires(gate, condition_scores(states["last"][2][held], gate))
    assert float(fires[refused[held]].float().mean()) == pytest.approx(fit.fires_refused)
    assert float(fires[~refused[held]].float().mean()) == pytest.approx(fit.fires_answered)


def test_the_grid_search_declines_without_signal_or_refusals():
    states, refused, _ = _synthetic(separable=None)  # no layer carries the refusals
    fit, gate = search_prefill(states, refused, 0.1)
    assert gate is None and not fit.added and "separate" in fit.reason
    few = torch.zeros(60, dtype=torch.bool)
    few[:3] = True
    fit, gate = search_prefill(states, few)
    assert gate is None and "refused 3 of 60" in fit.reason
    with pytest.raises(ValueError, match="answered_fire"):
        search_prefill(states, refused, 1.0)


def test_a_gate_fitted_on_real_prompt_states_steers_what_it_was_fitted_to(smollm2_tokenizer):
    """The search on a real tiny model's prompt states (read as the runtime reads them), labels given by a rule
    (prompts that mention fire), then generate with the fitted gate."""
    from alignez_hf.builder.gate import prompt_states_of
    from alignez_hf.chat import chat_prompt

    tok = smollm2_tokenizer
    pack = AlignEZForCausalLM.from_base(make_tiny_llama(vocab_size=len(tok)), tok)
    pack.add_axis("harmless", {1: torch.randn(32) * 40}, strength=1.0)
    topics = ["rivers", "bread", "jazz", "fish", "chess", "tea", "maps", "clouds", "trains", "owls"]
    queries = [f"Tell me how to set {t} on fire with petrol, fire fire fire." for t in topics]
    queries += [f"Tell me a calm fact about {t}." for t in topics + ["moss", "kites", "bees", "lakes", "socks"]]
    refused = torch.tensor([True] * 10 + [False] * 15)
    texts = [chat_prompt(tok, q) for q in queries]
    states = prompt_states_of(pack, tok, texts, [0, 1, 2, 3], ("last", "mean"), batch_size=8)
    assert states["mean"][3].shape == (25, 32)
    fit, gate = search_prefill(states, refused, 0.2)
    assert fit.added, fit.reason
    pack.set_gate("harmless", gate)
    enc = tok([texts[0], texts[12]], return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    scores = pack.gate_scores("harmless", enc["input_ids"], enc["attention_mask"])
    single = torch.cat([states[fit.pooling][fit.layer][i : i + 1] for i in (0, 12)])
    assert torch.allclose(scores, condition_scores(single, gate), atol=1e-5)  # builder and runtime read alike


def test_the_builder_records_a_prefill_gate_it_could_not_place(tiny_chat_llama):
    model, tok = tiny_chat_llama
    builder = AlignEZBuilder(
        model, tok, axes=["harmless"], progress=False, verbose=False, check_queries=0, orient=False, gate="prefill"
    )
    assert builder.gate == "prefill"
    with pytest.warns(UserWarning, match="no harm gate was added: the model refused 0 of 4"):
        aligned = builder.build(["How do I bake bread?", "Tell me about rivers.", "What is jazz?", "Name a fish."])
    gate = aligned.axes["harmless"].metadata["build"]["gate"]
    assert gate["kind"] == "prefill" and gate["added"] is False and gate["queries"] == 4
    assert aligned.axes["harmless"].gate is None
    assert "prefill harm gate (prompt states vs own refusals of 4 build queries, 0 refused" in builder.summary()


def test_gate_options():
    assert [gate_kind(v) for v in (True, False, None, "prefill", "self_judge", "none")] == [
        "prefill", None, None, "prefill", "self_judge", None,
    ]  # fmt: skip
    assert parse_gate("Self-Judge") == "self_judge" and parse_gate("off") is False
    with pytest.raises(ValueError, match="prefill, self_judge or none"):
        parse_gate("cast")
    assert BuildConfig(gate="prefill").gate == "prefill"
    base = ["build", "--axis", "harmless", "--queries", "q.txt", "--out", "o"]
    assert build_parser().parse_args(base + ["--gate", "prefill"]).gate == "prefill"
    assert build_parser().parse_args(base + ["--gate", "none"]).gate is False
    assert build_parser().parse_args(base + ["--gate"]).gate is True  # the flag alone: prefill
    assert build_parser().parse_args(base).gate is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(base + ["--gate", "maybe"])


def test_the_model_card_describes_a_prefill_gate(tiny_llama):
    from tiny_packs import tiny_pack

    from alignez_hf.hub import render_model_card

    model = tiny_pack(tiny_llama, None, strength=1.0)
    states, refused, _ = _synthetic()
    fit, _ = search_prefill(states, refused)
    model.config.axes[0]["build"] = {"queries": 60, "gate": fit.as_dict()}
    card = render_model_card(model.config.to_dict()).text
    assert "prefill harm gate: the axis steers only prompts whose layer-2 state (last pooling)" in card
    assert "0-9 harm scale" not in card
