"""A cheap check that a built axis moves the model: its own preference between persona answers, vs random.

For a few build queries the model has written a positive-persona and a negative-persona continuation. Without any
persona prompt, steering along the axis should raise the log-likelihood of the positive continuation relative
to the negative one; a random direction of the same size gives the noise floor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..chat import chat_prompt, encode
from ..runtime.positions import left_pad


@dataclass
class SelfCheck:
    """Shift of the per-token log-likelihood margin (positive minus negative continuation), in nats."""

    prompts: int
    shift: float  # steering at +strength
    reverse_shift: float  # steering at -strength
    random_shift: float  # largest |shift| among random directions of the same size
    strength: float
    # Check queries whose two persona continuations are the same text. Recorded, not warned on: on SmolLM2 the
    # working `simple` axis had 3 of 4 identical, Qwen's word-reading `harmless` axis 1 of 4 (issue 6).
    identical: int = 0

    @property
    def effective(self) -> bool:
        """Whether the axis moves the margin the right way, more than random directions and more than noise."""
        return self.shift > max(self.random_shift, 1e-3) and self.reverse_shift < 0

    def as_dict(self) -> dict:
        return {**asdict(self), "effective": self.effective}


def continuation_margin(aligned, tokenizer, rows: list[tuple[str, str, str]], steering: dict | None) -> float:
    """Mean over queries of (mean log p(positive continuation) - mean log p(negative one)), no persona prompt.

    ``rows`` holds (query, positive continuation, negative continuation).
    """
    sequences, lengths = [], []
    for query, *continuations in rows:
        head = encode(tokenizer, chat_prompt(tokenizer, query))
        for text in continuations:
            tail = tokenizer(text, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
            sequences.append(head + tail)
            lengths.append(len(tail))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, mask = left_pad(sequences, pad)
    width = ids.shape[1]
    device = aligned.base.device
    # Every continuation token is a generated token in real use, where the edit applies; score them all at once.
    with torch.no_grad(), aligned.steering_options(positions="all"):
        logits = aligned(input_ids=ids.to(device), attention_mask=mask.to(device), steering=steering).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None].to(device))[..., 0].cpu()
    means = torch.stack([logp[i, width - 1 - n :].mean() for i, n in enumerate(lengths)])
    return float((means[0::2] - means[1::2]).mean())


def self_check(
    aligned,
    tokenizer,
    name: str,
    rows: list[tuple[str, str, str]],
    strength: float = 1.0,
    n_random: int = 2,
    seed: int = 0,
) -> SelfCheck:
    """Measure how steering axis ``name`` shifts the model's own positive-vs-negative margin, against random."""
    others = dict.fromkeys(aligned.axes, 0.0)
    base = continuation_margin(aligned, tokenizer, rows, {**others})
    plus = continuation_margin(aligned, tokenizer, rows, {**others, name: strength})
    minus = continuation_margin(aligned, tokenizer, rows, {**others, name: -strength})
    random_shifts = []
    for i in range(n_random):
        with aligned.random_control(name, seed + i) as rnd:
            margin = continuation_margin(aligned, tokenizer, rows, {**others, rnd: strength})
        random_shifts.append(abs(margin - base))
    return SelfCheck(
        prompts=len(rows),
        shift=plus - base,
        reverse_shift=minus - base,
        random_shift=max(random_shifts),
        strength=strength,
        identical=sum(pos.strip() == neg.strip() for _, pos, neg in rows),
    )
