"""Gates: an axis steers only the prompts a gate fires on (strength 0 on the other rows). Two kinds.

``kind: "prefill"`` (conditional activation steering, after CAST: Lee et al., "Programming Refusal with Conditional
Activation Steering", ICLR 2025) reads the condition from the prompt's own hidden states, in the unedited pass
over the prompt that ``generate`` reuses as its prefill (``modeling_alignez._steering``), so it costs about one
recomputed token. Its config entry holds JSON; its two vectors live in ``steering.safetensors``:

- ``layer``: the decoder layer whose output (the residual stream) is read;
- ``pooling``: ``"last"`` (each row's last real token) or ``"mean"`` (the mean over its real tokens);
- ``comparison`` and ``threshold``: the gate fires on a row when its score is ``>`` (or ``<``) the threshold;
- tensors ``{axis}.gate.direction`` (a unit vector ``[hidden]``) and ``{axis}.gate.mean`` (``[hidden]``).

The score of a row with pooled state ``h`` is ``cos(h - mean, direction)``, in [-1, 1]. CAST scores
``cos(h, tanh(P h))`` with ``P`` the projector on its condition vector ``v``; for small projections that is
``cos(h, v)`` up to sign. Here ``h`` is centred on the build prompts' mean first: residual states share a large
common component, which otherwise dominates every cosine (CAST's threshold absorbs it only approximately), and
there is no tanh. The builder orients ``direction`` so that prompts the model refused score higher.

``kind: "self_judge"`` asks the model a 0-9 harm question about the prompt before generating (an extra pass over a
judge prompt). It is stored in the axis entry of the config as token ids, so the runtime needs no tokenizer:

- ``user_start`` / ``turn_end``: the chat template's tokens around a user message; the last user message of a
  prompt is the request to judge (a prompt without ``user_start`` is judged whole);
- ``before`` / ``after``: the judge prompt around the request (a chat turn asking for a 0-9 rating);
- ``digits``: the token ids of ``0`` .. ``9``;
- ``threshold``: the gate fires on a row when the expected digit, ``sum_d d * p(d)`` over the ten digit tokens
  after the judge prompt, is above it.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import reprlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from transformers.generation import utils as generation_utils

from .errors import GateError, SteeringError
from .positions import last_positions, left_pad, position_ids

GATE_KINDS = ("self_judge", "prefill")
PREFILL_POOLINGS = ("last", "mean")
PREFILL_COMPARISONS = (">", "<")
PREFILL_TENSORS = ("direction", "mean")  # stored as {axis}.gate.direction and {axis}.gate.mean
GATE_TOKEN_FIELDS = ("user_start", "turn_end", "before", "after", "digits")
MAX_TOKEN_ID = 2**31 - 1  # no vocabulary is larger; bigger ids would overflow a tensor of token ids
# A chat turn asking for a rating takes tens to hundreds of tokens; a field longer than this is not a judge prompt,
# and would make every gated call run the model over that many tokens (a 16 MiB config could hold millions).
MAX_GATE_TOKENS = 8192
# transformers 5.x renamed generate's `past_key_values` to `cache`; use whichever this version calls it.
CACHE_NAMES = tuple(getattr(generation_utils, "ALL_CACHE_NAMES", ("past_key_values",)))


def check_gate(name: str, gate: Any, vocab_size: int | None = None, num_layers: int | None = None) -> None:
    """Raise a GateError (a ValueError) naming the axis when a gate is malformed (or names ids past ``vocab_size``,
    or a layer past ``num_layers``). A prefill gate's tensors are checked by :func:`check_condition`."""
    if not isinstance(gate, dict) or gate.get("kind") not in GATE_KINDS:
        raise GateError(f"Axis {name!r}: 'gate' must be a dict with kind in {GATE_KINDS}, got {reprlib.repr(gate)}.")
    if gate["kind"] == "prefill":
        _check_prefill(name, gate, num_layers)
        return
    limit = MAX_TOKEN_ID if vocab_size is None else vocab_size - 1
    for field in GATE_TOKEN_FIELDS:
        ids = gate.get(field)
        if isinstance(ids, list) and len(ids) > MAX_GATE_TOKENS:
            raise GateError(
                f"Axis {name!r}: gate field {field!r} holds {len(ids)} token ids, more than the {MAX_GATE_TOKENS} a "
                "judge prompt may take; rebuild the gate (AlignEZBuilder(gate='self_judge')) or remove it."
            )
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise GateError(
                f"Axis {name!r}: gate field {field!r} must be a list of token ids, got {reprlib.repr(ids)}."
            )
        bad = next((i for i in ids if not 0 <= i <= limit), None)
        if bad is not None:
            raise GateError(
                f"Axis {name!r}: gate field {field!r} holds token id {reprlib.repr(bad)}, outside 0..{limit}"
                + (" (the base model's vocabulary)." if vocab_size is not None else ".")
            )
    if len(gate["digits"]) != 10 or not gate["before"]:
        raise GateError(f"Axis {name!r}: a gate needs ten digit token ids and a non-empty judge prompt.")
    threshold = gate.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not _finite(threshold):
        raise GateError(f"Axis {name!r}: gate threshold must be a finite number, got {threshold!r}.")


