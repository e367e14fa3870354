"""The vLLM plugin (entry point ``vllm.general_plugins``: ``alignez``): steer a served base model with a pack.

vLLM loads general plugins in every process it starts. With ``ALIGNEZ_VLLM_PACK`` unset the plugin does nothing,
so installing alignez-hf next to vLLM changes nothing. With it set:

- the front end checks each request's ``steering`` parameter against the pack (a bad one is a 400, not a crash);
- each model runner installs forward hooks on the pack's layers once the model is loaded, after checking that the
  model is the pack's base and that vLLM runs eagerly without prefix caching (see ``check_engine``);
- before every real forward pass (``_model_forward``; warm-up passes do not go through it) the runner builds the
  step's steering plan with the runtime's ``build_plan``: one row per request, strengths from its ``extra_args``, and
  the flattened tokens to edit, those at or after the request's last prompt token (the runtime's rule; chunked
  prefill included). A step where nothing steers installs no plan, and the hooks return at once.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..runtime.layers import find_decoder_layers, hook_module
from ..runtime.plan import build_plan
from .pack import PACK_ENV, ServedPack, strength_rows

_PATCHED = False


def register() -> None:
    """Entry point: patch vLLM's model runner and request validation when a pack is configured (idempotent)."""
    global _PATCHED
    folder = os.environ.get(PACK_ENV)
    if not folder or _PATCHED:
        return
    _PATCHED = True
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")  # the hooks read the V1 runner's batch layout
    _patch_request_validation(folder)
    _patch_runner(folder)


def _patch_request_validation(folder: str) -> None:
    from vllm.exceptions import VLLMValidationError
    from vllm.sampling_params import SamplingParams

    original = SamplingParams._verify_extra_args
    pack: list[ServedPack] = []

    def verify(self) -> None:
        original(self)
        if self.extra_args:
            if not pack:
                pack.append(ServedPack(folder))
            try:
                pack[0].strengths(self.extra_args)
            except ValueError as err:
                raise VLLMValidationError(str(err), parameter="vllm_xargs") from err

    SamplingParams._verify_extra_args = verify


def _patch_runner(folder: str) -> None:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    runners = [GPUModelRunner]
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner

        runners.append(CPUModelRunner)  # its load_model does not call GPUModelRunner's
    except ImportError:
        pass
    for cls in runners:
        if "load_model" in cls.__dict__:
            cls.load_model = _after_load(cls.__dict__["load_model"], folder)
    forward = GPUModelRunner._model_forward

    def model_forward(self, *args, **kwargs):
        steering = getattr(self, "_alignez", None)
        if steering is None:
            return forward(self, *args, **kwargs)
        steering.prepare(self)
        try:
            return forward(self, *args, **kwargs)
        finally:
            steering.step = None

    GPUModelRunner._model_forward = model_forward


def _after_load(load_model, folder: str):
    def wrapped(self, *args, **kwargs):
        out = load_model(self, *args, **kwargs)
        if getattr(self, "_alignez", None) is None:
            self._alignez = RunnerSteering(ServedPack(folder), self)
        return out

    return wrapped


def check_engine(runner) -> None:
    """Refuse engine settings under which the hooks would not do what the runtime does."""
    config = runner.vllm_config
    problems = []
    if not config.model_config.enforce_eager:
        problems.append("enforce_eager=True (compiled graphs skip the hooks)")
    if config.cache_config.enable_prefix_caching:
        problems.append(
            "enable_prefix_caching=False (a cached block would hand a later prompt the steered KV of generated tokens)"
        )
    if config.speculative_config is not None:
        problems.append("no speculative decoding (draft tokens are not steered)")
    if config.parallel_config.pipeline_parallel_size > 1:
        problems.append("pipeline_parallel_size=1 (tensor parallelism is fine)")
    if problems:
        raise ValueError(
            "Steering with an alignez pack needs " + "; ".join(problems) + ". alignez serve and "
            "alignez_hf.vllm.steered_llm set these for you."
        )


class _Step:
    """One forward pass's steering: the flattened token rows to edit and, per layer, their edit."""

    def __init__(self, index: torch.Tensor, edits: dict):
        self.index, self.edits = index, edits


