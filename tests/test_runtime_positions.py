"""Which positions an edit touches, position ids of padded rows, and padding of id lists (runtime/positions.py)."""

import pytest
import torch

from alignez_hf.runtime.positions import last_positions, left_pad, position_ids


def test_last_positions():
    assert last_positions(None, 4) is None
    assert last_positions(torch.tensor([[0, 1, 1], [1, 1, 1]]), 3) is None  # left padding: always the last column
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    assert last_positions(right, 4).tolist() == [1, 2, 3]
    # with a KV cache the mask covers cached + current tokens; only the current window counts
    assert last_positions(torch.tensor([[1, 1, 1, 1, 0]]), 2).tolist() == [0]


def test_a_decoding_step_never_reads_the_mask():
    class Unreadable:
        """A mask whose reading fails: reading it on the host would sync with the device every step."""

        def dim(self):
            raise AssertionError("the mask was read")

        __getitem__ = dim

    # One new token per row (a KV-cache step): its column is the last, whatever the mask says.
    assert last_positions(Unreadable(), 1) is None
    with pytest.raises(AssertionError, match="was read"):
        last_positions(Unreadable(), 2)  # a prompt does need it


def test_position_ids_skip_left_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]
    assert position_ids(None) is None


def test_left_pad_ends_every_row_at_the_last_column():
    ids, mask = left_pad([[5, 6, 7], [8], []], pad_id=9)
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8], [9, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
