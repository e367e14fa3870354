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
    assert args.base == "smollm2-135m" and args.axis == ["harmless"] and args.strategy is None
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


def test_demo_rebuilds_a_cached_pack_built_with_other_settings(tmp_path):
    """A cached demo pack is reused only if it was built with today's strategy settings."""
    import json
    from dataclasses import asdict

    from alignez_hf.builder.strategies import STRATEGIES
    from alignez_hf.cli import DEMO_AXIS, DEMO_STRATEGY, _demo_pack_is_current

    settings = json.loads(json.dumps(asdict(STRATEGIES[DEMO_STRATEGY])))
    config = {"axes": [{"name": DEMO_AXIS, "strategy_settings": settings}]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert _demo_pack_is_current(tmp_path)
    settings["scale_fraction"] = settings["scale_fraction"] / 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert not _demo_pack_is_current(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    assert not _demo_pack_is_current(tmp_path)
