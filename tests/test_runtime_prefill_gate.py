"""Prefill gates (conditional activation steering): read in the prompt pass, per row, saved and checked like the rest.

Real tiny random models throughout (tests/tiny_models.py); the gate's direction is random, its threshold placed
between the rows' own scores so that some rows fire and some do not.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import make_tiny_llama

from alignez_hf import AlignEZConfig, AlignEZForCausalLM
from alignez_hf.runtime.errors import GateError, PackError
from alignez_hf.runtime.gates import check_condition, condition_scores, pool_states, prefill_fires
from alignez_hf.vllm.pack import ServedPack, UnsupportedOnVLLM

NEW = 6


def _prompts(rows: int = 5, seed: int = 3):
    """Left-padded prompts of different lengths (3 to 9 tokens)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [3 + (2 * i) % 7 for i in range(rows)]
    width = max(lengths)
    ids = torch.zeros(rows, width, dtype=torch.long)
    mask = torch.zeros(rows, width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, width - n :] = torch.randint(3, 250, (n,), generator=g)
        mask[i, width - n :] = 1
    return ids, mask


def _right_padded(ids, mask):
    out_ids, out_mask = torch.zeros_like(ids), torch.zeros_like(mask)
    for i in range(ids.shape[0]):
        real = ids[i][mask[i].bool()]
        out_ids[i, : len(real)], out_mask[i, : len(real)] = real, 1
    return out_ids, out_mask


def _gate(pack, layer: int, pooling: str, comparison: str = ">", ids=None, mask=None) -> dict:
    """A prefill gate along a random direction, centred on the prompts' mean, threshold between two rows' scores."""
    g = torch.Generator().manual_seed(11)
    ids, mask = (ids, mask) if ids is not None else _prompts()
    states = pack.prompt_states(ids, mask, layers=[layer], pooling=pooling)[layer]
    tensors = {"direction": torch.randn(states.shape[1], generator=g), "mean": states.mean(0)}
    tensors["direction"] /= tensors["direction"].norm()
    scores = condition_scores(states, tensors).sort().values
    middle = float((scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2)
    gate = {"kind": "prefill", "layer": layer, "pooling": pooling, "comparison": comparison, "threshold": middle}
    return {**gate, **tensors}


@pytest.fixture
def pack():
    torch.manual_seed(0)
    model = AlignEZForCausalLM.from_base(make_tiny_llama())
    model.add_axis("push", {1: torch.randn(32) * 40, 2: torch.randn(32) * 40}, strength=1.0)
    model.add_axis("plain", {1: torch.randn(32) * 40}, strength=0.0)
    return model


def _generate(model, ids, mask, **kw):
    return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, pad_token_id=0, **kw)


def _by_hand(model, name, ids, mask, fires, strength=1.0, **kw):
    """The same call with the gate removed and the strengths set per row from ``fires``."""
    gate = model.axes[name].gate
    model.set_gate(name, None)
    try:
        return _generate(model, ids, mask, steering=[{name: strength * float(f)} for f in fires], **kw)
    finally:
        model.set_gate(name, gate)


class PassCounter:
    """Counts the base model's forward passes and the query length of each."""

    def __init__(self, base):
        self.lengths: list[int] = []
        self.handle = base.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        reference = ids if ids is not None else kwargs.get("inputs_embeds")
        self.lengths.append(int(reference.shape[1]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ------------------------------------------------------------------------------------------ scores and batching
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_a_rows_score_does_not_depend_on_its_neighbours_or_padding(pack, pooling):
    ids, mask = _prompts(6)
    gate = _gate(pack, 2, pooling, ids=ids, mask=mask)
    pack.set_gate("push", gate)
    batched = pack.gate_scores("push", ids, mask)
    assert batched.shape == (6,) and batched.dtype == torch.float32
    assert bool(((batched >= -1) & (batched <= 1)).all())
    right = pack.gate_scores("push", *_right_padded(ids, mask))
    alone = torch.cat([pack.gate_scores("push", ids[i : i + 1, -int(mask[i].sum()) :]) for i in range(6)])
    shuffled = torch.tensor([3, 0, 5, 1, 4, 2])
    moved = pack.gate_scores("push", ids[shuffled], mask[shuffled])
    for other in (right, alone, moved[shuffled.argsort()]):
        assert torch.allclose(batched, other, atol=1e-5), (batched, other)
    # The decisions agree too (no score sits within the numerical noise of the threshold).
    assert float((batched - gate["threshold"]).abs().min()) > 1e-4
    assert torch.equal(prefill_fires(gate, right), prefill_fires(gate, batched))


def test_pooling_ignores_padding():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]])
    assert torch.equal(pool_states(hidden, mask, "last"), torch.stack([hidden[0, 3], hidden[1, 1]]))
    assert torch.allclose(
        pool_states(hidden, mask, "mean"), torch.stack([hidden[0, 1:].mean(0), hidden[1, :2].mean(0)])
    )
    assert torch.equal(pool_states(hidden, None, "last"), hidden[:, -1])


