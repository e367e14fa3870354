"""Steering packs on a Hub: push with a model card, load by repo id with and without alignez_hf, pinned and offline.

Everything runs against tests/hub_server.py on 127.0.0.1 with the real huggingface_hub client and transformers.
transformers reads HF_ENDPOINT at import, so loads happen in subprocesses; each costs ~5 s of imports, so one
subprocess runs several checks and prints their results as one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from huggingface_hub import HfApi, ModelCard
from tiny_packs import BASE_REPO, NEW_TOKENS, PACK_REPO, PROMPT, tiny_pack, tiny_tokenizer
from transformers import AutoModelForCausalLM, pipeline

from alignez_hf import AlignEZForCausalLM
from alignez_hf.hub import push_pack

pytest_plugins = ["hub_fixtures"]

ROOT = Path(__file__).resolve().parents[1]

# Makes `import alignez_hf` fail in a child process, as on a machine where only transformers is installed.
BLOCK_PACKAGE = textwrap.dedent(
    """
    import sys

    class _NoAlignez:
        def find_spec(self, name, path=None, target=None):
            if name == "alignez_hf" or name.startswith("alignez_hf."):
                raise ImportError(f"{name} is not installed here")
            return None

    sys.meta_path.insert(0, _NoAlignez())
    """
)
# Shared by the child scripts: greedy continuation of PROMPT, and error capture as (type, message).
CHILD_HELPERS = textwrap.dedent(
    f"""
    import json, os, sys, time
    import torch

    def continuation(model):
        ids = torch.tensor([[4 + int(w[1:]) for w in {PROMPT!r}.split()]])
        return model.generate(ids, max_new_tokens={NEW_TOKENS}, do_sample=False)[0].tolist()

    def error_of(load):
        try:
            load()
        except Exception as err:
            return [type(err).__name__, str(err)]
        return None
    """
)


def _ids(tokenizer) -> torch.Tensor:
    return tokenizer(PROMPT, return_tensors="pt", add_special_tokens=False)["input_ids"]


def _greedy(model) -> list[int]:
    return model.generate(_ids(model.tokenizer), max_new_tokens=NEW_TOKENS, do_sample=False)[0].tolist()


def _run_child(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> dict:
    """Run a script in a fresh interpreter and return the JSON object it prints last."""
    done = subprocess.run(
        [sys.executable, "-c", code], env=env or os.environ.copy(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def hub_packs(hub_env, hub_server, tmp_path, tiny_llama):
    """A tiny Llama base repo and two commits of a pack on it (strength 3, then -3), pushed to the test Hub."""
    api = HfApi(endpoint=hub_server.url)
    tokenizer = tiny_tokenizer()
    base_dir = tmp_path / "tiny-base"
    tiny_llama.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    api.create_repo(BASE_REPO)
    base_commit = api.upload_folder(repo_id=BASE_REPO, folder_path=base_dir).oid

    first = tiny_pack(tiny_llama, tokenizer, strength=3.0)
    v1 = first.push_to_hub(PACK_REPO, endpoint=hub_server.url)
    second = tiny_pack(tiny_llama, tokenizer, strength=-3.0)
    v2 = push_pack(second, PACK_REPO, endpoint=hub_server.url, commit_message="flip the default strength")
    with first.steering_disabled():
        plain = _greedy(first)
    return {
        "base_commit": base_commit,
        "v1": v1.oid,
        "v2": v2.oid,
        "tokens_v1": _greedy(first),
        "tokens_v2": _greedy(second),
        "tokens_plain": plain,
        "pipeline_text": pipeline("text-generation", model=second, tokenizer=tokenizer)(
            PROMPT, max_new_tokens=NEW_TOKENS, do_sample=False
        )[0]["generated_text"],
        "tokenizer": tokenizer,
        "model": second,
    }


@pytest.fixture
def dead_endpoint_load(tmp_path) -> Iterator[subprocess.Popen]:
    """A child loading a pack from a stopped server, started early: it mostly sleeps through client retries."""
    server = HubServer().start()
    server.stop()  # the port now refuses connections, like a Hub that is down
    code = CHILD_HELPERS + textwrap.dedent(
        """
        from alignez_hf import AlignEZForCausalLM
        start = time.monotonic()
        error = error_of(lambda: AlignEZForCausalLM.from_pretrained("user/anything"))
        print(json.dumps({"error": error, "seconds": time.monotonic() - start}))
        """
    )
    env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "dead_home"), "HF_HUB_DISABLE_XET": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_push_then_load_by_repo_id_everywhere(hub_packs, hub_server, hub_env, dead_endpoint_load):
    """Pushed files and card; loads by id (class, Auto, pipeline, pinned revision, remote code, offline) match."""
    files = hub_server.list_files(PACK_REPO)
    for name in (
        "config.json",
        "steering.safetensors",
        "README.md",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "configuration_alignez.py",
        "modeling_alignez.py",
        "edits.py",
        "layers.py",
    ):
        assert name in files, files
    config = json.loads(hub_server.get_file(PACK_REPO, "config.json"))
    assert config["base_model_name_or_path"] == BASE_REPO
    assert config["base_model_revision"] == hub_packs["base_commit"]  # pinned to the base's commit at push time
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_alignez.AlignEZForCausalLM"
    card = ModelCard.load(PACK_REPO)
    assert card.data.base_model == BASE_REPO and card.data.pipeline_tag == "text-generation"
    assert {"alignez", "steering"} <= set(card.data.tags) and hub_packs["base_commit"] in card.text
    assert f'from_pretrained("{PACK_REPO}", trust_remote_code=True)' in card.text
    assert hub_packs["tokens_v1"] != hub_packs["tokens_v2"] != hub_packs["tokens_plain"], "steering must show"

    library = CHILD_HELPERS + textwrap.dedent(
        f"""
        import alignez_hf
        from alignez_hf import AlignEZForCausalLM
        from transformers import AutoModelForCausalLM, pipeline
        direct = AlignEZForCausalLM.from_pretrained({PACK_REPO!r})
        auto = AutoModelForCausalLM.from_pretrained({PACK_REPO!r})
        pinned = AlignEZForCausalLM.from_pretrained({PACK_REPO!r}, revision={hub_packs["v1"]!r})
        pipe = pipeline("text-generation", model={PACK_REPO!r})
        out = {{
            "direct": continuation(direct),
            "auto": [type(auto).__name__, continuation(auto)],
            "pinned": [pinned.axes["cheerful"].strength, continuation(pinned)],
            "pipeline": pipe({PROMPT!r}, max_new_tokens={NEW_TOKENS}, do_sample=False)[0]["generated_text"],
            "missing_repo": error_of(lambda: AlignEZForCausalLM.from_pretrained("user/no-such-pack")),
            "missing_revision": error_of(lambda: AlignEZForCausalLM.from_pretrained({PACK_REPO!r}, revision="v9")),
            "missing_base": error_of(lambda: AlignEZForCausalLM.from_pretrained("user/orphan")),
            "corrupt": error_of(lambda: AlignEZForCausalLM.from_pretrained("user/corrupt")),
        }}
        print(json.dumps(out))
        """
    )
    # A pack whose base repo does not exist, and a pack whose steering file was truncated on the server.
    push_pack(
        hub_packs["model"], "user/orphan", base_model_id="user/deleted-base", base_model_revision="0" * 40
    )  # the revision is given, so push records it without finding the base
    push_pack(hub_packs["model"], "user/corrupt")
    good = hub_server.get_file("user/corrupt", "steering.safetensors")
    hub_server.put_file("user/corrupt", "steering.safetensors", good[: len(good) // 2])

    out = _run_child(library)
    assert out["direct"] == hub_packs["tokens_v2"]
    assert out["auto"] == ["AlignEZForCausalLM", hub_packs["tokens_v2"]]
    assert out["pinned"] == [3.0, hub_packs["tokens_v1"]]
    assert out["pipeline"] == hub_packs["pipeline_text"]
    assert out["missing_repo"][0] == "OSError" and "user/no-such-pack" in out["missing_repo"][1]
    assert out["missing_revision"][0] == "OSError" and "v9" in out["missing_revision"][1]
    kind, message = out["missing_base"]
    assert kind == "BaseModelError" and "user/deleted-base" in message and "base_model_name_or_path" in message
    kind, message = out["corrupt"]
    assert kind == "PackError" and "truncated or corrupt" in message and "user/corrupt" in message

    remote = (
        BLOCK_PACKAGE
        + CHILD_HELPERS
        + textwrap.dedent(
            f"""
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({PACK_REPO!r}, trust_remote_code=True)
        try:
            import alignez_hf
            importable = True
        except ImportError:
            importable = False
        push = error_of(lambda: model.push_to_hub("user/elsewhere"))
        tokens = continuation(model)
        # A self-judged gate runs inside the remote module too: always firing = steered, never = the base.
        gate = {{"kind": "self_judge", "user_start": [1], "turn_end": [2], "before": [5, 6], "after": [7],
                "digits": list(range(10, 20)), "threshold": -1.0}}
        name = next(iter(model.axes))
        model.set_gate(name, gate)
        fires = continuation(model)
        model.set_gate_threshold(name, 10.0)
        never = continuation(model)
        with model.steering_disabled():
            base = continuation(model)
        print(json.dumps({{"tokens": tokens, "module": type(model).__module__, "importable": importable,
                          "push": push, "gate": [fires == tokens, never == base, never != tokens]}}))
        """
        )
    )
    out = _run_child(remote)
    assert out["tokens"] == hub_packs["tokens_v2"] and not out["importable"]
    assert out["module"].startswith("transformers_modules.")  # the pushed runtime code, not the package
    assert out["push"][0] == "ImportError" and "alignez-hf package" in out["push"][1]
    assert out["gate"] == [True, True, True]

    hub_server.clear_requests()
    offline = CHILD_HELPERS + textwrap.dedent(
        f"""
        from alignez_hf import AlignEZForCausalLM
        model = AlignEZForCausalLM.from_pretrained({PACK_REPO!r})
        print(json.dumps({{"tokens": continuation(model)}}))
        """
    )
    out = _run_child(offline, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out["tokens"] == hub_packs["tokens_v2"] and hub_server.requests == []

    # Started by its fixture before everything above, the dead-endpoint load must end, with a clear error.
    stdout, stderr = dead_endpoint_load.communicate(timeout=90)
    assert dead_endpoint_load.returncode == 0, stderr.decode()[-3000:]
    dead = json.loads(stdout.decode().strip().splitlines()[-1])
    assert dead["error"] is not None and dead["error"][0] == "OSError" and "connect" in dead["error"][1], dead
    assert dead["seconds"] < 60


def test_push_refuses_local_base_without_hub_id(hub_server, tiny_base_dir):
    """A base known only as a local folder cannot be fetched by others: push says so and uploads nothing."""
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    model = AlignEZForCausalLM.from_base(base)
    model.add_axis("cheerful", {1: torch.randn(32)})
    assert model.config.base_model_name_or_path == tiny_base_dir
    with pytest.raises(ValueError, match=r"local folder .*tiny-base.*base_model_id="):
        push_pack(model, "user/refused", endpoint=hub_server.url, token="hf_test")
    with pytest.raises(ValueError, match="cannot be found on the Hub endpoint"):
        push_pack(model, "user/refused", base_model_id="user/not-pushed", endpoint=hub_server.url, token="hf_test")
    assert not HfApi(endpoint=hub_server.url).repo_exists("user/refused")


def test_push_folder_keeps_data_file_and_user_card(hub_server, hub_env, tmp_path, tiny_llama):
    """Pushing a folder uploads its self-generated data; a README the user wrote survives; hidden files stay home."""
    HfApi(endpoint=hub_server.url).create_repo(BASE_REPO)
    hub_server.put_file(BASE_REPO, "config.json", tiny_llama.config.to_json_string().encode())
    folder = tmp_path / "pack"
    tiny_pack(tiny_llama, tiny_tokenizer(), strength=1.0).save_pretrained(folder)
    (folder / "self_generated.jsonl").write_text('{"query": "hi"}\n')
    (folder / "README.md").write_text("# My own card\n")
    (folder / ".scratch").write_text("not for upload")
    push_pack(folder, PACK_REPO, revision="dev")
    files = hub_server.list_files(PACK_REPO, revision="dev")
    assert "self_generated.jsonl" in files and ".scratch" not in files
    assert hub_server.get_file(PACK_REPO, "README.md", revision="dev") == b"# My own card\n"
    assert "steering.safetensors" not in hub_server.list_files(PACK_REPO)  # main is untouched
    assert not (folder / "README.md").read_text().startswith("---")  # the user's folder is untouched


def test_example_push_and_load(tmp_path, smollm2_path):
    """examples/push_and_load.py starts its own Hub when HF_ENDPOINT is unset, pushes, and loads back identically."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path / "hf_home")  # only read when the example finds HF_ENDPOINT set; kept clean anyway
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "push_and_load.py"), "--max-new-tokens", "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "started a local Hub-shaped server" in done.stdout
    assert "identical generations: True" in done.stdout
    assert time.monotonic() - start < 120


