"""Two-axis strength grids (evaluation/sweep.py)."""

import json

import pytest
import torch

from alignez_hf import AlignEZForCausalLM
from alignez_hf.evaluation import sweep_2d


@pytest.fixture
def tiny_pack(tiny_chat_llama):
    """A tiny random chat model with two hand-made axes."""
    base, tokenizer = tiny_chat_llama
    model = AlignEZForCausalLM.from_base(base, tokenizer)
    gen = torch.Generator().manual_seed(0)
    model.add_axis("cheerful", {1: torch.randn(2, 32, generator=gen), 2: torch.randn(32, generator=gen)})
    model.add_axis("simple", {2: torch.randn(32, generator=gen)}, strength=0.7)
    return model, tokenizer


def test_sweep_2d_shape(tiny_pack, tmp_path):
    model, tokenizer = tiny_pack
    sweep = sweep_2d(
        model,
        tokenizer,
        "cheerful",
        "simple",
        [0, 1, 2],
        [0, 3],
        "sentiment",
        "words",
        limit=2,
        max_new_tokens=3,
        out_dir=str(tmp_path),
        progress=False,
    )
    assert len(sweep["score_a"]) == 3 and all(len(row) == 2 for row in sweep["score_a"])
    assert len(sweep["score_b"]) == 3 and all(len(row) == 2 for row in sweep["score_b"])
    assert sweep["meta"]["n"] == 2 and len(sweep["answers"]) == 3 * 2 * 2
    assert set(sweep["own"]) == {"a", "b"} and set(sweep["cross"]) == {"a", "b"}
    assert (tmp_path / "heatmap_cheerful_simple.png").stat().st_size > 0
    assert json.loads((tmp_path / "sweep.json").read_text())["strengths_b"] == [0.0, 3.0]