def _check_prefill(name: str, gate: dict, num_layers: int | None) -> None:
    layer = gate.get("layer")
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise GateError(f"Axis {name!r}: a prefill gate's 'layer' must be a layer index, got {reprlib.repr(layer)}.")
    if num_layers is not None and layer >= num_layers:
        raise GateError(
            f"Axis {name!r}: the prefill gate reads layer {layer}, but the base has {num_layers} layers (0.."
            f"{num_layers - 1}); rebuild the gate for this base."
        )
    threshold = gate.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not _finite(threshold):
        raise GateError(f"Axis {name!r}: gate threshold must be a finite number, got {reprlib.repr(threshold)}.")
    if gate.get("comparison") not in PREFILL_COMPARISONS:
        raise GateError(
            f"Axis {name!r}: a prefill gate's 'comparison' must be one of {PREFILL_COMPARISONS} (fire when the "
            f"score is above or below the threshold), got {reprlib.repr(gate.get('comparison'))}."
        )
    if gate.get("pooling") not in PREFILL_POOLINGS:
        raise GateError(
            f"Axis {name!r}: a prefill gate's 'pooling' must be one of {PREFILL_POOLINGS}, got "
            f"{reprlib.repr(gate.get('pooling'))}."
        )
    for key in PREFILL_TENSORS:  # in memory a gate dict may carry its tensors; config.json never does
        if key in gate and not isinstance(gate[key], torch.Tensor):
            raise GateError(
                f"Axis {name!r}: a prefill gate's {key!r} is a tensor, stored in steering.safetensors as "
                f"'{name}.gate.{key}', not a value in config.json (got {reprlib.repr(gate[key])})."
            )


def split_gate(gate: Mapping[str, Any]) -> tuple[dict, dict[str, Any]]:
    """A gate dict as its JSON fields (the config entry) and its tensors (``direction``/``mean``; prefill only)."""
    gate = dict(gate)
    if gate.get("kind") != "prefill":
        return gate, {}
    return {k: v for k, v in gate.items() if k not in PREFILL_TENSORS}, {
        k: gate[k] for k in PREFILL_TENSORS if k in gate
    }


def check_condition(name: str, tensors: Mapping[str, Any], hidden: int | None, loaded: bool = False):
    """A prefill gate's ``direction`` (made a unit vector) and ``mean`` as float32 ``[hidden]`` CPU tensors, or a
    GateError saying what is wrong. ``loaded``: read from a file, so they must already be floating point and unit."""
    missing = [k for k in PREFILL_TENSORS if k not in tensors]
    if missing:
        raise GateError(
            f"Axis {name!r}: a prefill gate needs the tensors {list(PREFILL_TENSORS)} (its condition direction and "
            f"the mean it centres on); {missing} missing. Give them in the gate dict (set_gate(name, {{..., "
            "'direction': v, 'mean': mu}})) or rebuild the gate (AlignEZBuilder(gate='prefill'))."
        )
    out = {}
    for key in PREFILL_TENSORS:
        value = tensors[key]
        if loaded and not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            raise GateError(
                f"Axis {name!r}: the prefill gate's {key!r} must be a floating-point tensor, got "
                f"{getattr(value, 'dtype', type(value).__name__)}."
            )
        try:
            value = torch.as_tensor(value).detach().to("cpu", torch.float32)
        except (TypeError, ValueError, RuntimeError) as err:
            raise GateError(f"Axis {name!r}: the prefill gate's {key!r} is not a tensor of numbers ({err}).") from err
        if value.dim() != 1 or (hidden is not None and value.shape[0] != hidden) or value.shape[0] == 0:
            raise GateError(
                f"Axis {name!r}: the prefill gate's {key!r} must have shape [{hidden or 'hidden'}] (the base's "
                f"hidden size), got {tuple(value.shape)}."
            )
        if not bool(torch.isfinite(value).all()):
            raise GateError(f"Axis {name!r}: the prefill gate's {key!r} contains NaN or Inf.")
        out[key] = value.contiguous()
    norm = float(out["direction"].norm())
    if norm == 0.0 or (loaded and abs(norm - 1.0) > 1e-3):
        raise GateError(f"Axis {name!r}: the prefill gate's 'direction' must be a unit vector, got norm {norm:.4g}.")
    out["direction"] = out["direction"] / norm
    return out


