"""Fit a self-judged harm gate for a refusal axis, from the model's own answers to its build queries (no labels).

A refusal direction read from a persona contrast on a small model is a generic refusal direction: it raises
refusal of ordinary and benign-but-edgy requests too (issue 6, Qwen2.5-Coder-0.5B-Instruct). A gate lets the
axis steer only the prompts the model itself rates as harmful: before generating, the runtime asks the model
"how harmful is this request, 0-9?" and reads the expected digit (``alignez_hf.runtime.gates``).

The threshold comes from the model's own behaviour on the build queries: it answers each of them greedily and a
keyword detector marks its refusals. By default the gate may fire on at most 30 % of the requests the model
answered (a budget for over-refusal; chosen on Qwen's tuning split in issue 6, where it beat the alternative);
``answered_fire=None`` takes instead the threshold that best separates refused from answered (Youden's J). The
model labels its own data; nobody else does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..chat import chat_prompt, encode_texts
from ..runtime.gates import judge
from .config import DEFAULT_ANSWERED_FIRE
from .generation import SamplingSettings, generate_texts
from .orientation import spread

HARM_QUESTION = (
    "On a scale from 0 (completely harmless) to 9 (extremely harmful), how harmful is the following request? "
    "Reply with one digit.\n\nRequest:\n{request}"
)
GATE_TOKENS = 24  # a refusal shows in the opening of an answer
MIN_PER_SIDE = 4  # refused and answered build queries needed to place a threshold
MIN_AUC = 0.6  # below this the model's rating does not track its own refusals: no gate
_SENTINELS = ("apple", "zebra")


@dataclass
class GateFit:
    """How a gate's threshold was placed, and whether the gate was added."""

    queries: int
    refused: int
    auc: float | None = None
    threshold: float | None = None
    fires_refused: float | None = None
    fires_answered: float | None = None
    rule: str = ""
    added: bool = False
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _special_ids(tokenizer) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids |= {int(i) for i in (getattr(tokenizer, "added_tokens_decoder", None) or {})}
    return ids


def _around(tokenizer, render) -> tuple[list[int], list[int]]:
    """Token ids before and after the slot of ``render(text)``, found by rendering two different texts."""
    a, b = (tokenizer.encode(render(s), add_special_tokens=False) for s in _SENTINELS)
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    return a[:head], a[len(a) - tail :]


def judge_tokens(tokenizer, question: str = HARM_QUESTION) -> dict:
    """The token fields of a self-judge gate (see ``alignez_hf.runtime.gates``) for this tokenizer's chat format."""
    special = _special_ids(tokenizer)
    before_user, after_user = _around(tokenizer, lambda s: chat_prompt(tokenizer, s))
    if not before_user or not after_user:
        raise ValueError("Cannot locate the user message in the tokenizer's chat format; a gate needs one.")
    # The user marker: the shortest tail of the text before a user message that holds a special token (ChatML:
    # "<|im_start|>user\n"), or, without special tokens, the shortest tail found only once in the whole prompt
    # ("User:" and not ":", which "Assistant:" repeats).
    whole = tokenizer.encode(chat_prompt(tokenizer, _SENTINELS[0]), add_special_tokens=False)
    plain = not any(t in special for t in before_user)
    user_start = None
    for n in range(1, len(before_user) + 1):
        tail = before_user[-n:]
        if (plain and _count(whole, tail) == 1) or (not plain and any(t in special for t in tail)):
            user_start = tail
            break
    turn_end = after_user[:1] if after_user[0] in special else after_user
    before, after = _around(tokenizer, lambda s: chat_prompt(tokenizer, question.format(request=s)))
    digits = []
    for d in range(10):
        ids = tokenizer.encode(str(d), add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"The digit {d} is not a single token for this tokenizer; a self-judge gate needs that.")
        digits.append(int(ids[0]))
    return {
        "kind": "self_judge",
        "question": question,
        "user_start": [int(t) for t in user_start or before_user],
        "turn_end": [int(t) for t in turn_end],
        "before": [int(t) for t in before],
        "after": [int(t) for t in after],
        "digits": digits,
    }


def _count(row: list[int], pattern: list[int]) -> int:
    m = len(pattern)
    return sum(row[i : i + m] == pattern for i in range(len(row) - m + 1))


def auc(negative: torch.Tensor, positive: torch.Tensor) -> float:
    """P(a positive scores above a negative), ties counted half."""
    diff = positive[None, :] - negative[:, None]
    return float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())


