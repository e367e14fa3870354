"""The local Hub server works with the real huggingface_hub client and transformers (no HTTP mocking)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx2
import pytest
from hub_server import HubServer, git_blob_oid
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelCard,
    hf_hub_download,
    snapshot_download,
    try_to_load_from_cache,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import _CACHED_NO_EXIST
from huggingface_hub.utils import get_session

# Registers the hub_server / hub_env fixtures for this module (tests/ is on sys.path under pytest).
pytest_plugins = ["hub_fixtures"]

REPO = "user/tiny"
README = "---\nlicense: mit\ntags:\n- steering\n- test\n---\n# Tiny\n\nA test card.\n"
BINARY = bytes(range(256)) * 4 + b"\x00\xff tail"


def _api(server: HubServer) -> HfApi:
    return HfApi(endpoint=server.url, token="hf_any_token")


def _write_folder(root: Path) -> dict[str, bytes]:
    files = {
        "README.md": README.encode(),
        "config.json": json.dumps({"model_type": "llama", "hidden_size": 16}).encode(),
        "weights/blob.bin": BINARY,
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_create_repo_twice_with_exist_ok(hub_server: HubServer) -> None:
    """A second create answers 409; exist_ok=True turns that into the same RepoUrl."""
    api = _api(hub_server)
    url = api.create_repo(REPO)
    assert url.repo_id == REPO and url.endpoint == hub_server.url and url.repo_type == "model"
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo(REPO)
    assert excinfo.value.response.status_code == 409
    assert api.create_repo(REPO, exist_ok=True) == url
    assert api.repo_exists(REPO) and not api.repo_exists("user/absent")
    # Like huggingface.co, a new repo starts with one commit holding .gitattributes.
    assert api.list_repo_files(REPO) == [".gitattributes"]


def test_upload_folder_then_download_byte_identical(
    hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """upload_folder, then snapshot_download / hf_hub_download return the exact bytes."""
    # No hub_env here on purpose: upload_folder keeps the process's default path (the hf_xet pipeline when hf_xet is
    # installed), which must work too; hf_xet reads HF_HOME when it starts, so point its logs away from $HOME.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    api = _api(hub_server)
    api.create_repo(REPO)
    src = tmp_path / "src"
    files = _write_folder(src)
    info = api.upload_folder(folder_path=src, repo_id=REPO, commit_message="add files")
    assert len(info.oid) == 40 and info.oid == hub_server.head(REPO)

    assert sorted(api.list_repo_files(REPO)) == sorted([".gitattributes", *files])
    model = api.model_info(REPO)
    assert model.sha == info.oid and model.card_data is not None and model.card_data.tags == ["steering", "test"]
    tree = {entry.path: entry for entry in api.list_repo_tree(REPO, recursive=True)}
    assert tree["weights/blob.bin"].blob_id == git_blob_oid(BINARY) and tree["weights/blob.bin"].size == len(BINARY)
    assert [e.path for e in api.list_repo_tree(REPO, path_in_repo="weights")] == ["weights/blob.bin"]
    assert api.file_exists(REPO, "weights/blob.bin") and not api.file_exists(REPO, "nope.bin")

    cache = tmp_path / "cache"
    snapshot = Path(snapshot_download(REPO, endpoint=hub_server.url, cache_dir=cache))
    assert snapshot.name == info.oid
    for rel, data in files.items():
        assert (snapshot / rel).read_bytes() == data
        single = hf_hub_download(REPO, rel, endpoint=hub_server.url, cache_dir=tmp_path / "cache2")
        assert Path(single).read_bytes() == data

    # Unchanged files are skipped client-side thanks to the preupload oids: no new commit.
    again = api.upload_folder(folder_path=src, repo_id=REPO)
    assert again.oid == info.oid


def test_old_commit_sha_serves_old_bytes(hub_server: HubServer, tmp_path: Path) -> None:
    """Downloading at a commit sha returns that commit's bytes after main moved on."""
    api = _api(hub_server)
    api.create_repo(REPO)
    first = api.upload_file(path_or_fileobj=b"version 1", path_in_repo="data.txt", repo_id=REPO)
    second = api.create_commit(
        REPO,
        [CommitOperationAdd("data.txt", b"version 2"), CommitOperationAdd("extra.txt", b"x")],
        commit_message="second",
    )
    assert first.oid != second.oid and hub_server.commits(REPO)[-2:] == [first.oid, second.oid]

    cache = tmp_path / "cache"
    old = hf_hub_download(REPO, "data.txt", revision=first.oid, endpoint=hub_server.url, cache_dir=cache)
    new = hf_hub_download(REPO, "data.txt", endpoint=hub_server.url, cache_dir=cache)
    assert Path(old).read_bytes() == b"version 1" and Path(new).read_bytes() == b"version 2"
    assert api.model_info(REPO, revision=first.oid).sha == first.oid
    assert "extra.txt" not in api.list_repo_files(REPO, revision=first.oid)

    api.create_commit(REPO, [CommitOperationDelete("extra.txt")], commit_message="delete")
    assert "extra.txt" not in api.list_repo_files(REPO)

    # put_file commits server-side, e.g. to plant a truncated file the client must then fetch.
    planted = hub_server.put_file(REPO, "data.txt", b"trunc")
    path = hf_hub_download(REPO, "data.txt", endpoint=hub_server.url, cache_dir=cache)
    assert Path(path).read_bytes() == b"trunc" and Path(path).parent.name == planted


