"""SIGKILL trials: a forked child does the work, the parent kills it at a random moment, then checks what is left.

Targets, each run ``--trials`` times with a kill at a uniformly random moment of the operation:

- ``save``: ``save_pretrained`` of a bundle over the folder of another pack (which also holds a user's file).
  After each kill the folder holds exactly the old pack's files or the new pack's, never a mix, and the user's file.
- ``push``: ``push_pack`` of a pack folder to a repo on the Hub-shaped server (a separate process). The pack folder
  is byte-for-byte unchanged, and the repo holds the previous pack or the complete new one.
- ``build``: ``alignez build`` with a strategy that self-generates (persona_answers, greedy), killed, then rerun.
  The killed run's record file holds only whole records, the rerun regenerates at most one batch, and the final
  pack's tensors and records equal those of a build that was never interrupted.

Children are forked from this process after the heavy imports, so a trial costs the operation, not an interpreter
start. Run: ``python tests/kill_trials.py --trials 20 --json out.json`` (tests/test_reliability_kills.py does).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import warnings
from pathlib import Path

os.environ.update(HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1", TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="0")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tiny_models import make_tiny_llama  # noqa: E402
from tqdm import tqdm  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

import alignez_hf  # noqa: E402
from alignez_hf import AlignEZForCausalLM  # noqa: E402
from alignez_hf.cli import main as cli_main  # noqa: E402
from alignez_hf.hub import push_pack  # noqa: E402

torch.set_num_threads(1)  # before any fork: children compute on one thread each, the parent computes nothing
TOKEN = "hf_test_token_for_local_hub"
QUERIES = [f"Tell me something about topic number {i}, please." for i in range(12)]
CHILD_LOG = os.path.join(tempfile.gettempdir(), f"alignez-kill-child-{os.getpid()}.log")
BATCH = 4  # rows per generate call: a chunk of 2 queries, both sides


def in_child(work, kill_after: float | None = None) -> tuple[bool, float]:
    """Fork; the child runs ``work(ready)`` and calls ``ready()`` when the timed part starts.

    With ``kill_after``, the parent SIGKILLs the child that many seconds after ``ready()`` unless it has finished.
    Returns (finished, seconds from ready to the end or the kill).
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(r)
        code = 1
        try:
            # tqdm's default lock is a multiprocessing semaphore inherited by every forked child: a sibling killed
            # while holding it (mid progress bar) would leave it taken and block this child forever. Use our own.
            tqdm.set_lock(threading.RLock())
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            os.dup2(os.open(CHILD_LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)  # progress bars, warnings
            warnings.simplefilter("ignore")  # a random tiny model rightly warns that its pack does little
            work(lambda: os.write(w, b"r"))
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    os.read(r, 1)  # the child is ready (or died first: EOF)
    os.close(r)
    began = time.perf_counter()
    while kill_after is None or time.perf_counter() - began < kill_after:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"a trial's child failed:\n{Path(CHILD_LOG).read_text()[-4000:]}")
            return True, time.perf_counter() - began
        time.sleep(0.001)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return False, time.perf_counter() - began


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(folder: Path) -> list[str]:
    return [
        p.name for p in folder.parent.iterdir() if p.name.startswith((f".{folder.name}.tmp-", f".{folder.name}.old-"))
    ]


def tiny_pack(seed: int, vocab: int) -> AlignEZForCausalLM:
    model = AlignEZForCausalLM.from_base(make_tiny_llama(vocab_size=vocab), base_model_name_or_path="tiny")
    gen = torch.Generator().manual_seed(seed)
    model.add_axis(f"axis{seed}", {1: torch.randn(2, 32, generator=gen), 2: torch.randn(32, generator=gen)})
    return model