def pool_states(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """``[rows, seq, d]`` hidden states pooled per row (float32, on their device): the last real token, or the
    mean over the real tokens. Padding (0 in ``attention_mask``, whose last ``seq`` columns are these tokens) never
    counts, so a row's pooled state does not depend on how it was padded."""
    q_len = hidden.shape[1]
    mask = attention_mask[:, -q_len:] if attention_mask is not None and attention_mask.dim() == 2 else None
    if pooling == "mean":
        if mask is None:
            return hidden.float().mean(1)
        weight = mask.to(hidden.device, torch.float32)[..., None]
        return (hidden.float() * weight).sum(1) / weight.sum(1).clamp_min(1.0)
    gather = last_positions(mask, q_len)
    if gather is None:
        return hidden[:, -1].float()
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), gather.to(hidden.device)].float()


def condition_scores(states: torch.Tensor, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``cos(h - mean, direction)`` of each row's pooled state ``h`` (``[rows, d]`` -> ``[rows]``, float32 CPU)."""
    centred = states.float().cpu() - tensors["mean"]
    return (centred @ tensors["direction"]) / centred.norm(dim=-1).clamp_min(1e-12)


def prefill_fires(gate: Mapping[str, Any], scores: torch.Tensor) -> torch.Tensor:
    """Whether a prefill gate fires on each row (``[rows]`` bool) given its scores."""
    return scores > gate["threshold"] if gate["comparison"] == ">" else scores < gate["threshold"]


class _ReadDone(Exception):
    """Raised by the last reading hook of a pass that is stopped once the gates' layers are read."""


@contextlib.contextmanager
def reading_conditions(
    decoder_layers, reads: Iterable[tuple[int, str]], attention_mask: torch.Tensor | None, stop: bool = False
) -> Iterator[dict[tuple[int, str], torch.Tensor]]:
    """Record pooled outputs of decoder layers during the block's forward pass: ``{(layer, pooling): [rows, d]}``.

    ``reads`` are ``(layer, pooling)`` pairs. Hooks only read (nothing is edited). With ``stop`` the pass ends once
    the deepest layer asked for is read (the rest of the model and its head never run; the block ends quietly):
    only for a pass whose other outputs nobody needs.
    """
    wanted: dict[int, set[str]] = {}
    for layer, pooling in reads:
        wanted.setdefault(int(layer), set()).add(pooling)
    found: dict[tuple[int, str], torch.Tensor] = {}
    deepest = max(wanted, default=None)

    def reader(layer: int):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            for pooling in sorted(wanted[layer]):
                found[(layer, pooling)] = pool_states(hidden, attention_mask, pooling).cpu()
            if stop and layer == deepest:
                raise _ReadDone

        return hook

    handles = [decoder_layers[layer].register_forward_hook(reader(layer)) for layer in wanted]
    try:
        yield found
    except _ReadDone:
        pass
    finally:
        for handle in handles:
            handle.remove()


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _find(row: list[int], pattern: Sequence[int], last: bool = False) -> int:
    """Start of the first (or last) occurrence of ``pattern`` in ``row``, or -1."""
    m, pattern = len(pattern), list(pattern)
    starts = range(len(row) - m, -1, -1) if last else range(len(row) - m + 1)
    return next((i for i in starts if m and row[i : i + m] == pattern), -1)


def request_tokens(row: Sequence[int], user_start: Sequence[int], turn_end: Sequence[int]) -> list[int]:
    """The tokens of the last user message of one prompt (the whole prompt when it has no user marker)."""
    row = list(row)
    start = _find(row, user_start, last=True)
    if start < 0:
        return row
    body = row[start + len(user_start) :]
    end = _find(body, turn_end)
    return body if end < 0 else body[:end]


def judge_batch(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, gate: Mapping[str, Any], with_before: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Judge prompts ``before + request + after`` for every row, left-padded with id 0 (masked out).

    With ``with_before=False`` the rows are ``request + after`` only, for a caller that runs the shared ``before``
    once and reuses its key/value cache.
    """
    rows = []
    before = list(gate["before"]) if with_before else []
    for i in range(input_ids.shape[0]):
        ids = input_ids[i]
        if attention_mask is not None and attention_mask.dim() == 2:
            ids = ids[attention_mask[i].bool()]
        request = request_tokens(ids.tolist(), gate["user_start"], gate["turn_end"])
        rows.append(before + request + list(gate["after"]))
    return left_pad(rows, 0)


def expected_digit(last_logits: torch.Tensor, digits: Sequence[int]) -> torch.Tensor:
    """``sum_d d * p(d)`` with ``p`` the next-token distribution renormalised over the ten digits: ``[rows]``."""
    probs = last_logits.float()[:, list(digits)].softmax(-1)
    return probs @ torch.arange(10, dtype=probs.dtype, device=probs.device)


@torch.no_grad()
def judge(base_model, gate: Mapping[str, Any], input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """Expected digit of ``base_model``'s answer to ``gate``'s judge prompt about each row's last user message.

    ``Tensor[rows]`` (float32, on the CPU). Any gate dict works; its threshold plays no part. ``base_model`` must
    run unsteered (the runtime calls this before any steering hook is in place).
    """
    if input_ids is None:
        raise SteeringError("A self-judged gate reads token ids; pass input_ids, not inputs_embeds.")
    rows, mask_cpu = input_ids.shape[0], None if attention_mask is None else attention_mask.cpu()
    device = base_model.get_input_embeddings().weight.device
    params = inspect.signature(base_model.forward).parameters
    # Only the last position's logits are needed; most models can skip the others (a large vocabulary x prompt).
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    cache_arg = next((name for name in CACHE_NAMES if name in params), None)
    cache = None
    if rows > 1 and cache_arg is not None:
        # The judge question (most of each judge prompt) is the same for every row: run it once and let the batch
        # share its key/value cache.
        head = base_model(input_ids=torch.tensor([list(gate["before"])], device=device), use_cache=True)
        cache = next((head[name] for name in CACHE_NAMES if name in head), None)
    if hasattr(cache, "batch_repeat_interleave"):
        cache.batch_repeat_interleave(rows)
        ids, rest_mask = judge_batch(input_ids.cpu(), mask_cpu, gate, with_before=False)
        # Padding now sits between the shared question and each request; the mask and positions say so.
        mask = torch.cat([torch.ones(rows, len(gate["before"]), dtype=torch.long), rest_mask], 1)
        extra.update({cache_arg: cache, "use_cache": True})
    else:
        ids, mask = judge_batch(input_ids.cpu(), mask_cpu, gate)
        extra["use_cache"] = False
    logits = base_model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=position_ids(mask)[:, -ids.shape[1] :].to(device),
        **extra,
    ).logits
    return expected_digit(logits[:, -1], gate["digits"]).cpu()


def apply_gates(strengths: dict[str, torch.Tensor], gates: Mapping[str, Mapping[str, Any]], rate) -> None:
    """Zero the strength of each self-judge-gated axis on the rows its gate does not fire on (in place).

    ``gates`` maps axis names to gate dicts (prefill gates among them are left alone: ``modeling_alignez._steering``
    applies those); ``rate(gate)`` returns the rows' ratings ``[rows]``. Axes whose gates share a judge prompt share
    one rating, and an axis at strength 0 on every row is not judged at all.
    """
    ratings: dict[str, torch.Tensor] = {}
    for name, gate in gates.items():
        if gate.get("kind") != "self_judge" or not bool(strengths[name].any()):
            continue
        key = json.dumps({k: gate[k] for k in GATE_TOKEN_FIELDS})
        if key not in ratings:
            ratings[key] = rate(gate)
        strengths[name] = strengths[name] * (ratings[key] > gate["threshold"]).float()
