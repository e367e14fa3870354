"""The transformers adapter: forward hooks that apply a steering plan, and hooks that read hidden states out.

Hooks exist only while a ``forward()``/``generate()`` call runs (``EditHooks`` is a context manager); the base
model is never modified for good.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .gates import CACHE_NAMES
from .layers import hook_module
from .plan import SteeringPlan
from .positions import from_mask, last_positions, position_ids


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class EditHooks:
    """Apply ``plan`` at ``hook_point`` of the decoder layers of ``base_model`` for the duration of a block.

    A pre-hook on the base model finds, once per forward pass, where each row's last real token is; the edit hook of
    each planned layer then changes only those positions (or all of them, with ``plan.positions == "all"``; or,
    with ``start``, every column from each row's ``start`` on, as generation edits a continuation: see
    ``positions.check_start``). Without gradients the hidden states are edited in place; with gradients a new
    tensor is returned.
    """

    def __init__(
        self,
        base_model: nn.Module,
        decoder_layers: nn.ModuleList,
        hook_point: str,
        plan: SteeringPlan,
        start: torch.Tensor | None = None,
    ):
        self.base_model, self.decoder_layers, self.hook_point, self.plan = base_model, decoder_layers, hook_point, plan
        self.start = start  # [rows] first edited column per row, or None (the plan's positions)
        self.gather: torch.Tensor | None = None  # per-row column of the last real token; None: the last column
        self.span: torch.Tensor | None = None  # [rows, q_len] bool, with ``start``: the columns to edit
        self._index: dict = {}
        self._handles: list = []

    def __enter__(self) -> EditHooks:
        self._handles.append(self.base_model.register_forward_pre_hook(self._find_positions, with_kwargs=True))
        for layer in self.plan.layers:
            module = hook_module(self.decoder_layers[layer], self.hook_point, layer)
            self._handles.append(module.register_forward_hook(self._edit_hook(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _find_positions(self, module, args, kwargs):
        if self.plan.positions == "all" and self.start is None:
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        reference = ids if ids is not None else kwargs.get("inputs_embeds")
        q_len = reference.shape[1] if reference is not None and reference.dim() >= 2 else 1
        if self.start is not None:
            self.span = from_mask(self.start, q_len)
        else:
            self.gather = last_positions(kwargs.get("attention_mask"), q_len)
        self._index = {}
        return None

    def _rows_cols(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (n, device)
        if key not in self._index:
            cols = self.gather.to(device)
            if cols.shape[0] != n:
                cols = cols.repeat_interleave(n // cols.shape[0])
            self._index[key] = (torch.arange(n, device=device), cols)
        return self._index[key]

    def _span(self, n: int, device: torch.device) -> torch.Tensor:
        key = ("span", n, device)
        if key not in self._index:
            span = self.span.to(device)
            if span.shape[0] != n:
                span = span.repeat_interleave(n // span.shape[0], dim=0)
            self._index[key] = span[..., None]
        return self._index[key]

    def _edit_hook(self, layer: int):
        plan = self.plan

        def hook(module, args, output):
            hidden = _hidden(output)
            edit = plan.layer(layer, hidden.shape[0], hidden.device)
            if self.span is not None:  # from each row's start column on
                edited = torch.where(self._span(hidden.shape[0], hidden.device), edit(hidden).to(hidden.dtype), hidden)
                if not torch.is_grad_enabled():
                    hidden.copy_(edited)
                    return None
                return (edited, *output[1:]) if isinstance(output, tuple) else edited
            if not torch.is_grad_enabled():  # generation: edit in place, nothing to rebuild
                if plan.positions == "all":
                    edit.apply_(hidden)
                elif self.gather is None:
                    edit.apply_(hidden[:, -1])
                else:
                    rows, cols = self._rows_cols(hidden.shape[0], hidden.device)
                    hidden[rows, cols] = edit(hidden[rows, cols]).to(hidden.dtype)
                return None
            if plan.positions == "all":
                edited = edit(hidden).to(hidden.dtype)
            elif self.gather is None:
                edited = torch.cat([hidden[:, :-1], edit(hidden[:, -1]).to(hidden.dtype)[:, None]], 1)
            else:
                rows, cols = self._rows_cols(hidden.shape[0], hidden.device)
                edited = hidden.index_put((rows, cols), edit(hidden[rows, cols]).to(hidden.dtype))
            return (edited, *output[1:]) if isinstance(output, tuple) else edited

        return hook


@contextlib.contextmanager
def recording(decoder_layers: nn.ModuleList, hook_point: str, layers: Sequence[int], pick) -> Iterator[dict]:
    """Record ``pick(hidden)`` of each of ``layers`` at ``hook_point`` during the block: ``{layer: tensor}``."""
    found: dict[int, torch.Tensor] = {}

    def recorder(layer):
        return lambda module, args, output: found.__setitem__(layer, pick(_hidden(output)))

    handles = [hook_module(decoder_layers[i], hook_point, i).register_forward_hook(recorder(i)) for i in layers]
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def read_prompt(
    base_model: nn.Module,
    decoder_layers: nn.ModuleList,
    hook_point: str,
    layers: Sequence[int],
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None = None,
    last_k: int | torch.Tensor = 1,
    keep_cache: bool = False,
):
    """One unedited pass over the prompt: ``({layer: [rows, d] float32 on the CPU}, KV cache or None)``.

    Each row is read at its last real token, or averaged over its last ``last_k`` real tokens (an int, or one count
    per row). ``base_model`` must carry no steering hooks (callers run this before installing them).
    """
    reference = input_ids if input_ids is not None else inputs_embeds
    rows, q_len = reference.shape[0], reference.shape[1]
    gather = last_positions(attention_mask, q_len)
    window = None
    if not (isinstance(last_k, int) and last_k == 1):
        last = gather.cpu() if gather is not None else torch.full((rows,), q_len - 1, dtype=torch.long)
        counts = torch.as_tensor(last_k, dtype=torch.long).expand(rows).clamp_min(1)
        offsets = torch.arange(int(counts.max()))
        index = last[:, None] - offsets[None, :]
        # Only real tokens count: not before the sequence, not padding, not beyond the row's own k.
        valid = (index >= 0) & (offsets[None, :] < counts[:, None])
        index = index.clamp_min(0)
        if attention_mask is not None and attention_mask.dim() == 2:
            valid &= attention_mask[:, -q_len:].cpu().gather(1, index).bool()
        window = (index, valid.float())

    def pick(hidden: torch.Tensor) -> torch.Tensor:
        if window is not None:
            index, weight = (t.to(hidden.device) for t in window)
            picked = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1])).float()
            out = (picked * weight[..., None]).sum(1) / weight.sum(1, keepdim=True).clamp_min(1)
        elif gather is None:
            out = hidden[:, -1, :].float()
        else:
            out = hidden[torch.arange(hidden.shape[0], device=hidden.device), gather.to(hidden.device)].float()
        return out.cpu()

    # Nobody reads this pass's logits: most models can skip all but the last position's (a vocabulary x prompt).
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base_model.forward).parameters else {}
    with recording(decoder_layers, hook_point, layers, pick) as found:
        out = base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids(attention_mask),
            use_cache=keep_cache,
            **extra,
        )
    cache = next((out[name] for name in CACHE_NAMES if name in out), None) if keep_cache else None
    return dict(found), cache


def can_reuse_prefill(input_ids, kwargs: dict, generation_config, positions: str) -> bool:
    """Whether ``generate(**kwargs)`` may start from the KV cache of an unedited pass over its prompt.

    True for plain greedy/sampled decoding of ``input_ids`` (no beams, no extra returns, no cache or embeddings
    given, no assistant model) when edits touch the last position only.
    """
    config = kwargs.get("generation_config") or generation_config
    plain = all(kwargs.get(key, getattr(config, key, None) or 1) == 1 for key in ("num_beams", "num_return_sequences"))
    return (
        plain
        and positions == "last"
        and input_ids is not None
        and input_ids.dim() == 2
        and input_ids.shape[1] > 1
        and all(kwargs.get(name) is None for name in CACHE_NAMES)
        and kwargs.get("inputs_embeds") is None
        and kwargs.get("assistant_model") is None
    )
