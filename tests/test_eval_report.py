"""Report writing: atomic standard JSON, the markdown table, plots, and the summary a pack carries."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_models import make_tiny_llama

from alignez_hf import AlignEZForCausalLM
from alignez_hf.evaluation.harness import evaluate
from alignez_hf.evaluation.report import (
    attach_evaluation,
    evaluation_summary,
    plot_heatmaps,
    results_markdown,
    write_json_atomic,
)


def test_write_json_atomic_is_standard_json(tmp_path):
    path = tmp_path / "sub" / "data.json"
    write_json_atomic(path, {"a": math.nan, "b": [1.0, math.inf], "c": "x"})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None], "c": "x"}
    assert [p.name for p in path.parent.iterdir()] == ["data.json"]  # no temporary file left behind


def test_heatmap_with_missing_cells(tmp_path):
    sweep = {
        "scorer_a": "sentiment",
        "scorer_b": "readability",
        "axis_a": "a",
        "axis_b": "b",
        "strengths_a": [0.0, 1.0],
        "strengths_b": [0.0, 2.0],
        "meta": {"n": 4},
        "score_a": [[0.1, 0.2], [0.3, None]],
        "score_b": [[50.0, 60.0], [70.0, 80.0]],
    }
    path = plot_heatmaps(sweep, tmp_path / "h.png")
    assert path.stat().st_size > 0


@pytest.fixture(scope="module")
def small_results(smollm2_tokenizer):
    model = AlignEZForCausalLM.from_base(make_tiny_llama(vocab_size=len(smollm2_tokenizer)), smollm2_tokenizer)
    model.add_axis("cheerful", {1: torch.randn(32)})
    results = evaluate(
        model, smollm2_tokenizer, "cheerful", strengths=[0, 2], limit=2, max_new_tokens=3, progress=False
    )
    return model, results


def test_markdown_has_every_row_and_caveats(small_results):
    _, results = small_results
    text = results_markdown(results)
    assert text.count("| cheerful |") == len(results["rows"]) + len(results["kl"])
    assert "## Not measured" in text and "refusal.csv" in text


def test_attach_evaluation_to_model_and_pack(small_results, tmp_path):
    model, results = small_results
    summary = evaluation_summary(results)
    json.dumps(summary, allow_nan=False)
    assert {"setting", "prompt_set", "condition", "strength", "n", "sentiment", "nll"} <= set(summary["rows"][0])
    attach_evaluation(model, results)
    model.save_pretrained(tmp_path / "pack", include_base=True)
    saved = json.loads((tmp_path / "pack" / "config.json").read_text())
    assert saved["evaluation"]["seed"] == results["meta"]["seed"]
    del model.config.evaluation
    other = json.loads(json.dumps(results, default=str))
    other["meta"]["seed"] = 99
    attach_evaluation(str(tmp_path / "pack"), other)
    reloaded = AlignEZForCausalLM.from_pretrained(tmp_path / "pack")
    assert reloaded.config.evaluation["seed"] == 99