def test_not_found_errors_map_to_client_exceptions(hub_server: HubServer, tmp_path: Path) -> None:
    """X-Error-Code headers become the client's RevisionNotFound / RepositoryNotFound / RemoteEntryNotFound."""
    api = _api(hub_server)
    api.create_repo(REPO)
    kwargs = {"endpoint": hub_server.url, "cache_dir": tmp_path / "cache"}
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, ".gitattributes", revision="no-such-branch", **kwargs)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="0" * 40)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/absent", "config.json", **kwargs)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("user/absent")
    with pytest.raises(RemoteEntryNotFoundError) as excinfo:
        hf_hub_download(REPO, "missing.json", **kwargs)
    assert isinstance(excinfo.value, EntryNotFoundError)
    # The 404 carries X-Repo-Commit, so the client caches the absence as transformers expects.
    assert try_to_load_from_cache(REPO, "missing.json", cache_dir=kwargs["cache_dir"]) is _CACHED_NO_EXIST


def test_branches_pull_requests_and_history(hub_server: HubServer, tmp_path: Path) -> None:
    """Branches, refs/pr/N, commit history, paths-info, parent_commit checks and delete_repo behave like the Hub."""
    api = _api(hub_server)
    api.create_repo(REPO)
    first = api.upload_file(path_or_fileobj=b"1", path_in_repo="a/b.txt", repo_id=REPO)
    api.create_branch(REPO, branch="dev")
    dev = api.upload_file(path_or_fileobj=b"2", path_in_repo="a/b.txt", repo_id=REPO, revision="dev")
    pr = api.upload_file(path_or_fileobj=b"3", path_in_repo="a/b.txt", repo_id=REPO, create_pr=True)
    assert pr.pr_revision == "refs/pr/1" and hub_server.head(REPO) == first.oid

    refs = api.list_repo_refs(REPO, include_pull_requests=True)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": first.oid, "dev": dev.oid}
    assert [p.ref for p in refs.pull_requests or []] == ["refs/pr/1"]
    assert [c.commit_id for c in api.list_repo_commits(REPO, revision="dev")][:2] == [dev.oid, first.oid]
    for revision, expected in (("dev", b"2"), (pr.pr_revision, b"3"), ("main", b"1")):
        path = hf_hub_download(REPO, "a/b.txt", revision=revision, endpoint=hub_server.url, cache_dir=tmp_path)
        assert Path(path).read_bytes() == expected
    infos = api.get_paths_info(REPO, ["a", "a/b.txt", "missing"])
    assert [(type(i).__name__, i.path) for i in infos] == [("RepoFolder", "a"), ("RepoFile", "a/b.txt")]

    with pytest.raises(HfHubHTTPError) as excinfo:
        api.upload_file(path_or_fileobj=b"4", path_in_repo="c.txt", repo_id=REPO, parent_commit="1234567")
    assert excinfo.value.response.status_code == 412
    api.delete_repo(REPO)
    assert not api.repo_exists(REPO)