class RunnerSteering:
    """The pack, the hooks on one runner's model, and the plan of the forward pass in progress."""

    def __init__(self, pack: ServedPack, runner):
        check_engine(runner)
        pack.check_base(runner.model_config.hf_config)
        self.pack, self.device = pack, runner.device
        self.axes = pack.axes()
        self.composition = pack.config.composition
        self.positions = pack.config.positions
        self.step: _Step | None = None
        self._strengths: dict[str, dict[str, float]] = {}
        self._key: tuple | None = None  # the requests the cached plan is for
        self._plan = None
        self._rows = self._tokens = None  # the edited rows the cached step is for
        self._step: _Step | None = None
        model = runner.get_model()
        text = runner.model_config.hf_config.get_text_config()
        _, layers = find_decoder_layers(model, text.num_hidden_layers)
        hook_point = pack.config.hook_point
        for layer in sorted({i for axis in self.axes for i in axis.layers}):
            module = hook_module(layers[layer], hook_point, layer)
            module.register_forward_hook(self._hook(layer, residual=hook_point == "residual"))

    def prepare(self, runner) -> None:
        """Plan the coming forward pass from the runner's batch (requests in ``input_batch`` order).

        The plan depends only on which requests are in the batch (their strengths are fixed), and the edited rows
        on where their tokens sit: in a run of decoding steps neither changes, so both are reused.
        """
        batch = runner.input_batch
        count = batch.num_reqs
        key = tuple(batch.req_ids[:count])
        if key != self._key:
            self._key, self._rows = key, None
            requests = [self._request_strengths(runner, req_id) for req_id in key]
            steers = any(value for strengths in requests for value in strengths.values())
            self._plan = (
                build_plan(self.axes, strength_rows(self.pack, requests), count, composition=self.composition)
                if steers
                else None
            )
        if self._plan is None or not self._plan.layers:
            self.step = None
            return
        starts = runner.query_start_loc.np[: count + 1]
        request_of = np.repeat(np.arange(count), np.diff(starts))
        if self.positions == "all":
            tokens = np.arange(len(request_of))
        else:
            position = batch.num_computed_tokens_cpu[request_of] + np.arange(len(request_of)) - starts[request_of]
            tokens = np.nonzero(position >= batch.num_prompt_tokens[request_of] - 1)[0]
        if not len(tokens):
            self.step = None
            return
        rows_of_tokens = request_of[tokens]
        if self._rows is None or not (
            np.array_equal(rows_of_tokens, self._rows) and np.array_equal(tokens, self._tokens)
        ):
            self._rows, self._tokens = rows_of_tokens, tokens
            rows_t = torch.from_numpy(rows_of_tokens)
            edits = {layer: edit.take(rows_t, self.device) for layer, edit in self._plan.layers.items()}
            self._step = _Step(torch.from_numpy(tokens).to(self.device), edits)
        self.step = self._step

    def _request_strengths(self, runner, req_id: str) -> dict[str, float]:
        found = self._strengths.get(req_id)
        if found is None:
            if len(self._strengths) > 4096:  # finished requests leave their entries behind: forget them all
                self._strengths.clear()
            params = runner.requests[req_id].sampling_params
            found = self._strengths[req_id] = self.pack.strengths(getattr(params, "extra_args", None))
        return found

    def _hook(self, layer: int, residual: bool):
        """The edit hook of one layer: on the decoder layer (``residual``) or on its MLP."""

        def hook(module, args, output):
            step = self.step
            if step is None or layer not in step.edits:
                return None
            # vLLM's decoder layers return the residual stream in two parts, hidden + residual; an MLP returns one.
            hidden, rest = output if residual else (output, None)
            edit = step.edits[layer]
            if edit.push is not None:
                delta = edit.push
            else:
                x = hidden[step.index] if rest is None else hidden[step.index] + rest[step.index]
                x = x.float()
                delta = edit(x) - x
            # A new tensor: the next layer's fused add-and-norm works in place on what it is given.
            edited = hidden.index_add(0, step.index, delta.to(hidden.dtype))
            return edited if rest is None else (edited, rest)

        return hook