def save_trials(root: Path, trials: int, rng: random.Random) -> dict:
    """Kill save_pretrained (a bundle: config, tensors, runtime code and base weights) over another pack."""
    refs = {}
    for seed in (1, 2):
        in_child(
            lambda ready, seed=seed: (
                ready(),
                tiny_pack(seed, 32000).save_pretrained(root / f"ref{seed}", include_base=True),
            )
        )
        refs[seed] = root / f"ref{seed}"
    target = root / "pack"
    in_child(lambda ready: _save_from(refs[1], target, ready))
    (target / "NOTES.md").write_text("a user's own file\n")
    states, durations = {}, []
    for seed in (2, 1, 2):  # uninterrupted saves: the two states the folder may hold, and the save's duration
        durations.append(in_child(lambda ready, seed=seed: _save_from(refs[seed], target, ready))[1])
        states[seed] = snapshot(target)
    killed, current = 0, 2
    for _ in range(trials):
        new = 3 - current
        finished, _ = in_child(
            lambda ready, new=new: _save_from(refs[new], target, ready), rng.uniform(0, max(durations))
        )
        state = snapshot(target)
        assert state in (states[current], states[new]), "the folder holds a mix of two packs"
        killed += not finished
        current = new if state == states[new] else current
    in_child(lambda ready: _save_from(refs[1], target, ready))  # the next save clears what the kills left
    assert snapshot(target) == states[1] and not leftovers(target), leftovers(target)
    return {"trials": trials, "killed_mid_save": killed, "save_seconds": max(durations), "mixed": 0}


def _save_from(ref: Path, target: Path, ready) -> None:
    model = AlignEZForCausalLM.from_pretrained(ref)
    ready()
    model.save_pretrained(target, include_base=True)


