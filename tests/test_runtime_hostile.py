"""Hostile local pack folders: links out of the folder, pipes, devices, folders and absurd sizes in place of pack
files, config fields that ask for absurd work, and a model card full of hostile YAML.

Each hostile case is refused with the library's own error naming the file, before the file is opened: a named pipe
that were opened would block the test (a SIGALRM watchdog turns a hang into a failure), a read of ``/dev/zero``
would never end. Sizes are tested with sparse files, which take no disk space. Real files, links and pipes
throughout; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from tiny_models import make_tiny_llama
from tiny_packs import tiny_tokenizer

from alignez_hf import AlignEZError, AlignEZForCausalLM, PackError, PackFileError
from alignez_hf.runtime.files import MAX_CONFIG_BYTES, MAX_STEERING_BYTES, STEERING_CAP_ENV
from alignez_hf.runtime.serialization import read_steering
from alignez_hf.vllm.pack import ServedPack

pytest_plugins = ["hub_fixtures"]

IDS = torch.tensor([[1, 5, 6, 7, 8]])


@pytest.fixture(scope="module")
def packs(tmp_path_factory) -> dict[str, Path]:
    """A tiny base folder, a pack on it with a tokenizer, the same pack bundling its base, and a copy elsewhere."""
    root = tmp_path_factory.mktemp("hostile")
    base = make_tiny_llama()
    base.save_pretrained(root / "base")
    model = AlignEZForCausalLM.from_base(base, tiny_tokenizer(), base_model_name_or_path=str(root / "base"))
    model.add_axis("cheerful", {1: torch.randn(2, 32, generator=torch.Generator().manual_seed(0))})
    model.save_pretrained(root / "pack")
    model.save_pretrained(root / "bundle", include_base=True)
    shutil.copytree(root / "pack", root / "elsewhere" / "pack")
    return {"root": root, "pack": root / "pack", "bundle": root / "bundle", "logits": model(input_ids=IDS).logits}


@pytest.fixture(autouse=True)
def watchdog():
    """Fail a test that blocks (e.g. on opening a named pipe) instead of hanging the run."""

    def hang(signum, frame):
        raise TimeoutError("blocked: a pack file was opened that should have been refused from its stat")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _replace(path: Path, how: str, target: Path | str | None = None) -> None:
    """Put something hostile where the pack file ``path`` was."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    if how == "link":
        os.symlink(target, path)
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "folder":
        path.mkdir()
    elif how == "file":
        path.write_text("not a folder")


def _sparse(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)  # a hole: the file reads as zeros past its content and takes no disk space


ELSEWHERE = "elsewhere/pack"
# (case id, pack, file, how, target): "target" is a path, or one relative to the module's root folder (@...).
FILE_CASES = [
    ("config-link-to-etc-passwd", "pack", "config.json", "link", "/etc/passwd"),
    ("config-link-to-another-pack", "pack", "config.json", "link", f"@{ELSEWHERE}/config.json"),
    ("config-link-to-dev-zero", "pack", "config.json", "link", "/dev/zero"),
    ("config-fifo", "pack", "config.json", "fifo", None),
    ("config-folder", "pack", "config.json", "folder", None),
    ("config-dangling-link", "pack", "config.json", "link", "@nowhere/config.json"),
    ("config-relative-link-out", "pack", "config.json", "link", f"../{ELSEWHERE}/config.json"),
    ("steering-link-to-another-pack", "pack", "steering.safetensors", "link", f"@{ELSEWHERE}/steering.safetensors"),
    ("steering-link-to-dev-zero", "pack", "steering.safetensors", "link", "/dev/zero"),
    ("steering-link-to-dev-urandom", "pack", "steering.safetensors", "link", "/dev/urandom"),
    ("steering-fifo", "pack", "steering.safetensors", "fifo", None),
    ("steering-folder", "pack", "steering.safetensors", "folder", None),
    ("tokenizer-fifo", "pack", "tokenizer.json", "fifo", None),
    ("tokenizer-config-link-to-etc-passwd", "pack", "tokenizer_config.json", "link", "/etc/passwd"),
    ("bundled-base-link-to-another-folder", "bundle", "base", "link", "@base"),
    ("bundled-base-is-a-file", "bundle", "base", "file", None),
    ("bundled-weights-link-out", "bundle", "base/model.safetensors", "link", "@base/model.safetensors"),
    ("bundled-weights-link-to-dev-zero", "bundle", "base/model.safetensors", "link", "/dev/zero"),
    ("bundled-config-fifo", "bundle", "base/config.json", "fifo", None),
]


