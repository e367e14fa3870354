"""Nothing lost: two writers of one folder, leftovers of a killed writer, and SIGKILL trials (tests/kill_trials.py)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from alignez_hf import AlignEZForCausalLM, FolderLockedError
from alignez_hf.builder import AlignEZBuilder
from alignez_hf.runtime import atomic

HERE = Path(__file__).resolve().parent
KILL_TRIALS = 20  # per target: save_pretrained, push_pack's staging, a self-generating build


def _pack(base, seed: int) -> AlignEZForCausalLM:
    model = AlignEZForCausalLM.from_base(base)
    model.add_axis(f"axis{seed}", {1: torch.randn(32, generator=torch.Generator().manual_seed(seed))})
    return model


def _holder(folder: Path):
    """A separate process that holds the writer lock of ``folder`` until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        from alignez_hf.runtime.atomic import writer_lock
        with writer_lock({str(folder)!r}):
            print("held", flush=True)
            sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tiny_llama, tmp_path):
    folder = tmp_path / "pack"
    model = _pack(tiny_llama, 1)
    model.save_pretrained(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    holder = _holder(folder)
    try:
        with pytest.raises(FolderLockedError, match=rf"pid {holder.pid}.*Wait for it to finish") as err:
            _pack(tiny_llama, 2).save_pretrained(folder)
        assert isinstance(err.value, BlockingIOError)  # an OSError: existing except clauses hold
        builder = AlignEZBuilder(tiny_llama, None, axes=["cheerful"], progress=False, verbose=False)
        with pytest.raises(FolderLockedError, match="another process"):
            builder.build(["How do I bake bread?"], output_dir=folder)
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # untouched
    finally:
        holder.stdin.close()
        holder.wait()
    _pack(tiny_llama, 2).save_pretrained(folder)  # free again
    assert list(AlignEZForCausalLM.from_pretrained(folder, base_model=tiny_llama).axes) == ["axis2"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # the lock file goes with its holder


def test_two_processes_saving_at_once_never_mix(tiny_base_dir, tmp_path):
    folder = tmp_path / "pack"
    code = textwrap.dedent("""
        import sys, torch
        from alignez_hf import AlignEZForCausalLM, FolderLockedError
        from transformers import AutoModelForCausalLM
        seed, folder = int(sys.argv[1]), sys.argv[2]
        model = AlignEZForCausalLM.from_base(AutoModelForCausalLM.from_pretrained(sys.argv[3]))
        model.add_axis(f"axis{seed}", {1: torch.randn(32, generator=torch.Generator().manual_seed(seed))})
        print("ready", flush=True)
        sys.stdin.readline()  # both start saving at once
        saved = refused = 0
        for _ in range(40):
            try:
                model.save_pretrained(folder, include_base=True)
                saved += 1
            except FolderLockedError:
                refused += 1
        print(saved, refused)
    """)
    args = [[sys.executable, "-c", code, str(s), str(folder), tiny_base_dir] for s in (1, 2)]
    procs = [subprocess.Popen(a, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for a in args]
    assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    counts = [tuple(map(int, p.communicate(timeout=300)[0].split())) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    # Every save either finished whole or was refused at once; with both writing, some were refused.
    assert sum(saved for saved, _ in counts) > 0 and sum(refused for _, refused in counts) > 0, counts
    config = json.loads((folder / "config.json").read_text())
    loaded = AlignEZForCausalLM.from_pretrained(folder)  # one whole pack: its config and tensors agree
    names = list(loaded.axes)
    assert names == [a["name"] for a in config["axes"]] and names in (["axis1"], ["axis2"])
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_next_writer_restores_a_folder_left_aside_and_clears_leftovers(tiny_llama, tmp_path, monkeypatch):
    folder = tmp_path / "pack"
    _pack(tiny_llama, 1).save_pretrained(folder)
    (folder / "notes.txt").write_text("mine")
    # A writer killed between the two renames of the fallback swap (systems without renameat2) left this.
    os.replace(folder, tmp_path / ".pack.old-4242")
    (tmp_path / ".pack.tmp-dead").mkdir()
    (tmp_path / ".pack.tmp-dead" / "config.json").write_text("{half a pack")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # take the fallback path this time too
    _pack(tiny_llama, 2).save_pretrained(folder)
    assert (folder / "notes.txt").read_text() == "mine"  # carried over from the restored folder
    assert list(AlignEZForCausalLM.from_pretrained(folder, base_model=tiny_llama).axes) == ["axis2"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_files_the_pack_does_not_own_are_carried_by_hard_link(tiny_llama, tmp_path):
    folder = tmp_path / "pack"
    _pack(tiny_llama, 1).save_pretrained(folder)
    (folder / "self_generated.jsonl").write_text('{"key": "k"}\n')
    inode = (folder / "self_generated.jsonl").stat().st_ino
    _pack(tiny_llama, 2).save_pretrained(folder)
    assert (folder / "self_generated.jsonl").stat().st_ino == inode  # the same file, never copied half-way


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    """20 kills per target at uniformly random moments; tests/kill_trials.py asserts each outcome and reports."""
    out = tmp_path / "kills.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "0"}
    subprocess.run(
        [sys.executable, str(HERE / "kill_trials.py"), "--trials", str(KILL_TRIALS), "--json", str(out)],
        check=True,
        timeout=900,
        env=env,
    )
    results = json.loads(out.read_text())
    assert {name: r["trials"] for name, r in results.items()} == dict.fromkeys(("save", "push", "build"), KILL_TRIALS)
    # Most kills must land before the operation ends, or the trials would prove nothing.
    assert results["save"]["killed_mid_save"] >= KILL_TRIALS // 2
    assert results["push"]["killed_mid_push"] >= KILL_TRIALS // 2
    assert results["build"]["killed_mid_build"] >= KILL_TRIALS // 2
    assert results["build"]["identical_tensors"] == KILL_TRIALS
    assert results["build"]["most_rows_regenerated"] <= results["build"]["batch_rows"]
