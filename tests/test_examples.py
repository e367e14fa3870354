"""Each example runs as a user runs it (`python examples/X.py --quick`) on the embedded SmolLM2 and does its job."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from alignez_hf import AlignEZForCausalLM

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    """Run one example script in a fresh interpreter and return its stdout (fails with its output on error)."""
    # Same thread count as this process, so the reloaded pack below reproduces the script's greedy answers exactly.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{Path(name).stem}", EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_builds_compares_saves_and_reloads(tmp_path, smollm2):
    stdout = run_example("quickstart.py", "--quick", "--out", str(tmp_path), "--json", "answers.json", cwd=tmp_path)
    data = json.loads((tmp_path / "answers.json").read_text(encoding="utf-8"))
    pack = Path(data["pack"])
    assert pack.parent == tmp_path
    assert {"config.json", "steering.safetensors", "tokenizer.json", "modeling_alignez.py"} <= {
        p.name for p in pack.iterdir()
    }
    assert "AlignEZ build summary" in stdout
    # The side-by-side table: every prompt, with a non-empty answer in each column.
    assert list(data["answers"]) == ["base", "cheerful +1", "cheerful -1"]
    for i, prompt in enumerate(data["prompts"]):
        block = stdout.split(f"> {prompt}\n")[1]
        for label, texts in data["answers"].items():
            assert texts[i].strip() and f"{label:>13} | {texts[i]}" in block
    base, up, down = data["answers"].values()
    assert up != base or down != base  # the pack changes what the model writes
    assert data["same"] and data["reloaded"] == up
    assert "same cheerful +1 answers as before saving: True" in stdout

    # And independently of the script: this process loads the saved pack and gets the same answers.
    loaded = AlignEZForCausalLM.from_pretrained(pack, base_model=smollm2)
    tokenizer = AutoTokenizer.from_pretrained(pack)
    quickstart = load_example("quickstart.py")
    assert quickstart.answers(loaded, tokenizer, data["prompts"], data["max_new_tokens"], {"cheerful": 1.0}) == up


def test_pipeline_chat_steers_per_call(tmp_path):
    stdout = run_example("pipeline_chat.py", "--quick", "--out", str(tmp_path), cwd=tmp_path)
    assert "pipeline model: AlignEZForCausalLM with axes ['cheerful']" in stdout
    assert (tmp_path / "smollm2-cheerful" / "steering.safetensors").is_file()
    replies = dict(re.findall(r"^\[cheerful ([+-][\d.]+)\] (.+)$", stdout, re.M))
    assert list(replies) == ["-1", "+0", "+1"] and all(r.strip() for r in replies.values())
    assert len(set(replies.values())) > 1  # the per-call strength changes the reply
    assert re.search(r"^\[cheerful \+1, second turn\] \S", stdout, re.M)


def test_multi_axis_writes_sweep_and_heatmap(tmp_path):
    stdout = run_example("multi_axis.py", "--quick", "--out", str(tmp_path / "sweep"), cwd=tmp_path)
    cosine = float(re.search(r"Subspace cosine between cheerful and simple: mean ([0-9.]+)", stdout)[1])
    assert 0 <= cosine < 1
    assert re.search(r"cheerful vs simple: mean [0-9.]+ over layers 15-20", stdout)  # the build summary's line
    sweep = json.loads((tmp_path / "sweep" / "sweep.json").read_text(encoding="utf-8"))
    assert (sweep["axis_a"], sweep["axis_b"]) == ("cheerful", "simple")
    assert sweep["strengths_a"] == sweep["strengths_b"] == [-1.0, 0.0, 1.0]
    for key in ("score_a", "score_b"):
        assert len(sweep[key]) == 3 and all(len(row) == 3 for row in sweep[key])
    answers = [a["answer"] for a in sweep["answers"]]
    assert len(answers) == 9 * sweep["meta"]["n"] and sum(map(bool, answers)) > len(answers) // 2
    assert "## readability (rows: cheerful, columns: simple)" in (tmp_path / "sweep" / "sweep.md").read_text()
    png = (tmp_path / "sweep" / "heatmap_cheerful_simple.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert "Own-axis vs cross-axis movement" in stdout
