"""The edit maths against small hand-computed cases."""

import math

import pytest
import torch

from alignez_hf.runtime.edits import (
    axis_edit,
    compose,
    layer_scores,
    query_direction_mask,
    top_n_layers,
)

E1 = torch.tensor([[1.0, 0.0, 0.0]])
E12 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_additive_rule_pushes_by_scales():
    x = torch.tensor([[5.0, -2.0, 1.0]])
    edit = axis_edit(x, E12, torch.tensor([2.0, -0.5]), "additive")
    assert torch.allclose(edit, torch.tensor([[2.0, -0.5, 0.0]]))


def test_tanh_rule_matches_paper_formula():
    x = torch.tensor([[0.5, -1.0, 3.0]])
    edit = axis_edit(x, E12, torch.ones(2), "tanh")
    assert torch.allclose(edit, torch.tensor([[math.tanh(0.5), math.tanh(-1.0), 0.0]]))


def test_relu_suppress_removes_only_positive_projection():
    x = torch.tensor([[2.0, -1.0, 3.0]])
    edit = axis_edit(x, E12, torch.ones(2), "relu_suppress")
    assert torch.allclose(edit, torch.tensor([[-2.0, 0.0, 0.0]]))
    # strength 1 removes the positive component along theta_1 exactly
    assert torch.allclose(x + edit, torch.tensor([[0.0, -1.0, 3.0]]))


def test_mask_drops_directions_per_row():
    x = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    edit = axis_edit(x, E12, torch.tensor([1.0, 1.0]), "additive", mask)
    assert torch.allclose(edit, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))


def test_unknown_rule_is_rejected():
    with pytest.raises(ValueError, match="known: additive"):
        axis_edit(torch.zeros(1, 3), E1, torch.ones(1), "multiply")


def test_sequential_composition_uses_per_row_strengths():
    x = torch.zeros(2, 3)
    edits = [
        (E1, torch.ones(1), "additive", None, torch.tensor([1.0, 0.0])),
        (torch.tensor([[0.0, 1.0, 0.0]]), torch.ones(1), "additive", None, torch.tensor([2.0, 3.0])),
    ]
    out = compose(x, edits)
    assert torch.allclose(out, torch.tensor([[1.0, 2.0, 0.0], [0.0, 3.0, 0.0]]))


def test_paper_composition_two_axes():
    x = torch.tensor([[1.0, 1.0, 0.0]])
    w1, w2 = torch.tensor([0.3]), torch.tensor([0.7])
    e1 = (E1, torch.ones(1), "tanh", None, w1)
    e2 = (torch.tensor([[0.0, 1.0, 0.0]]), torch.ones(1), "tanh", None, w2)
    x1 = x + 0.3 * torch.tensor([[math.tanh(1.0), 0.0, 0.0]])
    x2 = x1 + 0.7 * torch.tensor([[0.0, math.tanh(1.0), 0.0]])
    assert torch.allclose(compose(x, [e1, e2], "paper"), 0.3 * x1 + 0.7 * x2)


def test_paper_composition_three_axes_averages():
    x = torch.zeros(1, 3)
    dirs = torch.eye(3)
    edits = [(dirs[i : i + 1], torch.ones(1), "additive", None, torch.tensor([3.0])) for i in range(3)]
    assert torch.allclose(compose(x, edits, "paper"), torch.ones(1, 3))


def test_direction_filter_and_layer_scores():
    q = torch.tensor([[1.0, -1.0, 0.0]])
    mask = query_direction_mask(q, E12)
    assert mask.tolist() == [[0.0, 1.0]]  # already aligned with theta_1, not with theta_2
    score = layer_scores(q, E12, mask)
    assert torch.allclose(score, torch.tensor([1 / math.sqrt(2)]))


def test_top_n_layers_per_row():
    scores = {3: torch.tensor([0.1, 0.9]), 5: torch.tensor([0.5, 0.2]), 7: torch.tensor([0.4, 0.8])}
    chosen = top_n_layers(scores, 2)
    assert [chosen[layer].tolist() for layer in (3, 5, 7)] == [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]


def test_paper_mix_of_a_row_does_not_depend_on_the_other_rows():
    torch.manual_seed(0)
    d = 6
    x = torch.randn(3, d)
    terms = [
        (torch.nn.functional.normalize(torch.randn(2, d), dim=-1), torch.ones(2), "tanh", None),
        (torch.nn.functional.normalize(torch.randn(1, d), dim=-1), torch.ones(1), "additive", None),
        (torch.nn.functional.normalize(torch.randn(1, d), dim=-1), torch.ones(1), "relu_suppress", None),
    ]
    strengths = torch.tensor([[0.7, 0.0, 0.0], [0.4, 0.6, 0.0], [0.2, 0.3, 0.5]])  # rows steer 1, 2, 3 axes
    batched = compose(x, [(*t, strengths[:, i]) for i, t in enumerate(terms)], "paper")
    for row in range(3):
        own = [(*t, strengths[row : row + 1, i]) for i, t in enumerate(terms) if strengths[row, i] != 0]
        assert torch.allclose(batched[row], compose(x[row : row + 1], own, "paper")[0], atol=1e-6)
    # one axis alone is x + w e(x), whatever the composition
    alone = compose(x[:1], [(*terms[0], strengths[:1, 0])], "sequential")
    assert torch.allclose(batched[0], alone[0], atol=1e-6)