def test_lfs_commit_lines_are_rejected_clearly(hub_server: HubServer) -> None:
    """An lfsFile commit line gets a 400 that says why."""
    hub_server.create_repo(REPO)
    lines = [
        {"key": "header", "value": {"summary": "lfs", "description": ""}},
        {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "0" * 64, "size": 1}},
    ]
    response = get_session().post(
        f"{hub_server.url}/api/models/{REPO}/commit/main",
        content=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 400 and "lfsFile" in response.json()["error"]


def test_range_requests_and_dataset_repos(hub_server: HubServer, tmp_path: Path) -> None:
    """Range GETs answer 206; dataset repos resolve under /datasets/."""
    hub_server.put_file(REPO, "blob.bin", BINARY)
    response = get_session().get(f"{hub_server.url}/{REPO}/resolve/main/blob.bin", headers={"Range": "bytes=10-19"})
    assert response.status_code == 206 and response.content == BINARY[10:20]
    assert response.headers["Content-Range"] == f"bytes 10-19/{len(BINARY)}"

    api = _api(hub_server)
    api.create_repo("user/data", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="train.csv", repo_id="user/data", repo_type="dataset")
    path = hf_hub_download("user/data", "train.csv", repo_type="dataset", endpoint=hub_server.url, cache_dir=tmp_path)
    assert Path(path).read_bytes() == b"a,b\n1,2\n"


def test_model_card_push_and_load_without_endpoint_argument(hub_env: dict[str, str], hub_server: HubServer) -> None:
    """ModelCard has no endpoint argument: hub_env's constant patching routes it to the local server."""
    _api(hub_server).create_repo(REPO)
    ModelCard(README).push_to_hub(REPO)
    assert hub_server.get_file(REPO, "README.md") == README.encode()
    card = ModelCard.load(REPO)
    assert card.data.license == "mit" and card.data.tags == ["steering", "test"]
    assert Path(hub_env["HF_HOME"]) in Path(hf_hub_download(REPO, "README.md")).parents


def test_transformers_loads_from_server_then_offline(hub_env: dict[str, str], hub_server: HubServer) -> None:
    """transformers pushes and loads a tiny LlamaConfig via HF_ENDPOINT, then loads it again with HF_HUB_OFFLINE=1."""
    push_and_load = textwrap.dedent(
        f"""
        import json
        from transformers import AutoConfig, LlamaConfig
        config = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                             num_key_value_heads=2, vocab_size=64)
        config.push_to_hub({REPO!r})
        loaded = AutoConfig.from_pretrained({REPO!r})
        print(json.dumps({{"cls": type(loaded).__name__, "hidden": loaded.hidden_size}}))
        """
    )
    online = subprocess.run(
        [sys.executable, "-c", push_and_load], env=os.environ.copy(), capture_output=True, text=True, timeout=120
    )
    assert online.returncode == 0, online.stderr
    assert json.loads(online.stdout.strip().splitlines()[-1]) == {"cls": "LlamaConfig", "hidden": 16}
    assert json.loads(hub_server.get_file(REPO, "config.json"))["model_type"] == "llama"

    hub_server.clear_requests()
    load_only = f"from transformers import AutoConfig; print(AutoConfig.from_pretrained({REPO!r}).hidden_size)"
    offline = subprocess.run(
        [sys.executable, "-c", load_only],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip().splitlines()[-1] == "16"
    assert hub_server.requests == []


def test_script_mode_serves_until_terminated(tmp_path: Path) -> None:
    """`python tests/hub_server.py --port 0` prints its URL and serves the real client."""
    script = Path(__file__).with_name("hub_server.py")
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        api = HfApi(endpoint=url, token="hf_any_token")
        api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=api.create_repo(REPO).repo_id)
        path = hf_hub_download(REPO, "config.json", endpoint=url, cache_dir=tmp_path)
        assert Path(path).read_bytes() == b"{}"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_stopped_server_fails_fast(tmp_path: Path) -> None:
    """After stop(), API calls raise a connection error at once and cached downloads fall back to the cache."""
    server = HubServer().start()
    api = _api(server)
    server.put_file(REPO, "config.json", b"{}")
    cached = hf_hub_download(REPO, "config.json", endpoint=server.url, cache_dir=tmp_path)
    server.stop()

    start = time.monotonic()
    with pytest.raises(httpx2.ConnectError):
        api.model_info(REPO)
    with pytest.raises(httpx2.ConnectError):
        api.file_exists(REPO, "config.json")
    # HEAD fails without retries, then the client serves the cached copy of refs/main.
    assert hf_hub_download(REPO, "config.json", endpoint=server.url, cache_dir=tmp_path) == cached
    assert time.monotonic() - start < 30
