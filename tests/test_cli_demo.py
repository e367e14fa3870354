"""``alignez demo``: the cached pack, the held-out prompts, and a run on a tiny model."""


def test_demo_rebuilds_a_cached_pack_built_with_other_settings(tmp_path):
    """A cached demo pack is reused only if it was built with today's strategy settings."""
    import json
    from dataclasses import asdict

    from alignez_hf.builder.strategies import STRATEGIES
    from alignez_hf.cli.demo import DEMO_AXIS, DEMO_STRATEGY, _demo_pack_is_current

    settings = json.loads(json.dumps(asdict(STRATEGIES[DEMO_STRATEGY])))
    config = {"axes": [{"name": DEMO_AXIS, "strategy_settings": settings}]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert _demo_pack_is_current(tmp_path)
    settings["scale_fraction"] = settings["scale_fraction"] / 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert not _demo_pack_is_current(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    assert not _demo_pack_is_current(tmp_path)


def test_demo_prompts_are_everyday_and_held_out():
    """The demo's prompts appear in no other data file (build, tuning or evaluation), and none asks for harm."""
    from alignez_hf.cli.demo import DEMO_PROMPTS, demo_prompts
    from alignez_hf.evaluation.prompts import DATA_DIR, read_prompt_file

    prompts = demo_prompts()
    assert 3 <= len(prompts) <= 8
    others = {p.lower() for f in DATA_DIR.glob("*.txt") if f.name != DEMO_PROMPTS for p in read_prompt_file(f)}
    assert not {p.lower() for p in prompts} & others


def test_demo_on_a_tiny_model(tmp_path, tiny_chat_llama, monkeypatch, capsys):
    """The demo builds its cheerful pack once, then prints BASE / PACK / SYSTEM PROMPT answers, their sentiment,
    the context the system prompt costs and what the harmless axis needs; the second run reuses the pack."""
    import alignez_hf.cli.build as build_cli
    import alignez_hf.embedded as embedded
    from alignez_hf.cli import main

    model, tok = tiny_chat_llama
    queries = tmp_path / "q.txt"
    queries.write_text("How do I bake bread?\nTell me about rivers.\nDescribe a quiet street.\n")
    monkeypatch.setenv("ALIGNEZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(embedded, "default_base_model", lambda: "tiny")
    monkeypatch.setattr(build_cli, "load_base", lambda name: (model, tok, "org/tiny", None))
    monkeypatch.setattr(build_cli, "bundled_queries", lambda: queries)
    assert main(["demo", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert "Building a 'cheerful' pack for org/tiny from 3 unlabeled queries (strategy 'persona'" in out
    assert out.count("\nPROMPT: ") == 5
    for label in ("  BASE ", "  PACK (+1) ", "  SYSTEM PROMPT "):
        assert out.count(label) == 5, label
    assert "'You are an extremely cheerful assistant.'" in out
    assert "Mean VADER sentiment (-1 to 1) over 5 prompts: BASE " in out and "| SYSTEM PROMPT " in out
    assert "Context: with the system prompt a request is" in out and "the pack adds no tokens" in out
    assert 'pip install "alignez-hf[qwen]", then alignez build --base qwen2.5-coder-0.5b --axis harmless' in out
    assert 'steering={"cheerful": 1.5}' in out
    pack = tmp_path / "cache" / "packs" / "smollm2-135m-cheerful-persona"
    assert (pack / "config.json").is_file()
    assert main(["demo", "--max-new-tokens", "3", "--strength", "2"]) == 0
    out = capsys.readouterr().out
    assert f"Using the cached pack {pack}" in out and "  PACK (+2) " in out
