"""Two-axis strength grids (evaluation/sweep.py)."""

import json

from alignez_hf.evaluation import sweep_2d


def test_sweep_2d_shape(tiny_chat_pack, tmp_path):
    model, tokenizer = tiny_chat_pack
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
