"""lm-evaluation-harness (the real one, 0.4.13) on a pack: scores mean what generation does (issue 15).

A tiny random Llama with a word-level tokenizer and a strong hand-made axis, saved as a pack; lm-eval's own model
classes, command line and a local task file (``dataset_path: json``), no network.
"""

from __future__ import annotations

import json

import pytest
import torch
from tiny_packs import tiny_tokenizer

from alignez_hf import AlignEZForCausalLM
from alignez_hf.cli import main

pytest.importorskip("lm_eval")
from lm_eval.models.huggingface import HFLM  # noqa: E402

from alignez_hf.evaluation.lmeval import AlignEZLM  # noqa: E402

CONTEXTS = [[5, 6, 7], [9, 10, 11, 12, 13], [20, 21]]  # three context lengths: three steering_from groups


@pytest.fixture
def pack_dir(tmp_path, tiny_llama):
    base_dir = tmp_path / "base"
    tiny_llama.save_pretrained(base_dir)
    model = AlignEZForCausalLM.from_base(tiny_llama, tiny_tokenizer(), base_model_name_or_path=str(base_dir))
    generator = torch.Generator().manual_seed(0)
    model.add_axis("a", {layer: 6 * torch.randn(2, 32, generator=generator) for layer in (1, 2)}, strength=1.0)
    model.save_pretrained(tmp_path / "pack")
    return tmp_path / "pack"


def _lm(pack_dir, **kwargs) -> AlignEZLM:
    return AlignEZLM(pretrained=str(pack_dir), device="cpu", dtype="float32", batch_size=4, **kwargs)


def _generated(model, context: list[int], tokens: int = 4) -> tuple[list[int], float]:
    """The pack's greedy continuation of ``context`` and the log-probability generation gave it."""
    ids = torch.tensor([context])
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False, pad_token_id=0,
        output_scores=True, return_dict_in_generate=True,
    )  # fmt: skip
    continuation = out.sequences[0, len(context) :].tolist()
    logprobs = torch.stack(out.scores, 1)[0].float().log_softmax(-1)
    return continuation, float(logprobs[torch.arange(len(continuation)), continuation].sum())


def test_scores_equal_what_steered_generation_gave_the_continuation(pack_dir):
    lm = _lm(pack_dir)
    requests, expected = [], []
    for context in CONTEXTS:
        continuation, logprob = _generated(lm.model, context)
        requests.append((("", ""), context, continuation))
        expected.append(logprob)
    scored = lm._loglikelihood_tokens(requests)
    for (logprob, greedy), want in zip(scored, expected, strict=True):
        assert logprob == pytest.approx(want, abs=1e-4)
        assert greedy  # the steered model's own greedy continuation is its argmax at every step
    # lm-eval's plain 'hf' model on the same pack scores with the last-position rule: nearly the base, not this.
    plain = HFLM(pretrained=str(pack_dir), device="cpu", dtype="float32", batch_size=4, trust_remote_code=True)
    unsteered = plain._loglikelihood_tokens(requests)
    assert max(abs(a[0] - b) for a, b in zip(unsteered, expected, strict=True)) > 0.1


def test_strength_arguments_set_the_run_and_zero_is_the_base(pack_dir, tiny_llama):
    requests = [(("", ""), context, [30, 31, 32]) for context in CONTEXTS]
    steered = [score for score, _ in _lm(pack_dir)._loglikelihood_tokens(requests)]
    base = [score for score, _ in _lm(pack_dir, strength_a="0")._loglikelihood_tokens(requests)]
    assert _lm(pack_dir, strength="0").model.axes["a"].strength == 0.0
    for context, score in zip(CONTEXTS, base, strict=True):
        ids = torch.tensor([[*context, 30, 31]])
        with torch.no_grad():
            logprobs = tiny_llama(ids).logits[0, len(context) - 1 :].float().log_softmax(-1)
        assert score == pytest.approx(float(logprobs[torch.arange(3), torch.tensor([30, 31, 32])].sum()), abs=1e-4)
    assert max(abs(a - b) for a, b in zip(steered, base, strict=True)) > 0.1
    with pytest.raises(ValueError, match="no axis 'b'"):
        _lm(pack_dir, strength_b="1")


def test_alignez_lm_eval_command_runs_a_local_multiple_choice_task(pack_dir, tmp_path):
    docs = [{"question": "w5 w6 w7", "choices": ["w8", "w9", "w10"], "answer": 0},
            {"question": "w20 w21 w22 w23", "choices": ["w30", "w31"], "answer": 1}]  # fmt: skip
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_mc.yaml").write_text(
        "task: tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'docs.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n"
    )
    out = tmp_path / "results"
    code = main([
        "lm-eval", "--model_args", f"pretrained={pack_dir},dtype=float32", "--device", "cpu", "--batch_size", "4",
        "--include_path", str(tasks), "--tasks", "tiny_mc", "--output_path", str(out), "--log_samples",
    ])  # fmt: skip
    assert code == 0
    samples = [json.loads(line) for line in next(out.rglob("samples_tiny_mc_*.jsonl")).read_text().splitlines()]
    assert len(samples) == len(docs)
    model = AlignEZForCausalLM.from_pretrained(pack_dir).eval()
    tokenizer = model.tokenizer
    for sample in samples:
        doc = sample["doc"]
        context = tokenizer(doc["question"])["input_ids"]
        for choice, response in zip(doc["choices"], sample["resps"], strict=True):
            ids = torch.tensor([context + tokenizer(choice)["input_ids"]])
            logits = model(ids[:, :-1], steering_from=len(context) - 1).logits[0, len(context) - 1 :]
            want = float(logits.float().log_softmax(-1)[0, ids[0, -1]])  # one-token choices
            assert float(response[0][0]) == pytest.approx(want, abs=1e-4)
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    assert 0.0 <= results["results"]["tiny_mc"]["acc,none"] <= 1.0