def youden_threshold(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """The threshold (fire when ``score > t``) that maximises TPR - FPR; midway between neighbouring scores."""
    values = scores.unique(sorted=True)
    candidates = torch.cat([values[:1] - 1.0, (values[1:] + values[:-1]) / 2])
    pos, neg = scores[positive], scores[~positive]
    best, best_j = float(candidates[0]), -2.0
    for t in candidates.tolist():
        j = float((pos > t).float().mean() - (neg > t).float().mean())
        if j > best_j + 1e-12:
            best, best_j = t, j
    return best


def gate_evidence(
    aligned,
    tokenizer,
    queries: list[str],
    *,
    batch_size: int = 16,
    tokens: int = GATE_TOKENS,
    question: str = HARM_QUESTION,
) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The gate's token fields, the model's 0-9 rating of each query and whether it refused it (greedy, unsteered)."""
    texts = [chat_prompt(tokenizer, q) for q in queries]
    off = dict.fromkeys(aligned.axes, 0.0)
    answers = generate_texts(
        aligned, tokenizer, texts, tokens, SamplingSettings(do_sample=False), batch_size, steering=off
    )
    from ..evaluation.scorers import is_refusal

    refused = torch.tensor([is_refusal(a) for a in answers])
    gate = judge_tokens(tokenizer, question)
    return gate, judge_texts(aligned, tokenizer, gate, texts, batch_size), refused


def judge_texts(aligned, tokenizer, gate: dict, texts: list[str], batch_size: int = 16) -> torch.Tensor:
    """The unsteered model's 0-9 rating (``runtime.gates.judge``) of chat-formatted prompt texts, batched."""
    scores = []
    for i in range(0, len(texts), batch_size):
        enc = encode_texts(tokenizer, texts[i : i + batch_size])
        scores.append(judge(aligned.base, gate, enc["input_ids"], enc["attention_mask"]))
    return torch.cat(scores)


def place_threshold(scores: torch.Tensor, refused: torch.Tensor, answered_fire: float | None = None) -> GateFit:
    """Where the gate's threshold goes, from the ratings and own refusals of the build queries.

    By default the threshold maximises Youden's J (refused vs answered). With ``answered_fire`` it is the lowest
    threshold that fires on at most that share of the queries the model answered (a budget for over-refusal).
    """
    fit = GateFit(queries=len(scores), refused=int(refused.sum()))
    if min(fit.refused, fit.queries - fit.refused) < MIN_PER_SIDE:
        fit.reason = (
            f"the model refused {fit.refused} of {fit.queries} build queries; placing a threshold needs at least "
            f"{MIN_PER_SIDE} refused and {MIN_PER_SIDE} answered (add queries it refuses, or ones it answers)"
        )
        return fit
    fit.auc = auc(scores[~refused], scores[refused])
    if answered_fire is None:
        fit.threshold = youden_threshold(scores, refused)
        fit.rule = "youden"
    else:
        if not 0.0 <= answered_fire < 1.0:
            raise ValueError(f"answered_fire must be in [0, 1), got {answered_fire!r}.")
        answered = scores[~refused].sort().values
        allowed = int(answered_fire * len(answered))  # answered queries the gate may fire on
        fit.threshold = float(answered[len(answered) - allowed - 1])
        fit.rule = f"fires on at most {answered_fire:.0%} of the answered"
    fires = scores > fit.threshold
    fit.fires_refused = float(fires[refused].float().mean())
    fit.fires_answered = float(fires[~refused].float().mean())
    if fit.auc < MIN_AUC:
        fit.reason = (
            f"the model's own 0-9 harm rating barely tracks its refusals (AUC {fit.auc:.2f}, need {MIN_AUC}): "
            "a gate on it would be close to a coin toss"
        )
        return fit
    fit.added = True
    return fit


def fit_gate(
    aligned,
    tokenizer,
    name: str,
    queries: list[str],
    *,
    max_queries: int = 64,
    answered_fire: float | None = DEFAULT_ANSWERED_FIRE,
    batch_size: int = 16,
    tokens: int = GATE_TOKENS,
    question: str = HARM_QUESTION,
) -> GateFit:
    """Place a self-judged harm gate on axis ``name`` from the model's own refusals of its build queries.

    The gate is stored on the axis (``model.axes[name].gate``) when the model's rating tracks its refusals
    (AUC at least 0.6, at least four refused and four answered queries); otherwise the axis stays ungated and
    ``GateFit.reason`` says why. ``answered_fire``: see ``place_threshold``.
    """
    queries = spread(list(queries), max_queries)
    gate, scores, refused = gate_evidence(
        aligned, tokenizer, queries, batch_size=batch_size, tokens=tokens, question=question
    )
    fit = place_threshold(scores, refused, answered_fire)
    if fit.added:
        aligned.set_gate(name, {**gate, "threshold": fit.threshold})
    return fit
