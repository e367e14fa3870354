"""``alignez eval``: argument parsing (generated from EvalConfig) and a run on a tiny bundled pack."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from alignez_hf import AlignEZForCausalLM
from alignez_hf.cli.eval import add_eval_arguments
from alignez_hf.cli.eval import run as eval_command
from alignez_hf.cli.options import config_from_args
from alignez_hf.evaluation.config import EvalConfig


def _parse(*argv: str) -> argparse.Namespace:
    return add_eval_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_arguments():
    args = _parse("pack", "--out", "o")
    assert args.strengths == [0.0, 0.5, 1.0, 2.0, 4.0] and args.random_control and args.prompt_sets == ["neutral"]
    args = _parse("pack", "--out", "o", "--strengths", "0,-1,2", "--no-random-control", "--limit", "3")
    assert args.strengths == [0.0, -1.0, 2.0] and not args.random_control and args.limit == 3
    with pytest.raises(SystemExit):
        _parse("pack", "--out", "o", "--strengths", "a,b")
    with pytest.raises(SystemExit):
        _parse("pack")  # --out is required
    args = _parse("pack", "--out", "o", "--prompts", "neutral, edgy", "--no-kl", "--no-plots")
    assert args.prompt_sets == ["neutral", "edgy"] and args.kl is False and args.plots is False
    assert config_from_args(EvalConfig, _parse("pack", "--out", "o")) == EvalConfig()


def test_eval_command_on_a_tiny_pack(tiny_chat_llama, tmp_path, capsys):
    base, tokenizer = tiny_chat_llama
    model = AlignEZForCausalLM.from_base(base, tokenizer)
    model.add_axis("cheerful", {2: torch.randn(32)})
    pack = tmp_path / "pack"
    model.save_pretrained(pack, include_base=True)
    out = tmp_path / "out"
    args = _parse(
        str(pack),
        "--out",
        str(out),
        "--strengths",
        "0,1",
        "--limit",
        "2",
        "--max-new-tokens",
        "3",
        "--prompts",
        "neutral,edgy",
        "--attach",
    )
    assert eval_command(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["meta"]["prompt_sets"]) == {"neutral", "edgy"}
    assert results["settings"][0]["pack"] == str(pack)
    assert (out / "metrics_edgy.png").stat().st_size > 0
    assert "evaluation" in json.loads((pack / "config.json").read_text())
    assert "Evaluation results" in capsys.readouterr().out


def test_attach_needs_a_local_pack(tmp_path, capsys):
    from alignez_hf.cli import main

    assert main(["eval", "org/remote-pack", "--out", str(tmp_path), "--attach"]) == 2
    assert "--attach needs a local pack folder" in capsys.readouterr().err