def _hostile_copy(packs, tmp_path, kind: str, file: str, how: str, target) -> Path:
    folder = tmp_path / kind
    shutil.copytree(packs[kind], folder)
    if isinstance(target, str) and target.startswith("@"):
        target = packs["root"] / target[1:]
    _replace(folder / file, how, target)
    return folder


def _assert_refused(err: AlignEZError, file: str, started: float) -> None:
    message = str(err)
    assert os.path.basename(file) in message or file.split("/")[0] in message, message
    assert "Get the pack again" in message or "has no" in message, message  # says what to do
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(("case", "kind", "file", "how", "target"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_hostile_pack_file_is_refused_before_it_is_opened(packs, tmp_path, case, kind, file, how, target):
    folder = _hostile_copy(packs, tmp_path, kind, file, how, target)
    started = time.monotonic()
    with pytest.raises((PackError, PackFileError)) as err:
        AlignEZForCausalLM.from_pretrained(folder)
    _assert_refused(err.value, file, started)


SERVED_CASES = [c for c in FILE_CASES if c[2] in ("config.json", "steering.safetensors")]


@pytest.mark.parametrize(("case", "kind", "file", "how", "target"), SERVED_CASES, ids=[c[0] for c in SERVED_CASES])
def test_hostile_pack_file_is_refused_by_the_vllm_pack_reader(packs, tmp_path, case, kind, file, how, target):
    folder = _hostile_copy(packs, tmp_path, kind, file, how, target)
    started = time.monotonic()
    with pytest.raises(PackError) as err:
        ServedPack(folder)
    _assert_refused(err.value, file, started)


def test_served_bundle_with_its_base_linked_out_is_refused(packs, tmp_path):
    folder = _hostile_copy(packs, tmp_path, "bundle", "base", "link", "@base")
    with pytest.raises(PackError, match="The folder base of the steering pack .* outside the pack folder"):
        ServedPack(folder).base()


def test_read_steering_refuses_a_device_or_pipe_given_directly(tmp_path):
    """Without a folder (the Hub-cache path) the file's kind is still checked: a device or a pipe is never opened."""
    os.mkfifo(tmp_path / "pipe")
    for path, kind in (("/dev/zero", "a character device"), (str(tmp_path / "pipe"), "a named pipe")):
        with pytest.raises(PackError, match=f"steering.safetensors of the steering pack x is {kind}"):
            read_steering(path, "x")


def test_links_inside_the_folder_are_fine(packs, tmp_path):
    """A pack whose files are links to other files of its own folder loads and steers as the original does."""
    folder = tmp_path / "pack"
    shutil.copytree(packs["pack"], folder)
    (folder / "real").mkdir()
    for name in ("config.json", "steering.safetensors", "tokenizer.json"):
        (folder / name).rename(folder / "real" / name)
        os.symlink(Path("real", name), folder / name)
    model = AlignEZForCausalLM.from_pretrained(folder)
    assert torch.equal(model(input_ids=IDS).logits, packs["logits"])
    bundle = AlignEZForCausalLM.from_pretrained(packs["bundle"])  # and the untouched bundle loads too
    assert torch.equal(bundle(input_ids=IDS).logits, packs["logits"])


def test_a_snapshot_of_the_hub_cache_loads_but_not_with_links_to_another_repo(packs, hub_server, hub_env, tmp_path):
    """snapshot_download gives a folder of links into its repo's blobs/: that is a pack folder like any other. A
    link into another repo's blobs is refused like any link out of the folder."""
    from huggingface_hub import HfApi, snapshot_download

    api = HfApi(endpoint=hub_server.url)
    for repo in ("user/pack", "user/other"):
        api.create_repo(repo)
        api.upload_folder(repo_id=repo, folder_path=packs["pack"])
    folder = Path(snapshot_download("user/pack", endpoint=hub_server.url, cache_dir=tmp_path / "cache"))
    assert (folder / "config.json").is_symlink()
    assert torch.equal(AlignEZForCausalLM.from_pretrained(folder)(input_ids=IDS).logits, packs["logits"])
    assert ServedPack(folder).names == ["cheerful"]
    other = Path(snapshot_download("user/other", endpoint=hub_server.url, cache_dir=tmp_path / "cache"))
    _replace(folder / "steering.safetensors", "link", os.path.realpath(other / "steering.safetensors"))
    with pytest.raises(PackError, match="steering.safetensors of the steering pack .* outside the pack folder"):
        AlignEZForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize(
    ("file", "size", "message"),
    [
        ("config.json", MAX_CONFIG_BYTES + 1, "may hold .* so it is not parsed"),
        ("steering.safetensors", MAX_STEERING_BYTES + 1, f"so it is not read. .*{STEERING_CAP_ENV}"),
    ],
    ids=["config-over-16MiB", "steering-over-4GiB"],
)
def test_absurd_file_sizes_are_refused_before_parsing(packs, tmp_path, file, size, message):
    folder = tmp_path / "pack"
    shutil.copytree(packs["pack"], folder)
    _sparse(folder / file, size)
    for load in (AlignEZForCausalLM.from_pretrained, ServedPack):
        with pytest.raises(PackError, match=message):
            load(folder)


def test_the_steering_size_cap_can_be_raised(packs, tmp_path, monkeypatch):
    """Past the cap (lowered here to the real file's size) a file is refused; raised, the file's header decides."""
    folder = tmp_path / "pack"
    shutil.copytree(packs["pack"], folder)
    size = (folder / "steering.safetensors").stat().st_size
    monkeypatch.setenv(STEERING_CAP_ENV, str(size - 1))
    with pytest.raises(PackError, match=f"holds {size:,} bytes, more than the {size - 1:,}"):
        AlignEZForCausalLM.from_pretrained(folder)
    monkeypatch.setenv(STEERING_CAP_ENV, str(size))
    AlignEZForCausalLM.from_pretrained(folder)
    monkeypatch.setenv(STEERING_CAP_ENV, "lots")
    with pytest.raises(ValueError, match=f"{STEERING_CAP_ENV} must be a number of bytes"):
        AlignEZForCausalLM.from_pretrained(folder)


def _gate(before: int) -> dict:
    return {"kind": "self_judge", "question": "?", "user_start": [5], "turn_end": [6], "before": [7] * before,
            "after": [8], "digits": list(range(100, 110)), "threshold": 4.5}  # fmt: skip


def _axis(config: dict, **changes) -> dict:
    return {**config, "axes": [{**config["axes"][0], **changes}]}


# Config fields that would ask for absurd work or memory: refused (with what the message says) or harmless.
CONFIG_CASES = {
    "10k-axes": (
        lambda c: {**c, "axes": c["axes"] + [{**c["axes"][0], "name": f"a{i}"} for i in range(10_000)]},
        "10001 axes, more than the 4096",
    ),
    "rank-1e18": (lambda c: _axis(c, rank={"1": 10**18}), "rank 1000000000000000000"),
    "10k-layers": (
        lambda c: _axis(
            {**c, "base_fingerprint": {}}, layers=list(range(10_000)), rank={str(i): 2 for i in range(10_000)}
        ),
        "lacks tensors",
    ),  # fmt: skip
    "layer-past-the-base": (lambda c: _axis(c, layers=[9], rank={"9": 2}), "out of range; the base has 4 layers"),
    "hidden-size-1e12": (lambda c: {**c, "base_fingerprint": {"hidden_size": 10**12}}, "hidden_size: pack"),
    "layer-count-1e12": (lambda c: {**c, "base_fingerprint": {"num_hidden_layers": 10**12}}, "num_hidden_layers"),
    "gate-prompt-of-1M-tokens": (lambda c: _axis(c, gate=_gate(1_000_000)), "more than the 8192 a judge prompt"),
    "top-n-1e18": (lambda c: {**c, "top_n": 10**18, "layer_policy": "per_query"}, None),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_absurd_config_fields_are_refused_or_harmless(packs, tmp_path, case):
    edit, message = CONFIG_CASES[case]
    folder = tmp_path / "pack"
    shutil.copytree(packs["pack"], folder)
    config = edit(json.loads((folder / "config.json").read_text()))
    (folder / "config.json").write_text(json.dumps(config))
    started = time.monotonic()
    if message is None:
        model = AlignEZForCausalLM.from_pretrained(folder)
        assert torch.isfinite(model(input_ids=IDS).logits).all()
    else:
        with pytest.raises(PackError, match=message) as err:
            AlignEZForCausalLM.from_pretrained(folder)
        assert "config.json" in str(err.value) or "steering.safetensors" in str(err.value)
    assert time.monotonic() - started < 10


def test_tensors_that_do_not_fit_the_base_are_refused(packs, tmp_path):
    """Shapes come from the file, the hidden size and layer count from the base: a mismatch is refused."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "pack"
    shutil.copytree(packs["pack"], folder)
    tensors = load_file(folder / "steering.safetensors")
    for key, value, message in [
        ("cheerful.layers.1.directions", torch.randn(2, 4096), r"must have shape \[k, 32\]"),
        ("cheerful.layers.7.directions", torch.eye(2, 32), r"layers \[7\] that its entry in config.json"),
    ]:
        scales = {key.replace("directions", "scales"): torch.ones(2)}
        save_file({**tensors, key: value, **scales}, str(folder / "steering.safetensors"))
        with pytest.raises(PackError, match=message):
            AlignEZForCausalLM.from_pretrained(folder)


HOSTILE_CARDS = {
    "python-object-tag": "---\nlicense: !!python/object/apply:os.system ['touch {marker}']\n---\n# card\n",
    "billion-laughs": "---\na: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    + "---\n",
    "broken-front-matter": "---\nlicense: [unclosed\n: : :\n",
    "huge": "---\nlicense: mit\n---\n" + "x" * (32 * 2**20),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CARDS))
def test_a_hostile_model_card_is_never_parsed_by_loading(packs, tmp_path, case):
    """README.md is not part of what loading reads: a pack with a hostile card loads, and its YAML never runs."""
    marker = tmp_path / "executed"
    folder = tmp_path / "pack"
    shutil.copytree(packs["pack"], folder)
    (folder / "README.md").write_text(HOSTILE_CARDS[case].replace("{marker}", str(marker)))
    started = time.monotonic()
    model = AlignEZForCausalLM.from_pretrained(folder)
    assert torch.equal(model(input_ids=IDS).logits, packs["logits"])
    assert ServedPack(folder).names == ["cheerful"]
    assert not marker.exists() and time.monotonic() - started < 10


def test_the_packs_own_python_files_never_run_with_the_package_installed(packs, tmp_path):
    """The runtime files a pack ships run only through transformers' remote-code path without alignez_hf imported
    (docs/security.md); the package's loader, and the Auto classes once alignez_hf is imported, use its own code."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "pack"
    shutil.copytree(packs["pack"], folder)
    marker = tmp_path / "pack-code-ran"
    for name in ("configuration_alignez.py", "modeling_alignez.py", "serialization.py"):
        with open(folder / name, "a") as f:
            f.write(f"\nimport pathlib\npathlib.Path({str(marker)!r}).write_text({name!r})\n")
    loaded = [
        AlignEZForCausalLM.from_pretrained(folder, trust_remote_code=True),
        AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True),
    ]
    assert [type(m).__module__ for m in loaded] == ["alignez_hf.runtime.modeling_alignez"] * 2
    assert not marker.exists()