def push_trials(root: Path, trials: int, rng: random.Random) -> dict:
    """Kill push_pack while it stages a copy of a pack folder and uploads it."""
    server = subprocess.Popen([sys.executable, str(HERE / "hub_server.py")], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        base = root / "push-base"
        make_tiny_llama().save_pretrained(base)
        from huggingface_hub import HfApi

        api = HfApi(endpoint=url, token=TOKEN)
        api.create_repo("user/tiny-base")
        api.upload_folder(repo_id="user/tiny-base", folder_path=base)
        folders = {}
        for seed in (1, 2):
            folders[seed] = root / f"push{seed}"
            in_child(lambda ready, seed=seed: (ready(), _pack_on(base, seed).save_pretrained(folders[seed])))
        before = {seed: snapshot(folders[seed]) for seed in folders}

        def push(seed, ready):
            ready()
            push_pack(folders[seed], "user/pack", base_model_id="user/tiny-base", endpoint=url, token=TOKEN)

        durations = [in_child(lambda ready, seed=seed: push(seed, ready))[1] for seed in (1, 2)]
        remote = {seed: before[seed]["steering.safetensors"] for seed in folders}
        assert _remote_steering(url) == remote[2]
        killed, current = 0, 2
        for _ in range(trials):
            new = 3 - current
            finished, _ = in_child(lambda ready, new=new: push(new, ready), rng.uniform(0, max(durations)))
            killed += not finished
            assert {s: snapshot(folders[s]) for s in folders} == before, "push changed the user's pack folder"
            now = _remote_steering(url)
            assert now in (remote[current], remote[new]), "the repo holds neither the old pack nor the new one"
            current = new if now == remote[new] else current
            config = json.loads(_get(url, "config.json"))
            assert [a["name"] for a in config["axes"]] == [f"axis{current}"], "the repo mixes two packs"
        return {"trials": trials, "killed_mid_push": killed, "push_seconds": max(durations), "changed_folders": 0}
    finally:
        server.kill()
        server.wait()


def _pack_on(base: Path, seed: int) -> AlignEZForCausalLM:
    model = tiny_pack(seed, 256)
    model.config.base_model_name_or_path = str(base)
    return model


def _get(url: str, filename: str) -> bytes:
    with urllib.request.urlopen(f"{url}/user/pack/resolve/main/{filename}") as response:
        return response.read()


def _remote_steering(url: str) -> str:
    return hashlib.sha256(_get(url, "steering.safetensors")).hexdigest()


def build_trials(root: Path, trials: int, rng: random.Random) -> dict:
    """Kill `alignez build` (persona_answers: self-generates answers), rerun it, compare with an unbroken build."""
    tokenizer = AutoTokenizer.from_pretrained(alignez_hf.default_base_model())
    base = root / "build-base"
    make_tiny_llama(vocab_size=len(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    queries = root / "queries.txt"
    queries.write_text("\n".join(QUERIES) + "\n")

    def build(out: Path, ready):
        ready()
        args = ["build", "--base", str(base), "--axis", "cheerful", "--out", str(out), "--queries", str(queries)]
        args += ["--strategy", "persona_answers"]  # it self-generates answers (persona reads prompts only)
        args += ["--greedy", "--batch-size", str(BATCH), "--max-new-tokens", "6", "--check-queries", "2"]
        args += ["--no-orient"]
        assert cli_main(args) == 0

    reference = root / "build-ref"
    duration = in_child(lambda ready: build(reference, ready))[1]
    ref_tensors, ref_records = load_file(str(reference / "steering.safetensors")), _records(reference)
    assert len(ref_records) == len(QUERIES), "the reference build wrote no self-generated records"
    killed, worst_lost, kept_total = 0, 0, 0
    for trial in range(trials):
        out = root / f"build-{trial}"
        finished, _ = in_child(lambda ready, out=out: build(out, ready), rng.uniform(0, duration))
        killed += not finished
        if (out / "config.json").exists():  # the save had begun its swap: the whole pack is there
            names = sorted(p.name for p in out.iterdir())
            assert {"steering.safetensors", "self_generated.jsonl"} <= set(names), names
        kept = _records(out, allow_cut=True)
        kept_total += len(kept)
        assert all(kept[k] == ref_records[k] for k in kept), "a record written before the kill differs"
        in_child(lambda ready, out=out: build(out, ready))
        tensors = load_file(str(out / "steering.safetensors"))
        assert tensors.keys() == ref_tensors.keys()
        assert all(np.array_equal(tensors[k], ref_tensors[k]) for k in tensors), "the resumed pack differs"
        assert _records(out) == ref_records
        axis = json.loads((out / "config.json").read_text())["axes"][0]
        rows = axis["build"]["generation"].get("prompts", 0) if not finished else 0
        lost = rows - 2 * (len(ref_records) - len(kept)) if not finished else 0
        assert 0 <= lost <= BATCH, f"the rerun regenerated {lost} rows that the killed run had written"
        worst_lost = max(worst_lost, lost)
    return {
        "trials": trials,
        "killed_mid_build": killed,
        "build_seconds": duration,
        "most_rows_regenerated": worst_lost,
        "records_kept_over_kills": kept_total,  # written before a kill, read back by the rerun
        "records_per_build": len(ref_records),
        "batch_rows": BATCH,
        "identical_tensors": trials,
    }


def _records(folder: Path, allow_cut: bool = False) -> dict[str, dict]:
    path = folder / "self_generated.jsonl"
    if not path.is_file():
        return {}
    lines = path.read_text("utf-8").splitlines()
    out = {}
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            assert allow_cut and i == len(lines) - 1, "a record line other than the last is broken"
            continue
        out[record["key"]] = {k: record[k] for k in ("query", "answers", "axis")}
    return out


TARGETS = {"save": save_trials, "push": push_trials, "build": build_trials}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="alignez-kills-") as tmp:
        os.environ["HF_HOME"] = str(Path(tmp, "hf_home"))
        for name in args.targets.split(","):
            began = time.perf_counter()
            results[name] = TARGETS[name](Path(tmp), args.trials, random.Random(f"{args.seed}-{name}"))
            results[name]["seconds"] = round(time.perf_counter() - began, 1)
            print(name, results[name], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
