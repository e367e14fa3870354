"""A flaky Hub: 5xx answers, cut connections, short bodies and bytes that do not match their ETag.

Faults are injected into tests/hub_server.py on 127.0.0.1 and met by the real huggingface_hub client and transformers
(in-process: hub_env points the already-imported client at the server). Every load either succeeds with the pushed
tensors or fails with a DownloadError naming the file and the pack; afterwards an offline load (local_files_only)
succeeds with the same tensors or fails clearly, and the cache never holds a blob whose bytes do not match its name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx2
import pytest
import torch
import transformers.utils.hub
from hub_server import Fault, HubServer, git_blob_oid
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError
from tiny_models import make_tiny_llama
from tiny_packs import tiny_pack, tiny_tokenizer

from alignez_hf import AlignEZForCausalLM, DownloadError
from alignez_hf.runtime.downloads import content_etag, verify_cached

pytest_plugins = ["hub_fixtures"]

REPO = "user/flaky-pack"
STEERING = "steering.safetensors"
CONFIG = "config.json"

# (file, fault kind, times, extra inject_fault arguments, what the first load does):
# "recovers" = the client works around the fault within the load; "fails" = DownloadError, and a second load works.
LOAD_CASES = [
    (STEERING, "5xx", 1, {"status": 500}, "fails"),  # the client never retries a 5xx answer to its GET
    (CONFIG, "5xx", 1, {"status": 502}, "fails"),
    (CONFIG, "5xx", 1, {"status": 503, "methods": ("HEAD",)}, "recovers"),  # a failed HEAD is retried once
    (STEERING, "cut", 1, {}, "fails"),  # a reset connection is not retried: a raw httpx2.ReadError
    (CONFIG, "cut", 1, {}, "fails"),
    (STEERING, "short", 1, {}, "recovers"),  # an early end of stream is retried (from the start: small files)
    (CONFIG, "short", 1, {}, "recovers"),
    (STEERING, "short", 6, {}, "fails"),  # one more than the client's 5 retries (each after a 1 s sleep)
    (STEERING, "bad_etag", 1, {}, "fails"),  # the client accepts it: only our ETag check catches it
    (CONFIG, "bad_etag", 1, {}, "fails"),
]
# What huggingface_hub alone (hf_hub_download) does with each kind of fault on a file's GET.
CLIENT_CASES = [("5xx", HfHubHTTPError), ("cut", httpx2.ReadError), ("short", None), ("bad_etag", "corrupt")]
FAULT_INJECTIONS = len(LOAD_CASES) + len(CLIENT_CASES)


@pytest.fixture(scope="module")
def pack_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny one-axis pack saved once for the module, and its steering tensors."""
    model = tiny_pack(make_tiny_llama(), tiny_tokenizer(), strength=3.0)
    folder = tmp_path_factory.mktemp("flaky") / "pack"
    model.save_pretrained(folder)
    return folder, {k: v.detach().clone() for k, v in model.steering_state_dict().items()}