def test_scores_are_the_cosine_with_the_direction_after_centring():
    states = torch.tensor([[3.0, 4.0], [1.0, 1.0], [1.0, -1.0]])
    tensors = {"direction": torch.tensor([1.0, 0.0]), "mean": torch.tensor([1.0, 0.0])}
    assert condition_scores(states, tensors).tolist() == pytest.approx([2 / (4 + 16) ** 0.5, 0.0, 0.0])
    gate = {"comparison": "<", "threshold": 0.1}
    assert prefill_fires(gate, torch.tensor([0.0, 0.2])).tolist() == [True, False]


# ---------------------------------------------------------------------------------------------- generate, forward
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_generate_reads_the_gate_in_its_own_prefill_and_steers_the_rows_it_fires_on(pack, pooling):
    ids, mask = _prompts()
    pack.set_gate("push", _gate(pack, 2, pooling))
    fires = prefill_fires(pack.axes["push"].gate, pack.gate_scores("push", ids, mask))
    assert 0 < int(fires.sum()) < len(fires)
    with PassCounter(pack.base) as gated:
        out = _generate(pack, ids, mask)
    # One pass over the prompt (the gate's read, kept as the prefill), then one token per step: the first step
    # recomputes the prompt's last token with edits. No second pass over the prompt.
    assert gated.lengths == [ids.shape[1]] + [1] * NEW
    with PassCounter(pack.base) as ungated:
        hand = _by_hand(pack, "push", ids, mask, fires)
    assert ungated.lengths == [ids.shape[1]] + [1] * (NEW - 1)
    assert torch.equal(out, hand)
    with pack.steering_disabled():
        base = _generate(pack, ids, mask)
    steered = _by_hand(pack, "push", ids, mask, torch.ones(len(fires), dtype=torch.bool))
    assert all(not torch.equal(steered[i], base[i]) for i in range(len(fires)))  # the axis changes every row
    for i, f in enumerate(fires.tolist()):
        assert torch.equal(out[i], (steered if f else base)[i])


def test_generate_with_a_gate_that_fires_nowhere_is_the_base_model(pack):
    ids, mask = _prompts()
    gate = _gate(pack, 1, "last")
    pack.set_gate("push", {**gate, "threshold": 2.0})  # a cosine is never above 2
    with pack.steering_disabled():
        base = _generate(pack, ids, mask)
    with PassCounter(pack.base) as counted:
        assert torch.equal(_generate(pack, ids, mask), base)
    assert counted.lengths[0] == ids.shape[1] and counted.lengths.count(ids.shape[1]) == 1
    pack.set_gate("push", {**gate, "threshold": -2.0, "comparison": ">"})  # fires everywhere
    assert torch.equal(_generate(pack, ids, mask), _by_hand(pack, "push", ids, mask, torch.ones(5)))


def test_per_query_layers_and_the_gate_share_one_read(pack):
    ids, mask = _prompts()
    pack.set_gate("push", _gate(pack, 3, "mean"))
    fires = prefill_fires(pack.axes["push"].gate, pack.gate_scores("push", ids, mask))
    with pack.steering_options(layer_policy="per_query", top_n=1):
        with PassCounter(pack.base) as counted:
            out = _generate(pack, ids, mask)
        assert counted.lengths.count(ids.shape[1]) == 1
        assert torch.equal(out, _by_hand(pack, "push", ids, mask, fires))