def test_push_pack_defaults_are_push_config():
    """push_pack's keyword defaults are PushConfig's (the CLI is generated from the same fields)."""
    import inspect
    from dataclasses import asdict

    from alignez_hf.hub import PushConfig

    params = inspect.signature(push_pack).parameters
    assert {name: params[name].default for name in asdict(PushConfig())} == asdict(PushConfig())


def test_build_from_a_hub_base_pins_its_commit(hub_env, hub_server, tmp_path, tiny_llama):
    """`alignez build --base REPO` records the commit it loaded, so a later push of the base cannot change the pack."""
    from alignez_hf.cli import main

    api = HfApi(endpoint=hub_server.url)
    base_dir = tmp_path / "tiny-base"
    tiny_llama.save_pretrained(base_dir)
    tiny_tokenizer().save_pretrained(base_dir)
    api.create_repo(BASE_REPO)
    commit = api.upload_folder(repo_id=BASE_REPO, folder_path=base_dir).oid
    queries = tmp_path / "queries.txt"
    queries.write_text("w5 w6\nw7 w8\nw9 w10\n")
    out = tmp_path / "pack"
    argv = ["build", "--base", BASE_REPO, "--queries", str(queries), "--out", str(out), "--axis", "up=w100,w200"]
    assert main([*argv, "--check-queries", "0", "--orient-queries", "0"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["base_model_name_or_path"], config["base_model_revision"]) == (BASE_REPO, commit)
