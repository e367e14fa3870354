"""forward(steering_from=...): given text scored as steered generation would have produced it (issue 15)."""

from __future__ import annotations

import pytest
import torch
from test_runtime_prefill_gate import _gate, _prompts
from tiny_models import make_tiny_llama

from alignez_hf import AlignEZForCausalLM

NEW = 5


def _steered(base, seed=0):
    torch.manual_seed(seed)
    hidden = base.config.get_text_config().hidden_size
    model = AlignEZForCausalLM.from_base(base)  # every tiny model has at least 3 layers
    model.add_axis("a", {layer: 8 * torch.randn(2, hidden) for layer in range(3)}, strength=1.0)
    return model


def _generation_scores(model, ids, mask):
    """Generated sequences and the log-probabilities of each generated token, as generate computed them."""
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, pad_token_id=0,
        output_scores=True, return_dict_in_generate=True,
    )  # fmt: skip
    return out.sequences, torch.stack(out.scores, 1).float().log_softmax(-1)


def _scored(model, sequences, mask, start, grad=False):
    """Teacher-forced log-probabilities of the last NEW tokens of ``sequences`` with edits from ``start`` on."""
    full_mask = torch.cat([mask, torch.ones(mask.shape[0], NEW - 1, dtype=mask.dtype)], 1)
    positions = (full_mask.cumsum(-1) - 1).clamp_min(0)  # as generate numbers left-padded rows
    with torch.set_grad_enabled(grad):
        logits = model(
            input_ids=sequences[:, :-1], attention_mask=full_mask, position_ids=positions, steering_from=start
        ).logits
    return logits[:, start:].float().log_softmax(-1)


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gpt2", "tiny_qwen2"])
def test_scoring_a_continuation_equals_steered_generation(family, request):
    model = _steered(request.getfixturevalue(family))
    ids, mask = _prompts(4)  # left-padded prompts of different lengths: each ends at the last column
    sequences, generated = _generation_scores(model, ids, mask)
    start = ids.shape[1] - 1  # the prompt's last token
    assert torch.allclose(_scored(model, sequences, mask, start), generated, atol=1e-4)
    # With gradients (a trainer scoring chosen / rejected answers) the edit is rebuilt, not applied in place.
    assert torch.allclose(_scored(model, sequences, mask, start, grad=True), generated, atol=1e-4)
    # Without steering_from a forward pass edits only the last column: not what generation did.
    full_mask = torch.cat([mask, torch.ones(mask.shape[0], NEW - 1, dtype=mask.dtype)], 1)
    positions = (full_mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        last_only = model(input_ids=sequences[:, :-1], attention_mask=full_mask, position_ids=positions).logits[
            :, start:
        ]
    assert not torch.allclose(last_only.float().log_softmax(-1), generated, atol=1e-2)


def test_one_start_per_row_for_right_padded_rows():
    model = _steered(make_tiny_llama())
    rows = [[5, 6, 7], [9, 10, 11, 12, 13]]
    expected = []
    for prompt in rows:
        ids = torch.tensor([prompt])
        sequences, generated = _generation_scores(model, ids, torch.ones_like(ids))
        expected.append((sequences[0], generated[0]))
    width = max(len(s) for s, _ in expected) - 1
    batch = torch.zeros(len(rows), width, dtype=torch.long)  # right-padded with 0, no attention mask (as lm-eval)
    for i, (sequence, _) in enumerate(expected):
        batch[i, : len(sequence) - 1] = sequence[:-1]
    starts = torch.tensor([len(prompt) - 1 for prompt in rows])
    with torch.no_grad():
        logits = model(batch, steering_from=starts).logits.float().log_softmax(-1)
    for i, (_, generated) in enumerate(expected):
        assert torch.allclose(logits[i, starts[i] : starts[i] + NEW], generated, atol=1e-4)


@pytest.mark.parametrize("policy", ["static", "per_query"])
def test_gates_and_the_per_query_policy_read_only_the_prompt(policy):
    model = _steered(make_tiny_llama())
    ids, mask = _prompts(5)
    model.set_gate("a", _gate(model, 2, "mean", ids=ids, mask=mask))  # fires on some rows, not others
    with model.steering_options(layer_policy=policy, top_n=1):
        sequences, generated = _generation_scores(model, ids, mask)
        scored = _scored(model, sequences, mask, ids.shape[1] - 1)
    assert torch.allclose(scored, generated, atol=1e-4)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (7, ValueError, r"columns of this input \(0 \.\. 6\)"),
        (-1, ValueError, "columns of this input"),
        (1.5, TypeError, "integers"),
        (torch.tensor([1, 2, 3]), ValueError, "one int per row"),
        (True, TypeError, "an int or one int per row"),
    ],
)
def test_bad_steering_from_is_refused_clearly(value, error, message):
    model = _steered(make_tiny_llama())
    ids = torch.randint(3, 250, (2, 7))
    with pytest.raises(error, match=message):
        model(ids, steering_from=value)
