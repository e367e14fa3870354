"""Fit a harm gate for a refusal axis, from the model's own answers to its build queries (no labels).

A refusal direction read from a persona contrast on a small model is a generic refusal direction: it raises
refusal of ordinary and benign-but-edgy requests too (issue 6, Qwen2.5-Coder-0.5B-Instruct). A gate lets the
axis steer only the prompts the model itself rates as harmful: before generating, the runtime asks the model
"how harmful is this request, 0-9?" and reads the expected digit (``alignez_hf.runtime.gates``).

The threshold comes from the model's own behaviour on the build queries: it answers each of them greedily and a
keyword detector marks its refusals. By default the gate may fire on at most 30 % of the requests the model
answered (a budget for over-refusal; chosen on Qwen's tuning split in issue 6, where it beat the alternative);
``answered_fire=None`` takes instead the threshold that best separates refused from answered (Youden's J). The
model labels its own data; nobody else does.

The ``prefill`` gate (``fit_prefill_gate``; CAST's conditional activation steering, label-free) reads the condition
from the prompt's own hidden states instead, in the pass the model runs over the prompt anyway: the same greedy
answers and refusal detector split the build queries into REFUSED and ANSWERED; a stratified split holds a third
of each out. On the fitting part, each layer (and pooling: the last real token, or the mean over the prompt's
tokens) gives a condition direction: the first principal component of the mean-centred prompt states of both
sets, oriented so that refused prompts score higher (score: ``runtime.gates.condition_scores``). On the held-out
part a grid search over layer x pooling x comparison (``>``/``<``) places each threshold at the answered-fire
budget and picks, explicitly: the highest held-out refused-recall (share of held-out refused prompts the gate
fires on) among gates that fire on at most ``answered_fire`` of the held-out answered prompts; ties go to the
higher held-out AUC, then the lower answered-fire, then the shallower layer. A random direction at the chosen
layer, pooling and budget (same centring, oriented the same way) is the reference the fit is reported against.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..chat import chat_prompt, encode_texts
from ..runtime.gates import PREFILL_COMPARISONS, PREFILL_POOLINGS, condition_scores, judge, prefill_fires
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
HELD_OUT_EVERY = 3  # the prefill gate's grid search: every third refused and every third answered query held out
PREFILL_MIN_PER_SIDE = 6  # refused and answered build queries a prefill gate needs (4 to fit, 2 held out, each)
RANDOM_SEEDS = 8  # random directions the prefill fit is compared with
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


def own_refusals(
    aligned, tokenizer, queries: list[str], *, batch_size: int = 16, tokens: int = GATE_TOKENS
) -> tuple[list[str], torch.Tensor]:
    """The chat-formatted prompt of each query and whether the model refused it (greedy, unsteered answers)."""
    texts = [chat_prompt(tokenizer, q) for q in queries]
    off = dict.fromkeys(aligned.axes, 0.0)
    answers = generate_texts(
        aligned, tokenizer, texts, tokens, SamplingSettings(do_sample=False), batch_size, steering=off
    )
    from ..evaluation.scorers import is_refusal

    return texts, torch.tensor([is_refusal(a) for a in answers], dtype=torch.bool)


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
    texts, refused = own_refusals(aligned, tokenizer, queries, batch_size=batch_size, tokens=tokens)
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


# ---------------------------------------------------------------------------------------------- the prefill gate
@dataclass
class PrefillFit:
    """How a prefill gate was fitted and chosen (the builder's report), and whether it was added.

    ``fires_refused`` / ``fires_answered`` / ``auc`` are measured on the held-out split; ``random`` is what random
    directions at the chosen layer, pooling and budget give there.
    """

    queries: int
    refused: int
    kind: str = "prefill"
    split: dict = field(default_factory=dict)
    layers_tried: list = field(default_factory=list)
    poolings_tried: list = field(default_factory=list)
    comparisons_tried: list = field(default_factory=list)
    objective: str = ""
    answered_fire_budget: float | None = None
    layer: int | None = None
    pooling: str | None = None
    comparison: str | None = None
    threshold: float | None = None
    auc: float | None = None
    fires_refused: float | None = None
    fires_answered: float | None = None
    fit_fires_refused: float | None = None
    fit_fires_answered: float | None = None
    random: dict = field(default_factory=dict)
    grid: list = field(default_factory=list)
    rule: str = ""
    added: bool = False
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def held_out_split(refused: torch.Tensor, every: int = HELD_OUT_EVERY) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(fit, held_out)``: every ``every``-th refused and every ``every``-th answered query held out."""
    fit, held = [], []
    for side in (True, False):
        for i, index in enumerate(torch.nonzero(refused == side).flatten().tolist()):
            (held if i % every == every - 1 else fit).append(index)
    return torch.tensor(sorted(fit), dtype=torch.long), torch.tensor(sorted(held), dtype=torch.long)


def condition_direction(states: torch.Tensor, refused: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"direction", "mean"}``: the first principal component of the mean-centred ``states`` ``[n, d]``, oriented
    so that the refused rows score higher on average, and the mean it was centred on."""
    states = states.float()
    mean = states.mean(0)
    centred = states - mean
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    direction = vh[0] / vh[0].norm().clamp_min(1e-12)
    tensors = {"direction": direction.contiguous(), "mean": mean.contiguous()}
    return orient(tensors, states, refused)


def orient(tensors: dict[str, torch.Tensor], states: torch.Tensor, refused: torch.Tensor) -> dict[str, torch.Tensor]:
    """``tensors`` with the direction negated if refused ``states`` score lower than answered ones on average."""
    scores = condition_scores(states, tensors)
    if float(scores[refused].mean()) < float(scores[~refused].mean()):
        tensors = {**tensors, "direction": -tensors["direction"]}
    return tensors


def budget_threshold(scores: torch.Tensor, refused: torch.Tensor, comparison: str, answered_fire: float) -> dict:
    """The threshold at which a gate comparing ``scores`` with ``comparison`` fires on at most ``answered_fire`` of
    the answered rows (the most permissive such one among their scores), with its recall, fire rate and AUC."""
    signed = scores if comparison == ">" else -scores  # fire when signed > t
    answered = signed[~refused].sort().values
    allowed = int(answered_fire * len(answered))  # answered rows the gate may fire on
    t = float(answered[len(answered) - allowed - 1])
    return {
        "threshold": t if comparison == ">" else -t,
        "recall": float((signed[refused] > t).float().mean()),
        "fire": float((signed[~refused] > t).float().mean()),
        "auc": auc(signed[~refused], signed[refused]),
    }


def search_prefill(
    states: dict[str, dict[int, torch.Tensor]],
    refused: torch.Tensor,
    answered_fire: float = DEFAULT_ANSWERED_FIRE,
    *,
    comparisons: tuple[str, ...] = PREFILL_COMPARISONS,
    seed: int = 0,
) -> tuple[PrefillFit, dict | None]:
    """Fit and choose a prefill gate from pooled prompt states ``{pooling: {layer: [n, d]}}`` and own refusals.

    Returns the fit report and the gate dict (with its ``direction`` and ``mean`` tensors), or None when no gate
    should be added (``PrefillFit.reason`` says why). See the module docstring for the objective.
    """
    if not 0.0 <= answered_fire < 1.0:
        raise ValueError(f"answered_fire must be in [0, 1), got {answered_fire!r}.")
    refused = refused.bool()
    poolings = sorted(states)
    layers = sorted({layer for by_layer in states.values() for layer in by_layer})
    fit = PrefillFit(
        queries=len(refused),
        refused=int(refused.sum()),
        layers_tried=layers,
        poolings_tried=poolings,
        comparisons_tried=list(comparisons),
        answered_fire_budget=answered_fire,
        objective=(
            "max held-out refused-recall s.t. held-out answered-fire <= "
            f"{answered_fire:g}; ties: higher held-out AUC, lower answered-fire, shallower layer"
        ),
        rule=f"fires on at most {answered_fire:.0%} of the held-out answered",
    )
    if min(fit.refused, fit.queries - fit.refused) < PREFILL_MIN_PER_SIDE:
        fit.reason = (
            f"the model refused {fit.refused} of {fit.queries} build queries; a prefill gate needs at least "
            f"{PREFILL_MIN_PER_SIDE} refused and {PREFILL_MIN_PER_SIDE} answered (to fit and to hold out; add "
            "queries it refuses, or ones it answers)"
        )
        return fit, None
    fit_idx, held_idx = held_out_split(refused)
    fit_refused, held_refused = refused[fit_idx], refused[held_idx]
    fit.split = {
        "every": HELD_OUT_EVERY,
        "fit": {"refused": int(fit_refused.sum()), "answered": int((~fit_refused).sum())},
        "held_out": {"refused": int(held_refused.sum()), "answered": int((~held_refused).sum())},
    }
    best, best_key, fitted = None, None, {}
    for pooling in poolings:
        for layer in sorted(states[pooling]):
            x = states[pooling][layer].float()
            tensors = condition_direction(x[fit_idx], fit_refused)
            fitted[(pooling, layer)] = tensors
            held_scores = condition_scores(x[held_idx], tensors)
            for comparison in comparisons:
                row = {"layer": layer, "pooling": pooling, "comparison": comparison}
                row.update(budget_threshold(held_scores, held_refused, comparison, answered_fire))
                fit.grid.append({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
                key = (row["recall"], row["auc"], -row["fire"], -layer)
                if best_key is None or key > best_key:
                    best, best_key = row, key
    tensors = fitted[(best["pooling"], best["layer"])]
    fit.layer, fit.pooling, fit.comparison = best["layer"], best["pooling"], best["comparison"]
    fit.threshold, fit.auc = best["threshold"], best["auc"]
    fit.fires_refused, fit.fires_answered = best["recall"], best["fire"]
    gate = {
        "kind": "prefill",
        "layer": fit.layer,
        "pooling": fit.pooling,
        "comparison": fit.comparison,
        "threshold": fit.threshold,
    }
    chosen = states[fit.pooling][fit.layer].float()
    fires = prefill_fires(gate, condition_scores(chosen[fit_idx], tensors))
    fit.fit_fires_refused = float(fires[fit_refused].float().mean())
    fit.fit_fires_answered = float(fires[~fit_refused].float().mean())
    fit.random = random_reference(
        chosen, fit_idx, held_idx, refused, tensors["mean"], fit.comparison, answered_fire, seed
    )
    if fit.auc < MIN_AUC or fit.fires_refused <= fit.random["recall_mean"]:
        fit.reason = (
            f"no layer's prompt states separate the model's own refusals on the held-out split (best: layer "
            f"{fit.layer}, {fit.pooling} pooling, AUC {fit.auc:.2f}, recall {fit.fires_refused:.0%} at the "
            f"{answered_fire:.0%} answered-fire budget, random directions {fit.random['recall_mean']:.0%}; need AUC "
            f"{MIN_AUC} and more recall than random)"
        )
        return fit, None
    fit.added = True
    return fit, {**gate, **tensors}


def random_reference(
    states, fit_idx, held_idx, refused, mean, comparison: str, answered_fire: float, seed: int = 0
) -> dict:
    """What random unit directions at the same layer, pooling, centring and budget give on the held-out split."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(RANDOM_SEEDS):
        v = torch.randn(states.shape[1], generator=generator)
        tensors = orient({"direction": v / v.norm(), "mean": mean}, states[fit_idx], refused[fit_idx])
        scores = condition_scores(states[held_idx], tensors)
        rows.append(budget_threshold(scores, refused[held_idx], comparison, answered_fire))
    return {
        "directions": RANDOM_SEEDS,
        "seed": seed,
        "recall_mean": sum(r["recall"] for r in rows) / len(rows),
        "recall_max": max(r["recall"] for r in rows),
        "fire_mean": sum(r["fire"] for r in rows) / len(rows),
        "auc_mean": sum(r["auc"] for r in rows) / len(rows),
    }


def prompt_states_of(aligned, tokenizer, texts: list[str], layers, poolings, batch_size: int = 16) -> dict:
    """``{pooling: {layer: [n, d]}}``: the unedited prompt states a prefill gate reads (``prompt_states``), batched."""
    out: dict[str, dict[int, list]] = {p: {layer: [] for layer in layers} for p in poolings}
    for start in range(0, len(texts), batch_size):
        enc = encode_texts(tokenizer, texts[start : start + batch_size])
        enc = {k: v.to(aligned.base.device) for k, v in enc.items()}
        for pooling in poolings:
            found = aligned.prompt_states(enc["input_ids"], enc["attention_mask"], layers=layers, pooling=pooling)
            for layer in layers:
                out[pooling][layer].append(found[layer])
    return {p: {layer: torch.cat(v) for layer, v in by_layer.items()} for p, by_layer in out.items()}


def fit_prefill_gate(
    aligned,
    tokenizer,
    name: str,
    queries: list[str],
    *,
    max_queries: int = 64,
    answered_fire: float | None = DEFAULT_ANSWERED_FIRE,
    batch_size: int = 16,
    tokens: int = GATE_TOKENS,
    layers=None,
    poolings=PREFILL_POOLINGS,
    seed: int = 0,
) -> PrefillFit:
    """Fit a prefill gate on axis ``name`` from the model's own refusals of its build queries (module docstring).

    Stored on the axis when it separates them on the held-out split; otherwise the axis stays ungated and
    ``PrefillFit.reason`` says why. ``answered_fire=None`` (Youden's J for the self-judged gate) takes the default
    budget: the search needs one. ``layers``: the layers tried (default: every layer).
    """
    queries = spread(list(queries), max_queries)
    texts, refused = own_refusals(aligned, tokenizer, queries, batch_size=batch_size, tokens=tokens)
    if layers is None:
        layers = range(aligned.config.base_fingerprint["num_hidden_layers"])
    layers = [int(layer) for layer in layers]
    states = prompt_states_of(aligned, tokenizer, texts, layers, poolings, batch_size)
    budget = DEFAULT_ANSWERED_FIRE if answered_fire is None else answered_fire
    fit, gate = search_prefill(states, refused, budget, seed=seed)
    if gate is not None:
        aligned.set_gate(name, gate)
    return fit
