"""Pytest fixtures that run tests against a local Hub-shaped server (see hub_server.py); no network needed.

Use from a test module or conftest::

    from hub_fixtures import hub_env, hub_server  # noqa: F401

Why two mechanisms are needed:

* huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE, HF_HUB_DISABLE_XET and the timeouts **at import
  time** (`huggingface_hub.constants`), and the module-level helpers (`huggingface_hub.upload_file`,
  `model_info`, ...) are bound to an `HfApi` instance created at import. Setting env vars inside an
  already-running test process therefore does not redirect the client by itself.
* In-process code should pass the endpoint explicitly: `HfApi(endpoint=hub_server.url)`,
  `hf_hub_download(..., endpoint=hub_server.url, cache_dir=...)`, `snapshot_download(..., endpoint=...)`.
  For code that has no endpoint argument (`ModelCard.push_to_hub` / `ModelCard.load`), `hub_env` also patches
  the already-imported constants and the global `HfApi` for the duration of the test.
* transformers (`from_pretrained`, `push_to_hub`) has no endpoint argument and keeps its own import-time state,
  so load/push with transformers in a **subprocess** whose environment is `os.environ` (which `hub_env` has
  updated through monkeypatch), e.g. `subprocess.run([sys.executable, "-c", code], env=os.environ.copy())`.
  Add HF_HUB_OFFLINE=1 to that env to prove a load works from the cache alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from hub_server import HubServer
except ImportError:  # imported as tests.hub_fixtures with only the repo root on sys.path
    from tests.hub_server import HubServer

# Small but not tiny: these bound how long a dead endpoint can stall a download (seconds, ints only).
ETAG_TIMEOUT_S = 5
DOWNLOAD_TIMEOUT_S = 10


@pytest.fixture
def hub_server() -> Iterator[HubServer]:
    """A running HubServer on 127.0.0.1 (fresh, empty store per test)."""
    with HubServer() as server:
        yield server


@pytest.fixture
def hub_env(hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Point HF env vars (and already-imported huggingface_hub constants) at `hub_server`; yield the HF vars set."""
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    env = {
        "HF_ENDPOINT": hub_server.url,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_ETAG_TIMEOUT": str(ETAG_TIMEOUT_S),
        "HF_HUB_DOWNLOAD_TIMEOUT": str(DOWNLOAD_TIMEOUT_S),
        # The server accepts any token; a fixed one keeps a developer's stored token out of the requests.
        "HF_TOKEN": "hf_test_token_for_local_hub",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # These would override HF_HOME or force offline mode in child processes.
    for key in (
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "TRANSFORMERS_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_OFFLINE",
    ):
        monkeypatch.delenv(key, raising=False)
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("no_proxy", no_proxy)
    _patch_imported_hub(monkeypatch, hub_server.url, hf_home)
    yield env


def _patch_imported_hub(monkeypatch: pytest.MonkeyPatch, url: str, hf_home: Path) -> None:
    """Redirect an already-imported huggingface_hub to `url` for code paths that take no endpoint argument."""
    from huggingface_hub import constants, hf_api

    patches: dict[str, object] = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_ETAG_TIMEOUT": ETAG_TIMEOUT_S,
        "HF_HUB_DOWNLOAD_TIMEOUT": DOWNLOAD_TIMEOUT_S,
    }
    # Every cache/marker path derived from the import-time HF_HOME (hub cache, xet, agent registry, ...) moves too,
    # so in-process tests never write into the developer's real ~/.cache/huggingface.
    old_home = constants.HF_HOME
    for name, value in vars(constants).items():
        if name.isupper() and isinstance(value, str) and (value == old_home or value.startswith(old_home + os.sep)):
            patches.setdefault(name, str(hf_home) + value[len(old_home) :])
    for name, value in patches.items():
        monkeypatch.setattr(constants, name, value)
    # Module-level helpers (upload_file, model_info, ...) are bound methods of this import-time instance.
    monkeypatch.setattr(hf_api.api, "endpoint", url)
