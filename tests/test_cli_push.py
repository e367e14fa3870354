"""``alignez push``: options generated from PushConfig, and an upload of a pack folder to the test Hub."""

from __future__ import annotations

import json

from huggingface_hub import HfApi
from tiny_packs import BASE_REPO, tiny_pack, tiny_tokenizer

pytest_plugins = ["hub_fixtures"]


def test_cli_push_uploads_a_pack_folder(hub_server, hub_env, tmp_path, tiny_llama, capsys):
    """`alignez push DIR REPO` uploads the pack with a card; a bad repo id exits with an error, not a traceback."""
    from alignez_hf.cli import main

    HfApi(endpoint=hub_server.url).create_repo(BASE_REPO)
    hub_server.put_file(BASE_REPO, "config.json", tiny_llama.config.to_json_string().encode())
    folder = tmp_path / "pack"
    tiny_pack(tiny_llama, tiny_tokenizer(), strength=1.0).save_pretrained(folder)
    argv = ["push", str(folder), "user/cli-pack", "--base-model-id", BASE_REPO, "--endpoint", hub_server.url]
    assert main(argv) == 0
    files = hub_server.list_files("user/cli-pack")
    assert {"config.json", "steering.safetensors", "README.md", "modeling_alignez.py"} <= set(files)
    pushed = json.loads(hub_server.get_file("user/cli-pack", "config.json"))
    assert pushed["base_model_name_or_path"] == BASE_REPO
    assert main(["push", str(tmp_path / "missing"), "user/x", "--endpoint", hub_server.url]) == 2
    assert "alignez push: error" in capsys.readouterr().err


def test_push_options_come_from_push_config():
    """`alignez push` and `alignez build --push-to-hub` share PushConfig's options and defaults."""
    from dataclasses import asdict

    from alignez_hf.cli import build_parser
    from alignez_hf.cli.options import config_from_args
    from alignez_hf.hub import PushConfig

    args = build_parser().parse_args(["push", "pack", "org/repo"])
    assert (args.pack, args.repo_id) == ("pack", "org/repo")
    assert config_from_args(PushConfig, args) == PushConfig() and args.private is None and args.create_pr is False
    argv = ["push", "p", "o/r", "--base-model-id", "o/base", "--private", "--create-pr", "--revision", "dev"]
    changed = asdict(config_from_args(PushConfig, build_parser().parse_args(argv)))
    assert changed == {**asdict(PushConfig()), "base_model_id": "o/base", "private": True, "create_pr": True,
                       "revision": "dev"}  # fmt: skip
    build = build_parser().parse_args(["build", "--axis", "cheerful", "--out", "o", "--push-to-hub", "o/r",
                                       "--token", "hf_x"])  # fmt: skip
    assert build.push_to_hub == "o/r" and config_from_args(PushConfig, build) == PushConfig(token="hf_x")
