"""The model card of a pack: rendered from the template with axes, build metadata and evaluation rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from tiny_packs import tiny_pack

from alignez_hf.hub import CARD_MARKER, render_model_card, write_model_card

ROOT = Path(__file__).resolve().parents[1]


def test_model_card_renders_build_and_evaluation(tmp_path, tiny_llama):
    """The card shows axes, build metadata and evaluation rows when a pack has them, and parses as a ModelCard."""
    model = tiny_pack(tiny_llama, None, strength=2.0)
    axis = model.config.axes[0]
    axis["strategy"] = "persona_pairs"
    axis["build"] = {
        "queries": 40,
        "pairs_generated": 40,
        "pairs_kept": {"1": 31, "2": 29},
        "rank": {"1": 2, "2": 1},
        "quality": {"shift": 0.42, "reverse_shift": -0.3, "random_shift": 0.05, "effective": True},
        "orientation": {
            "behaviour": "sentiment",
            "queries": 16,
            "strength": 2.0,
            "minus": 0.61,
            "base": 0.3,
            "plus": -0.2,
            "flipped": True,
            "decided": True,
        },
        "subspace_cosine_mean": {"simple": 0.071},
        "gate": {"added": True, "threshold": 5.2279, "queries": 128, "refused": 62, "auc": 0.616,
                 "fires_refused": 0.774, "fires_answered": 0.5},
    }  # fmt: skip
    model.config.evaluation = {
        "seed": 0,
        "rows": [
            {"setting": "cheerful", "prompt_set": "neutral", "condition": "steered", "strength": 2.0, "n": 20,
             "sentiment": [0.41, 0.2, 0.6], "refusal": [0.0, 0.0, 0.1]},
        ],
        "not_measured": ["helpfulness"],
    }  # fmt: skip
    path = write_model_card(model, tmp_path, "HuggingFaceTB/SmolLM2-135M-Instruct", base_model_revision="abc123")
    card = ModelCard.load(path)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.license == "apache-2.0"
    assert card.data.library_name == "transformers" and "representation-editing" in card.data.tags
    text = card.text
    for expected in (
        "| `cheerful` | cheerful / gloomy | additive | 2 | 1, 2 | 1: 2, 2: 1 |",
        "strategy `persona_pairs`",
        "40 queries",
        "pairs kept per layer: 1: 31, 2: 29",
        "self-check: the axis moves the model",
        "sign check against sentiment on 16 build queries: 0.61 / 0.3 / -0.2 at −2 / 0 / +2 as built; the axis was "
        "FLIPPED",
        "subspace cosine with `simple`: 0.07",
        "harm gate: the axis steers only prompts the model itself rates above 5.23 on a 0-9 harm scale (threshold "
        "placed on its own refusals of 128 build queries, 62 refused; AUC 0.62; fires on 77% of the refused and 50% "
        "of the answered)",
        "| cheerful | neutral | steered | 2 | 20 | 0.41 [0.2, 0.6] | 0 [0, 0.1] |",
        "not measured: helpfulness",
        "revision `abc123`",
        CARD_MARKER,
    ):
        assert expected in text, expected
    # A hand-made pack with no metadata still renders, and a local-only base gets no base_model metadata.
    bare = render_model_card({"axes": [], "base_model_name_or_path": "/nowhere/base"})
    assert bare.data.base_model is None and "no build metadata" in bare.text


def test_template_ships_as_package_data():
    """pyproject lists every package (it cannot use find), and the card template is readable as package data."""
    tomllib = pytest.importorskip("tomllib")
    from importlib import resources

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "alignez_hf").rglob("__init__.py")} | {
        "alignez_hf.data",
        "alignez_hf.model_cards",
    }
    assert listed == found
    assert "$card_data" in resources.files("alignez_hf.model_cards").joinpath("steering_pack.md").read_text()
