"""Packs served by real vLLM (the CPU build): the same greedy tokens as the transformers runtime, per-request
strengths offline and over the OpenAI-compatible server, stock behaviour when unsteered, merged checkpoints.

Runs in the vLLM environment (``make test-vllm``); skipped where vLLM is not installed (the main suite).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

import alignez_hf  # noqa: E402
from alignez_hf import AlignEZForCausalLM  # noqa: E402
from alignez_hf.chat import chat_prompt, encode  # noqa: E402
from alignez_hf.vllm import UnsupportedOnVLLM, engine_args, steering  # noqa: E402

# Use both cores, keep the KV cache small (see ENVIRONMENT.md: without these vLLM drops to one thread).
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "OMP_NUM_THREADS": "2", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
os.environ.update(VLLM_ENV)
PROMPTS = ["Describe your ideal weekend.", "What is a good name for a cat?", "Tell me about rain.", "Say hello."]
TOKENS = 24
LLM_ARGS = {"dtype": "float32", "max_model_len": 512, "seed": 0}


@pytest.fixture(scope="module")
def smollm2_dir() -> str:
    return alignez_hf.default_base_model()


def _pack(folder: Path, base_dir: str, **options) -> Path:
    """An additive pack for SmolLM2 on its middle layers, large enough to change greedy answers."""
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = AlignEZForCausalLM.from_base(
        base, AutoTokenizer.from_pretrained(base_dir), base_model_name_or_path=base.config.name_or_path, **options
    )
    generator = torch.Generator().manual_seed(0)
    hidden = base.config.hidden_size
    model.add_axis("a", {i: torch.randn(hidden, generator=generator) * 3 for i in range(12, 18)}, strength=1.0)
    model.add_axis("b", {i: torch.randn(2, hidden, generator=generator) for i in (14, 15)}, strength=0.0)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory, smollm2_dir) -> Path:
    return _pack(tmp_path_factory.mktemp("vllm") / "pack", smollm2_dir)


@pytest.fixture(scope="module")
def prompt_ids(smollm2_dir) -> list[list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    return [encode(tokenizer, chat_prompt(tokenizer, p)) for p in PROMPTS]


def _transformers_tokens(pack_dir, prompt_ids, steerings) -> list[list[int]]:
    """Greedy new tokens of the transformers runtime, one prompt (and one steering) at a time."""
    model = AlignEZForCausalLM.from_pretrained(pack_dir, dtype=torch.float32)
    out = []
    for ids, steer in zip(prompt_ids, steerings):
        x = torch.tensor([ids])
        kwargs = {"max_new_tokens": TOKENS, "min_new_tokens": TOKENS, "do_sample": False}
        new = model.generate(x, attention_mask=torch.ones_like(x), steering=steer, **kwargs)[0, len(ids) :]
        out.append(new.tolist())
    return out


def _run_vllm(script: str, env: dict | None = None) -> dict:
    """Run a vLLM script in a fresh interpreter (one engine per process) and return the JSON it printed."""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})}
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith(RESULT))
    return json.loads(line[len(RESULT) :])


RESULT = "RESULT "  # vLLM logs to stdout too: the result line starts with this
GENERATE = """
import json
from vllm import SamplingParams
from vllm.inputs import TokensPrompt
prompts = [TokensPrompt(prompt_token_ids=ids) for ids in {ids!r}]
params = [SamplingParams(max_tokens={tokens}, min_tokens={tokens}, temperature=0.0, logprobs=1, extra_args=x)
          for x in {extra!r}]
outs = llm.generate(prompts, params, use_tqdm=False)
print("{result}" + json.dumps({{"tokens": [list(o.outputs[0].token_ids) for o in outs],
                  "logprobs": [[list(step.values())[0].logprob for step in o.outputs[0].logprobs] for o in outs]}}))
"""


def test_vllm_greedy_tokens_equal_the_transformers_runtime(pack_dir, prompt_ids):
    """fp32: per-request strengths (defaults, off, a mix) give the runtime's tokens; unsteered = stock vLLM."""
    steerings = [None, {"a": 0.0}, {"a": 2.0, "b": 1.5}, {"a": -1.0}]
    extra = [steering(None), steering("off"), steering({"a": 2.0, "b": 1.5}), steering({"a": -1.0})]
    steered = _run_vllm(
        f"from alignez_hf.vllm import steered_llm\nllm = steered_llm({str(pack_dir)!r}, **{LLM_ARGS!r})\n"
        + GENERATE.format(result=RESULT, ids=prompt_ids, tokens=TOKENS, extra=extra)
    )
    expected = _transformers_tokens(pack_dir, prompt_ids, steerings)
    assert steered["tokens"] == expected
    assert expected[0] != expected[1]  # the pack changes the answer: the comparison can fail
    # vLLM without the plugin (no pack configured) on the same base: bit for bit the "off" request
    base = engine_args(pack_dir)["model"]
    stock = _run_vllm(
        f"from vllm import LLM\nllm = LLM(model={base!r}, enforce_eager=True, enable_prefix_caching=False, "
        f"**{LLM_ARGS!r})\n"
        + GENERATE.format(result=RESULT, ids=prompt_ids, tokens=TOKENS, extra=[None] * len(prompt_ids)),
        env={"ALIGNEZ_VLLM_PACK": ""},
    )
    # the same batch shapes in both engines, so the unsteered request's numbers may be compared exactly
    assert stock["tokens"][1] == steered["tokens"][1]
    assert stock["logprobs"][1] == steered["logprobs"][1]
    assert stock["tokens"][2] != steered["tokens"][2]