@pytest.fixture
def pushed(hub_env, hub_server: HubServer, pack_folder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The pack uploaded to a fresh test Hub with the real client; returns (load, cache folder, pushed tensors)."""
    # transformers keeps one HfApi, with the endpoint of its first use: drop it so this test's server is used.
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
    folder, tensors = pack_folder
    api = HfApi(endpoint=hub_server.url)
    api.create_repo(REPO)
    api.upload_folder(repo_id=REPO, folder_path=folder)
    cache = tmp_path / "cache"

    def load(**kwargs) -> AlignEZForCausalLM:
        return AlignEZForCausalLM.from_pretrained(REPO, base_model=make_tiny_llama(), cache_dir=str(cache), **kwargs)

    return load, cache, tensors


def _assert_tensors(model: AlignEZForCausalLM, tensors: dict[str, torch.Tensor]) -> None:
    loaded = model.steering_state_dict()
    assert loaded.keys() == tensors.keys()
    for key, value in tensors.items():
        assert torch.equal(loaded[key], value), key


def _assert_cache_sound(cache: Path) -> int:
    """No partial download is left and every blob's bytes match its name (ETag); return the number of blobs."""
    assert not list(cache.rglob("*.incomplete")), "a partial download was left in the cache"
    blobs = [p for p in cache.rglob("*") if p.parent.name == "blobs"]
    for blob in blobs:
        assert git_blob_oid(blob.read_bytes()) == blob.name, f"corrupt blob in the cache: {blob}"
    for link in cache.rglob("snapshots/*/*"):
        assert link.exists(), f"dangling snapshot link: {link}"
    return len(blobs)


def _assert_fired(fault: Fault, times: int) -> None:
    assert (fault.fired, fault.times) == (times, 0), f"the {fault.kind} fault fired {fault.fired} of {times} times"


@pytest.mark.parametrize(("filename", "kind", "times", "extra", "outcome"), LOAD_CASES)
def test_flaky_hub_load(pushed, hub_server: HubServer, filename, kind, times, extra, outcome) -> None:
    """A load through a fault works, or fails naming the file; the cache stays sound; offline agrees."""
    load, cache, tensors = pushed
    fault = hub_server.inject_fault(filename, kind, times=times, repo_id=REPO, **extra)
    if outcome == "recovers":
        _assert_tensors(load(), tensors)
    else:
        with pytest.raises(DownloadError) as caught:
            load()
        message = str(caught.value)
        assert f"Downloading {filename} of the steering pack {REPO} failed" in message
        assert "force_download=True" in message
        if kind == "bad_etag":
            assert "does not match its ETag" in message and "removed from the cache" in message
        _assert_fired(fault, times)
        _assert_cache_sound(cache)
        # Offline, the file that failed is not in the cache: a clear error, never a model from a partial file.
        hub_server.clear_requests()
        with pytest.raises(OSError, match="cached files|local_files_only|offline") as offline:
            load(local_files_only=True)
        assert not isinstance(offline.value, DownloadError)
        assert hub_server.requests == []
        _assert_tensors(load(), tensors)  # the retry
    _assert_fired(fault, times)
    assert _assert_cache_sound(cache) >= 2  # config.json and steering.safetensors at least
    hub_server.clear_requests()
    _assert_tensors(load(local_files_only=True), tensors)
    assert hub_server.requests == []


@pytest.mark.parametrize(("kind", "expected"), CLIENT_CASES)
def test_client_alone(hub_env, hub_server: HubServer, tmp_path: Path, kind, expected) -> None:
    """What huggingface_hub does by itself with each fault: why pack_file adds clear errors and an ETag check."""
    data = bytes(range(256)) * 64
    hub_server.put_file(REPO, STEERING, data)
    fault = hub_server.inject_fault(STEERING, kind, status=503)

    def download() -> bytes:
        return Path(hf_hub_download(REPO, STEERING, endpoint=hub_server.url, cache_dir=tmp_path)).read_bytes()

    if isinstance(expected, type):
        with pytest.raises(expected):
            download()
        assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name == "blobs"]
    elif expected == "corrupt":
        got = download()
        assert len(got) == len(data) and got != data  # same size, wrong bytes: accepted and cached as is
        blob = next(p for p in tmp_path.rglob("*") if p.parent.name == "blobs")
        assert blob.name == git_blob_oid(data) != git_blob_oid(got)
    else:
        assert download() == data
    _assert_fired(fault, 1)


def test_corrupt_blob_on_disk_is_refused_offline_and_replaced_online(pushed, hub_server: HubServer) -> None:
    """Bytes that rot in the cache after a good download are refused offline too, then downloaded afresh."""
    load, cache, tensors = pushed
    _assert_tensors(load(), tensors)
    link = next(cache.rglob(f"snapshots/*/{STEERING}"))
    blob = link.resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match=f"{STEERING} of the steering pack {REPO}.*does not match its ETag"):
        load(local_files_only=True)
    assert not blob.exists() and not link.is_symlink()
    _assert_tensors(load(), tensors)
    _assert_cache_sound(cache)


def test_verify_cached_hashes_and_skips(tmp_path: Path) -> None:
    """Blob names of both kinds are checked (git blob sha1 and LFS sha256); files outside a Hub cache pass."""
    data = b"x" * (3 << 20)  # over the 1 MiB hashing chunk
    for etag in (git_blob_oid(data), hashlib.sha256(data).hexdigest()):
        assert content_etag(_blob(tmp_path, etag, data), len(etag)) == etag
        verify_cached(str(tmp_path / "blobs" / etag), REPO, STEERING)
    wrong = _blob(tmp_path, "0" * 64, data)
    with pytest.raises(DownloadError, match="does not match its ETag"):
        verify_cached(wrong, REPO, STEERING)
    assert not Path(wrong).exists()
    plain = tmp_path / "pack" / STEERING
    plain.parent.mkdir()
    plain.write_bytes(data)
    verify_cached(str(plain), REPO, STEERING)  # a local folder: no ETag to check against


def _blob(root: Path, name: str, data: bytes) -> str:
    path = root / "blobs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return str(path)
