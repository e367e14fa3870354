import math

import pytest
import torch

from alignez_hf.builder.subspace import (
    SubspaceError,
    fit_subspace,
    keep_pairs,
    orient,
    rank_for_energy,
    split_half_accuracy,
    subspace_cosine,
)


def test_rank_rule_keeps_smallest_k_with_the_energy_and_respects_the_cap():
    s = torch.tensor([3.0, 2.0, 1.0, 0.5])  # energies 9, 4, 1, 0.25 of 14.25
    assert rank_for_energy(s, 0.6) == 1  # 9/14.25 = 0.63
    assert rank_for_energy(s, 0.9) == 2  # 13/14.25 = 0.91
    assert rank_for_energy(s, 0.95) == 3
    assert rank_for_energy(s, 1.0) == 4
    assert rank_for_energy(s, 1.0, max_rank=2) == 2
    with pytest.raises(ValueError):
        rank_for_energy(s, 0.0)


def test_orientation_points_from_negative_to_positive():
    diffs = torch.tensor([[1.0, 0.0], [2.0, 0.5]])
    flipped = orient(torch.tensor([[-1.0, 0.0], [0.0, 1.0]]), diffs)
    assert torch.equal(flipped, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_fit_subspace_finds_the_planted_direction_with_the_right_sign():
    torch.manual_seed(0)
    d, n = 16, 40
    planted = torch.zeros(d)
    planted[3] = 1.0
    neg = torch.randn(n, d)
    pos = neg + 3.0 * planted + 0.05 * torch.randn(n, d)
    sub = fit_subspace(pos, neg, layer=2, energy=0.9, cos_threshold=None)
    assert sub.rank == 1
    assert float(sub.directions[0] @ planted) > 0.99  # oriented: never the flipped sign
    assert float(sub.mean_pos_proj[0] - sub.mean_neg_proj[0]) == pytest.approx(3.0, abs=0.1)
    assert sub.separation == 1.0
    mean = fit_subspace(pos, neg, layer=2, method="mean", cos_threshold=None)
    assert float(mean.directions[0] @ planted) > 0.99


def test_filtering_drops_similar_and_empty_pairs():
    pos = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    neg = torch.tensor([[1.0, 0.1], [0.0, 1.0], [0.0, 1.0]])  # first pair: cosine 0.995
    valid = torch.tensor([True, True, False])
    assert keep_pairs(pos, neg, 0.8, valid).tolist() == [False, True, False]
    assert keep_pairs(pos, neg, None).tolist() == [True, True, True]
    assert fit_subspace(pos, neg, 0, cos_threshold=0.8, valid=valid).pairs_kept == 1


def test_every_pair_filtered_is_a_clear_error():
    x = torch.randn(5, 8)
    with pytest.raises(SubspaceError, match="more queries.*keywords.*cos_threshold"):
        fit_subspace(x, x * 2, layer=7, cos_threshold=0.8)


def test_split_half_accuracy_is_chance_on_noise_and_one_on_signal():
    torch.manual_seed(1)
    noise = torch.randn(200, 32)
    assert abs(split_half_accuracy(noise) - 0.5) < 0.1
    assert split_half_accuracy(noise + 5.0) == 1.0
    assert math.isnan(split_half_accuracy(noise[:3]))


def test_subspace_cosine_is_the_largest_principal_cosine():
    x, y, z = torch.eye(3)
    assert subspace_cosine(x, x) == pytest.approx(1.0)
    assert subspace_cosine(x, y) == pytest.approx(0.0, abs=1e-12)
    # Rank 1: |cos|, whatever the sign or the length of the rows.
    assert subspace_cosine(x, torch.tensor([1.0, 1.0, 0.0])) == pytest.approx(math.sqrt(0.5))
    assert subspace_cosine(-x, 2 * torch.tensor([[1.0, 1.0, 0.0]])) == pytest.approx(math.sqrt(0.5))
    # A plane and a line: the cosine of the line with its projection on the plane (0.6 = |(0.6, 0)|).
    plane = torch.stack([x, y])
    assert subspace_cosine(plane, torch.tensor([0.6, 0.0, 0.8])) == pytest.approx(0.6)
    assert subspace_cosine(torch.tensor([0.0, 0.6, 0.8]), plane) == pytest.approx(0.6)
    # Two planes meeting in a line share a direction: cosine 1, even with non-orthonormal rows.
    assert subspace_cosine(plane, torch.stack([y + z, 3 * y])) == pytest.approx(1.0)
    assert subspace_cosine(plane, z) == pytest.approx(0.0, abs=1e-12)
