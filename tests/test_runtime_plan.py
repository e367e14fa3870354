"""The engine-neutral steering plan (runtime/plan.py): strengths, fused pushes, per-query masks, rows."""

import pytest
import torch

from alignez_hf.runtime.edits import compose
from alignez_hf.runtime.plan import AxisEdit, build_plan, per_query_masks, resolve_strengths


def _axis(name, rule="additive", layers=(1, 2), k=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    directions = {}
    for layer in layers:
        q, _ = torch.linalg.qr(torch.randn(d, k, generator=g))
        directions[layer] = q.T.contiguous()
    scales = {layer: torch.rand(k, generator=g) + 0.5 for layer in layers}
    return AxisEdit(name, rule, directions, scales)


def test_resolve_strengths_defaults_dicts_and_rows():
    defaults = {"a": 1.0, "b": 0.0}
    assert {k: v.tolist() for k, v in resolve_strengths(None, defaults, 2).items()} == {"a": [1, 1], "b": [0, 0]}
    assert resolve_strengths({"b": 2}, defaults, 2)["b"].tolist() == [2, 2]
    rows = resolve_strengths([{"a": -1}, {}], defaults, 2)
    assert rows["a"].tolist() == [-1, 1] and rows["b"].dtype == torch.float32
    with pytest.raises(ValueError, match="2 entries but the batch has 3 rows"):
        resolve_strengths([{}, {}], defaults, 3)
    with pytest.raises(KeyError, match="Unknown axis 'c'.*a, b"):
        resolve_strengths({"c": 1}, defaults, 1)
    with pytest.raises(ValueError, match="finite number"):
        resolve_strengths({"a": float("nan")}, defaults, 1)
    with pytest.raises(ValueError, match="finite number"):
        resolve_strengths({"a": True}, defaults, 1)
    with pytest.raises(TypeError, match="steering must be"):
        resolve_strengths("a", defaults, 1)
    with pytest.raises(TypeError, match=r"steering\[1\] must be a dict"):
        resolve_strengths([{}, 3], defaults, 2)


def test_additive_axes_fuse_into_one_push_equal_to_the_sequential_rule():
    a, b = _axis("a"), _axis("b", layers=(2,), seed=1)
    strengths = {"a": torch.tensor([1.0, -2.0, 0.0]), "b": torch.tensor([0.5, 0.0, 3.0])}
    plan = build_plan([a, b], strengths, 3)
    assert sorted(plan.layers) == [1, 2]
    x = torch.randn(3, 8)
    for layer, edit in plan.layers.items():
        assert edit.push is not None and edit.push.shape == (3, 8) and edit.terms == ()
        terms = [
            (ax.directions[layer], ax.scales[layer], "additive", None, strengths[ax.name])
            for ax in (a, b)
            if layer in ax.directions
        ]
        assert torch.allclose(edit(x), compose(x, terms), atol=1e-6)
    assert torch.equal(plan.layers[1].push[2], torch.zeros(8))  # strength 0 on that row: no push at all


def test_rules_that_read_x_and_the_paper_mix_keep_their_terms():
    a, t = _axis("a"), _axis("t", rule="tanh", seed=2)
    strengths = {"a": torch.ones(2), "t": torch.full((2,), 2.0)}
    mixed = build_plan([a, t], strengths, 2)
    x = torch.randn(2, 8)
    edit = mixed.layers[1]
    assert edit.push is None and [term[2] for term in edit.terms] == ["additive", "tanh"]
    expected = compose(x, [(ax.directions[1], ax.scales[1], ax.rule, None, strengths[ax.name]) for ax in (a, t)])
    assert torch.allclose(edit(x), expected)
    paper = build_plan([a, _axis("b", seed=3)], {"a": torch.ones(2), "b": torch.ones(2)}, 2, composition="paper")
    assert paper.layers[1].push is None and paper.layers[1].composition == "paper"
    single = build_plan([a], {"a": torch.ones(2)}, 2, composition="paper")
    assert single.layers[1].push is not None  # one axis: the paper's rule is x + w e(x)


def test_zero_strength_axes_are_left_out():
    plan = build_plan([_axis("a"), _axis("b", layers=(3,))], {"a": torch.zeros(2), "b": torch.ones(2)}, 2)
    assert sorted(plan.layers) == [3]


def test_apply_in_place_equals_the_call_in_every_dtype():
    edit = build_plan([_axis("a")], {"a": torch.tensor([1.0, 3.0])}, 2).layers[1]
    tanh = build_plan([_axis("t", rule="tanh")], {"t": torch.tensor([1.0, 3.0])}, 2).layers[1]
    for e in (edit, tanh):
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(2, 5, 8).to(dtype)
            expected_last = e(x[:, -1]).to(dtype)
            expected_all = e(x).to(dtype)
            last, every = x.clone(), x.clone()
            e.apply_(last[:, -1])
            e.apply_(every)
            assert torch.equal(last[:, -1], expected_last) and torch.equal(last[:, :-1], x[:, :-1])
            assert torch.equal(every, expected_all)


def test_plan_rows_expand_for_beams_and_are_prepared_once():
    plan = build_plan([_axis("a")], {"a": torch.tensor([1.0, -1.0])}, 2)
    four = plan.layer(1, 4, torch.device("cpu"))
    assert four is plan.layer(1, 4, torch.device("cpu"))
    assert torch.equal(four.push, plan.layers[1].push.repeat_interleave(2, 0))
    with pytest.raises(RuntimeError, match="planned for 2 rows but a forward pass has 3"):
        plan.layer(1, 3, torch.device("cpu"))


def test_per_query_masks_choose_top_layers_and_unaligned_directions():
    axis = _axis("a", layers=(0, 1, 2), k=2, d=8, seed=4)
    g = torch.Generator().manual_seed(5)
    queries = {layer: torch.randn(3, 8, generator=g) for layer in (0, 1, 2)}
    masks = per_query_masks([axis], queries, top_n=1)["a"]
    chosen = torch.stack([masks[layer][0] for layer in (0, 1, 2)], 1)
    assert chosen.sum(1).tolist() == [1, 1, 1]
    for layer in (0, 1, 2):
        kept = masks[layer][1]
        assert torch.equal(kept, (queries[layer] @ axis.directions[layer].T <= 0).float())
    plan = build_plan([axis], {"a": torch.ones(3)}, 3, masks={"a": masks})
    for layer, edit in plan.layers.items():
        rows = masks[layer][0].bool()
        assert torch.equal(edit.push[~rows], torch.zeros_like(edit.push[~rows]))  # unchosen rows: no push
        weights = axis.scales[layer] * masks[layer][1]
        assert torch.allclose(edit.push[rows], (weights @ axis.directions[layer])[rows])
