"""lm-evaluation-harness on a steering pack, scored the way generation steers: lm-eval's model ``alignez``.

lm-eval's ``hf`` model loads a pack (``--model hf --model_args pretrained=PACK``) and its generation tasks are
steered, but it scores a batch of multiple-choice answers (any log-likelihood of given text) in one right-padded
forward pass over context + continuation, where a pack's ``"last"`` position rule edits only the final column:
right for a one-token continuation in the batch's longest row, and otherwise partly or wholly unsteered (a shorter
row's final column is padding). :class:`AlignEZLM` (``--model alignez``, or ``alignez lm-eval``) passes
``steering_from`` to the pack's forward, so every continuation token is scored under the edits generation would
have made (each row edited from its context's last token on; gates and the per-query policy read the context
alone). Its log-likelihoods then equal those of the steered model generating the continuation.

Model arguments beyond lm-eval's ``hf`` ones: ``strength`` (every axis) and ``strength_<axis>`` (one axis) set
strengths for the run, e.g. ``strength=0`` for the base behind the same code path; ``base_model_name_or_path`` and
the other keyword arguments of ``AlignEZForCausalLM.from_pretrained`` go to it.

Requires ``lm-eval`` (``pip install "alignez-hf[lm-eval]"``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

try:
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM
except ModuleNotFoundError as err:  # pragma: no cover - exercised without the extra installed
    raise ModuleNotFoundError(
        'alignez_hf.evaluation.lmeval needs lm-evaluation-harness: pip install "alignez-hf[lm-eval]"'
    ) from err
from tqdm.auto import tqdm

from ..runtime import AlignEZForCausalLM


@register_model("alignez")
class AlignEZLM(HFLM):
    """lm-eval's HF model for a steering pack, with continuations scored under generation's edits."""

    AUTO_MODEL_CLASS = AlignEZForCausalLM  # lm-eval loads the pack with this class (the installed runtime)

    def __init__(self, pretrained, strength: float | str | None = None, **kwargs):
        strengths = {
            key[len("strength_") :]: float(kwargs.pop(key)) for key in list(kwargs) if key.startswith("strength_")
        }
        kwargs.setdefault("backend", "causal")
        super().__init__(pretrained=pretrained, **kwargs)
        if not isinstance(self.model, AlignEZForCausalLM):
            raise TypeError(
                f"lm-eval's 'alignez' model evaluates steering packs; {type(self.model).__name__} is not one "
                "(use --model hf for a plain checkpoint)."
            )
        unknown = sorted(set(strengths) - set(self.model.axes))
        if unknown:
            raise ValueError(
                f"strength_{unknown[0]}: the pack has no axis {unknown[0]!r}; its axes: {list(self.model.axes)}."
            )
        for name in self.model.axes:
            value = strengths.get(name, None if strength is None else float(strength))
            if value is not None:
                self.model.set_strength(name, value)
        self._steering_from: int | None = None

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        """lm-eval's scoring, run once per group of requests whose context ends at the same input column.

        lm-eval feeds ``(context + continuation)[-(max_length + 1):][:-1]``, right-padded: the context's last token
        sits at column ``len(input) - len(continuation)`` of each row, and edits start there.
        """
        groups: dict[int, list[int]] = {}
        for index, (_, context, continuation) in enumerate(requests):
            length = min(len(context) + len(continuation), self.max_length + 1) - 1
            groups.setdefault(length - len(continuation), []).append(index)
        results: list = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="Scoring (steered)")
        for start, indices in sorted(groups.items()):
            self._steering_from = start
            try:
                scored = super()._loglikelihood_tokens(
                    [requests[i] for i in indices], disable_tqdm=True, override_bs=override_bs
                )
            finally:
                self._steering_from = None
            for i, result in zip(indices, scored, strict=True):
                results[i] = result
            bar.update(len(indices))
        bar.close()
        return results

    def _model_call(self, inps: torch.Tensor, attn_mask=None, labels=None) -> torch.Tensor:
        if self._steering_from is None:  # batch-size probing and anything else lm-eval runs itself
            return super()._model_call(inps, attn_mask, labels)
        with (
            torch.no_grad(),
            torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            ),
        ):
            return self.model(inps, steering_from=self._steering_from).logits


def cli(argv: Sequence[str]) -> None:
    """Run lm-eval's own command line (``lm-eval run ...``) with the ``alignez`` model registered and the default."""
    from lm_eval.__main__ import cli_evaluate

    argv = list(argv)
    if argv and argv[0] == "run":
        argv = argv[1:]
    if not any(a == "--model" or a.startswith("--model=") for a in argv):
        argv = ["--model", "alignez", *argv]
    previous = sys.argv
    sys.argv = ["lm-eval", "run", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = previous


__all__ = ["AlignEZLM", "cli"]