def test_x_dependent_rules_at_the_mlp_output_equal_the_runtime(tmp_path, smollm2_dir, prompt_ids):
    """The paper's tanh rule (it reads the hidden state) and relu_suppress, at the MLP output, composed."""
    pack_dir = tmp_path / "tanh"
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    model = AlignEZForCausalLM.from_base(
        base, base_model_name_or_path=base.config.name_or_path, hook_point="mlp", composition="paper"
    )
    generator = torch.Generator().manual_seed(1)
    hidden = base.config.hidden_size
    model.add_axis("t", {i: torch.randn(2, hidden, generator=generator) for i in (10, 11, 12)}, rule="tanh")
    model.add_axis("r", {i: torch.randn(hidden, generator=generator) for i in (11, 12)}, rule="relu_suppress")
    model.save_pretrained(pack_dir)
    steerings = [{"t": 20.0, "r": 0.0}, {"t": 0.0, "r": 30.0}, {"t": 15.0, "r": 15.0}, {"t": 0.0, "r": 0.0}]
    got = _run_vllm(
        f"from alignez_hf.vllm import steered_llm\nllm = steered_llm({str(pack_dir)!r}, **{LLM_ARGS!r})\n"
        + GENERATE.format(result=RESULT, ids=prompt_ids, tokens=TOKENS, extra=[steering(x) for x in steerings])
    )
    expected = _transformers_tokens(pack_dir, prompt_ids, steerings)
    assert got["tokens"] == expected
    unsteered = _transformers_tokens(pack_dir, prompt_ids, [{"t": 0.0, "r": 0.0}] * 3)
    assert all(expected[i] != unsteered[i] for i in range(3))  # each steered request changed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_server_steers_per_request(pack_dir, prompt_ids, smollm2_dir):
    openai = pytest.importorskip("openai")
    port = _free_port()
    alignez = Path(sys.executable).with_name("alignez")
    server = subprocess.Popen(
        [str(alignez), "serve", str(pack_dir), "--port", str(port), "--dtype", "float32", "--max-model-len", "512"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        deadline = time.time() + 300
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert server.poll() is None, server.stdout.read()[-4000:]
                assert time.time() < deadline, "the server did not start in 300 s"
                time.sleep(2)

        def chat(xargs):
            reply = client.chat.completions.create(
                model=str(pack_dir),
                messages=[{"role": "user", "content": PROMPTS[0]}],
                max_tokens=TOKENS,
                temperature=0.0,
                extra_body={"vllm_xargs": xargs, "min_tokens": TOKENS, "skip_special_tokens": False},
            )
            return reply.choices[0].message.content

        tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
        expected = _transformers_tokens(pack_dir, prompt_ids[:1] * 3, [None, {"a": 0.0}, {"a": 2.0}])
        texts = [tokenizer.decode(t) for t in expected]
        assert chat(steering(None, http=True)) == texts[0]
        assert chat(steering("off", http=True)) == texts[1]
        assert chat(steering({"a": 2.0}, http=True)) == texts[2]
        assert len(set(texts)) == 3
        with pytest.raises(openai.BadRequestError, match="Unknown axis 'nope'"):
            chat(steering({"nope": 1.0}, http=True))
        with pytest.raises(openai.BadRequestError, match="not JSON"):
            chat({"steering": "{cheerful"})
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_merged_checkpoint_gives_the_same_tokens_on_vllm_and_transformers(pack_dir, prompt_ids, tmp_path):
    from alignez_hf.cli import main

    assert main(["export", str(pack_dir), "--merged", str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    assert merged.config.mlp_bias is True
    expected = []
    for ids in prompt_ids:
        x = torch.tensor([ids])
        out = merged.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=TOKENS, min_new_tokens=TOKENS)
        expected.append(out[0, len(ids) :].tolist())
    got = _run_vllm(
        f"from vllm import LLM\nllm = LLM(model={str(tmp_path / 'merged')!r}, enforce_eager=True, **{LLM_ARGS!r})\n"
        + GENERATE.format(result=RESULT, ids=prompt_ids, tokens=TOKENS, extra=[None] * len(prompt_ids)),
        env={"ALIGNEZ_VLLM_PACK": ""},
    )
    assert got["tokens"] == expected


def test_what_vllm_cannot_apply_is_refused_before_any_engine_starts(tmp_path, smollm2_dir, pack_dir):
    per_query = _pack(tmp_path / "pq", smollm2_dir, layer_policy="per_query")
    with pytest.raises(UnsupportedOnVLLM, match="per-query layer policy"):
        engine_args(per_query)
    with pytest.raises(ValueError, match="enforce_eager=True"):
        engine_args(pack_dir, enforce_eager=False)
    from alignez_hf.cli import main

    assert main(["serve", str(per_query), "--port", "1"]) == 2
    assert main(["serve", str(pack_dir), "--enable-prefix-caching"]) == 2