def test_beams_read_the_gate_in_a_pass_that_stops_at_its_layer(pack):
    ids, mask = _prompts(3)
    pack.set_gate("push", _gate(pack, 1, "last", ids=ids, mask=mask))
    fires = prefill_fires(pack.axes["push"].gate, pack.gate_scores("push", ids, mask))
    calls = []
    handle = pack._decoder_layers[3].register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        out = _generate(pack, ids, mask, num_beams=2)
    finally:
        handle.remove()
    assert len(calls) == NEW  # the last layer ran only in generate's own passes: the gate's read stopped at layer 1
    assert torch.equal(out, _by_hand(pack, "push", ids, mask, fires, num_beams=2))


def test_forward_gates_each_row_like_by_hand(pack):
    ids, mask = _prompts()
    pack.set_gate("push", _gate(pack, 2, "last"))
    fires = prefill_fires(pack.axes["push"].gate, pack.gate_scores("push", ids, mask))
    deepest = []
    handle = pack._decoder_layers[3].register_forward_hook(lambda m, a, o: deepest.append(1))
    try:
        with torch.no_grad():
            logits = pack(input_ids=ids, attention_mask=mask).logits
    finally:
        handle.remove()
    assert len(deepest) == 1  # the gate's own read stopped after layer 2
    gate = pack.axes["push"].gate
    pack.set_gate("push", None)
    with torch.no_grad():
        hand = pack(input_ids=ids, attention_mask=mask, steering=[{"push": float(f)} for f in fires]).logits
    pack.set_gate("push", gate)
    assert torch.allclose(logits, hand, atol=1e-5)
    # inputs_embeds work too: the gate reads hidden states, not token ids.
    with torch.no_grad():
        embeds = pack.get_input_embeddings()(ids)
        assert torch.allclose(pack(inputs_embeds=embeds, attention_mask=mask).logits, hand, atol=1e-5)


# -------------------------------------------------------------------------------------------------- the registry
def test_the_gate_keeps_its_tensors_through_threshold_changes_and_controls(pack):
    gate = _gate(pack, 2, "last")
    pack.set_gate("push", gate)
    view = pack.axes["push"].gate
    assert torch.allclose(view["direction"], gate["direction"]) and torch.equal(view["mean"], gate["mean"])
    view_direction = view["direction"].clone()
    view["direction"].zero_()  # a copy: changing it changes nothing
    assert float(pack.axes["push"].gate["direction"].norm()) == pytest.approx(1.0)
    pack.set_gate_threshold("push", 0.25)
    moved = pack.axes["push"].gate
    assert moved["threshold"] == 0.25 and torch.equal(moved["direction"], view_direction)
    assert pack.axis_tensors("push")["gate"].keys() == {"direction", "mean"}
    with pack.random_control("push") as name:
        control = pack.axes[name].gate
        assert control["threshold"] == 0.25 and torch.allclose(control["direction"], view_direction)
    pack.set_gate("push", None)
    assert pack.axes["push"].gate is None
    assert not any(".gate." in key for key in pack.steering_state_dict())
    with pytest.raises(GateError, match="needs the tensors"):
        pack.set_gate("push", {k: v for k, v in gate.items() if k not in ("direction", "mean")})


def test_prefill_gate_survives_save_and_load(pack, tmp_path):
    ids, mask = _prompts()
    pack.set_gate("push", _gate(pack, 2, "mean"))
    expected, scores = _generate(pack, ids, mask), pack.gate_scores("push", ids, mask)
    pack.save_pretrained(tmp_path / "pack")
    entry = json.loads((tmp_path / "pack" / "config.json").read_text())["axes"][0]
    assert entry["gate"] == {k: v for k, v in pack.axes["push"].gate.items() if k not in ("direction", "mean")}
    tensors = load_file(str(tmp_path / "pack" / "steering.safetensors"))
    assert tensors["push.gate.direction"].shape == tensors["push.gate.mean"].shape == (32,)
    loaded = AlignEZForCausalLM.from_pretrained(tmp_path / "pack", base_model=pack.base)
    assert torch.equal(loaded.gate_scores("push", ids, mask), scores)
    assert torch.equal(_generate(loaded, ids, mask), expected)


# ---------------------------------------------------------------------------------------------------- errors
BAD_GATES = [
    ({"layer": 4}, "base has 4 layers"),
    ({"layer": -1}, "must be a layer index"),
    ({"layer": True}, "must be a layer index"),
    ({"layer": "2"}, "must be a layer index"),
    ({"threshold": float("nan")}, "finite number"),
    ({"threshold": None}, "finite number"),
    ({"comparison": ">="}, "'comparison' must be one of"),
    ({"pooling": "max"}, "'pooling' must be one of"),
    ({"kind": "cast"}, "kind in"),
]


