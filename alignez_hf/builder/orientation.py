"""Check an axis's sign against the behaviour it names, on the model's own build queries (no labels).

A persona contrast takes its sign from the keyword order, but a small model may read the persona words rather
than play the role: on Qwen2.5-Coder-0.5B-Instruct the step from the "malicious" to the "safety-first" system
prompt LOWERS refusal (the word "malicious" reads as a harm cue; issue 6). For an axis whose positive pole should
raise something the builder can observe without labels (``refusal``: a keyword detector; ``sentiment``: VADER),
greedy answers to a few build queries at ``+strength`` and ``-strength`` decide the sign, and the builder flips
an axis that points the wrong way.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..chat import chat_prompt
from .generation import SamplingSettings, generate_texts

ORIENT_TOKENS = 24  # a refusal or a tone shows in the opening of an answer


@dataclass
class Orientation:
    """Mean behaviour score of greedy answers to ``queries`` build queries at -strength, 0 and +strength."""

    behaviour: str
    queries: int
    strength: float
    minus: float
    base: float
    plus: float
    flipped: bool = False

    @property
    def min_gap(self) -> float:
        """The smallest difference between the signs taken as evidence: two queries' refusals, or 0.1 VADER."""
        return 2.0 / max(self.queries, 1) if self.behaviour == "refusal" else 0.1

    @property
    def decided(self) -> bool:
        """Whether the two signs differ clearly (otherwise the keyword order stands, unverified)."""
        return abs(self.plus - self.minus) >= self.min_gap - 1e-9

    @property
    def points_backwards(self) -> bool:
        """Whether the axis, as built, clearly lowers the behaviour it should raise."""
        return self.decided and self.plus < self.minus

    def as_dict(self) -> dict:
        return {**asdict(self), "decided": self.decided}

    def measured(self) -> str:
        """What was measured, in words (the scores are those of the axis as built, before any flip)."""
        what = {"refusal": "refusal rate", "sentiment": "mean VADER sentiment"}[self.behaviour]
        return (
            f"{what} of greedy answers to {self.queries} build queries: {self.minus:.2f} at -{self.strength:g}, "
            f"{self.base:.2f} unsteered, {self.plus:.2f} at +{self.strength:g}"
        )


def behaviour_scorer(behaviour: str) -> Callable[[str], float] | None:
    """The label-free scorer of a behaviour, or ``None`` when its library is not installed."""
    if behaviour == "refusal":
        from ..evaluation.scorers import refusal_score

        return refusal_score
    if behaviour == "sentiment":
        if importlib.util.find_spec("vaderSentiment") is None:
            return None
        from ..evaluation.scorers import sentiment

        return sentiment
    raise ValueError(f"Unknown behaviour {behaviour!r}; known: refusal, sentiment.")


def spread(items: list, n: int) -> list:
    """``n`` items evenly spaced over ``items`` (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    step = (len(items) - 1) / max(n - 1, 1)
    return [items[round(i * step)] for i in range(n)]


def measure_orientation(
    aligned,
    tokenizer,
    name: str,
    behaviour: str,
    queries: list[str],
    strength: float = 2.0,
    batch_size: int = 16,
    tokens: int = ORIENT_TOKENS,
) -> Orientation | None:
    """Score greedy answers (no persona prompt) at -strength, 0 and +strength; ``None`` if unscorable."""
    scorer = behaviour_scorer(behaviour)
    if scorer is None or not queries:
        return None
    others = dict.fromkeys(aligned.axes, 0.0)
    texts = [chat_prompt(tokenizer, q) for q in queries]
    greedy = SamplingSettings(do_sample=False)
    means = []
    for s in (-strength, 0.0, strength):
        answers = generate_texts(aligned, tokenizer, texts, tokens, greedy, batch_size, steering={**others, name: s})
        means.append(sum(map(scorer, answers)) / len(answers))
    return Orientation(behaviour, len(queries), strength, *means)


def flip_axis(aligned, name: str) -> None:
    """Reverse an axis in place: directions negated, so +strength now does what -strength did."""
    view, tensors = aligned.axes[name], aligned.axis_tensors(name)
    stats = {k: (-v if k.startswith(("mean_pos_proj.", "mean_neg_proj.")) else v) for k, v in tensors["stats"].items()}
    aligned.add_axis(
        name,
        {layer: -d for layer, d in tensors["directions"].items()},
        rule=view.rule,
        strength=view.strength,
        scales=tensors["scales"],
        positive=view.positive,
        negative=view.negative,
        stats=stats,
        gate=view.gate,
        replace=True,
        **view.metadata,
    )
