"""The transformers hook adapter (runtime/hooks.py): a plan applied inside one forward pass, read-outs."""

import torch

from alignez_hf.runtime.hooks import EditHooks, read_prompt
from alignez_hf.runtime.plan import AxisEdit, build_plan


def _plan(rows, strength=3.0, layer=1, positions="last"):
    torch.manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(1, 32), dim=-1)
    axis = AxisEdit("a", "additive", {layer: direction}, {layer: torch.ones(1)})
    return build_plan([axis], {"a": torch.full((rows,), strength)}, rows, positions=positions), direction


def _layer_outputs(model, ids, mask=None, hooks=None):
    seen = {}

    def grab(module, args, kwargs):
        seen["x"] = (args[0] if args else kwargs["hidden_states"]).clone()

    handle = model.model.layers[2].register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        if hooks is None:
            model(input_ids=ids, attention_mask=mask)
        else:
            with hooks:
                model(input_ids=ids, attention_mask=mask)
    handle.remove()
    return seen["x"]


def test_hooks_edit_the_last_real_token_and_leave_no_trace(tiny_llama):
    ids = torch.randint(3, 250, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # right padding: row 1 ends at column 2
    plan, direction = _plan(rows=2)
    base = _layer_outputs(tiny_llama, ids, mask)
    steered = _layer_outputs(tiny_llama, ids, mask, EditHooks(tiny_llama, tiny_llama.model.layers, "residual", plan))
    delta = steered - base
    edited = {(0, 4), (1, 2)}
    for row in range(2):
        for col in range(5):
            expected = 3.0 * direction[0] if (row, col) in edited else torch.zeros(32)
            assert torch.allclose(delta[row, col], expected, atol=1e-5), (row, col)
    assert torch.equal(_layer_outputs(tiny_llama, ids, mask), base)  # the hooks are gone


def test_all_positions(tiny_llama):
    ids = torch.randint(3, 250, (1, 4))
    plan, direction = _plan(rows=1, positions="all")
    base = _layer_outputs(tiny_llama, ids)
    steered = _layer_outputs(tiny_llama, ids, hooks=EditHooks(tiny_llama, tiny_llama.model.layers, "residual", plan))
    assert torch.allclose(steered - base, (3.0 * direction).expand(1, 4, 32), atol=1e-5)


def test_read_prompt_reads_last_tokens_and_windows(tiny_llama):
    ids = torch.randint(3, 250, (2, 5))
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    found, cache = read_prompt(tiny_llama, tiny_llama.model.layers, "residual", [0, 3], ids, mask)
    assert set(found) == {0, 3} and found[0].shape == (2, 32) and cache is None
    window, _ = read_prompt(
        tiny_llama, tiny_llama.model.layers, "residual", [0], ids, mask, last_k=torch.tensor([5, 2])
    )
    every, _ = read_prompt(tiny_llama, tiny_llama.model.layers, "residual", [0], ids, mask, last_k=1)
    assert torch.allclose(every[0], found[0])
    # row 0 has 3 real tokens: a window of 5 averages those 3 only; the two reads differ from the last token alone
    assert not torch.allclose(window[0], found[0])
    _, cache = read_prompt(tiny_llama, tiny_llama.model.layers, "residual", [0], ids, mask, keep_cache=True)
    assert cache is not None and cache.get_seq_length() == 5