@pytest.mark.parametrize("change, message", BAD_GATES)
def test_malformed_prefill_gate_dicts_are_refused_clearly(pack, tmp_path, change, message):
    good = _gate(pack, 2, "last")
    with pytest.raises(GateError, match=message):
        pack.set_gate("push", {**good, **change})
    json_gate = {**{k: v for k, v in good.items() if k not in ("direction", "mean")}, **change}
    axis = {"name": "a", "rule": "additive", "strength": 1.0, "gate": json_gate}
    with pytest.raises(ValueError, match=message):
        AlignEZConfig(base_fingerprint={"num_hidden_layers": 4}, axes=[axis])


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({"direction": torch.zeros(32)}, "unit vector"),
        ({"direction": torch.ones(31)}, r"shape \[32\]"),
        ({"mean": torch.ones(2, 32)}, r"shape \[32\]"),
        ({"mean": torch.full((32,), float("inf"))}, "NaN or Inf"),
        ({"direction": "up"}, "not a tensor of numbers"),
    ],
)
def test_malformed_prefill_gate_tensors_are_refused_clearly(pack, tensors, message):
    with pytest.raises(GateError, match=message):
        pack.set_gate("push", {**_gate(pack, 2, "last"), **tensors})
    assert pack.axes["push"].gate is None


def test_a_direction_in_config_json_is_refused():
    gate = {"kind": "prefill", "layer": 1, "pooling": "last", "comparison": ">", "threshold": 0.0, "direction": [1.0]}
    with pytest.raises(ValueError, match="stored in steering.safetensors"):
        AlignEZConfig(base_fingerprint={}, axes=[{"name": "a", "rule": "additive", "strength": 1.0, "gate": gate}])


def _tamper(folder, change):
    path = folder / "steering.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.pop("push.gate.mean"), r"needs the tensors .* \['mean'\] missing"),
        (lambda t: t.__setitem__("push.gate.direction", 2 * t["push.gate.direction"]), "unit vector"),
        (lambda t: t.__setitem__("push.gate.mean", torch.zeros(32, dtype=torch.int32)), "floating-point"),
        (lambda t: t.__setitem__("push.gate.mean", torch.zeros(16)), r"shape \[32\]"),
        (lambda t: t.__setitem__("push.gate.direction", torch.full((32,), float("nan"))), "NaN or Inf"),
        (lambda t: t.__setitem__("plain.gate.direction", torch.ones(32)), "has no prefill gate"),
        (lambda t: t.__setitem__("push.gate.scale", torch.ones(1)), "unexpected tensor"),
    ],
)
def test_loading_checks_the_gate_tensors(pack, tmp_path, change, message):
    pack.set_gate("push", _gate(pack, 2, "last"))
    pack.save_pretrained(tmp_path / "pack")
    _tamper(tmp_path / "pack", change)
    with pytest.raises(PackError, match=message):
        AlignEZForCausalLM.from_pretrained(tmp_path / "pack", base_model=pack.base)


def test_loading_refuses_a_gate_layer_the_base_does_not_have(pack, tmp_path):
    pack.set_gate("push", _gate(pack, 2, "last"))
    pack.save_pretrained(tmp_path / "pack")
    config = json.loads((tmp_path / "pack" / "config.json").read_text())
    config["axes"][0]["gate"]["layer"] = 9
    (tmp_path / "pack" / "config.json").write_text(json.dumps(config))
    with pytest.raises(PackError, match="reads layer 9, but the base has 4 layers"):
        AlignEZForCausalLM.from_pretrained(tmp_path / "pack", base_model=pack.base)


def test_check_condition_normalises_what_it_is_given():
    out = check_condition("a", {"direction": [3.0, 4.0], "mean": [0.0, 1.0]}, 2)
    assert out["direction"].tolist() == pytest.approx([0.6, 0.8]) and out["mean"].dtype == torch.float32


def test_vllm_refuses_a_prefill_gated_pack_with_the_reason(pack, tmp_path):
    pack.set_gate("push", _gate(pack, 2, "last"))
    pack.save_pretrained(tmp_path / "pack")
    with pytest.raises(UnsupportedOnVLLM, match="prefill gate.*set_gate\\(name, None\\)"):
        ServedPack(tmp_path / "pack")
