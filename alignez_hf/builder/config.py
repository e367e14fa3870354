"""Build options, defined once: ``AlignEZBuilder`` takes its defaults from here and ``alignez build`` is generated
from these fields (their ``help`` metadata becomes the command's help).

This module imports nothing but the standard library (no torch), so reading the defaults is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

DEFAULT_STRATEGY = "persona"
# The gate's default threshold rule: fire on at most this share of the build queries the model answered (issue 6:
# chosen on Qwen2.5-Coder-0.5B's tuning split over Youden's J and 0.2 / 0.1; benchmarks/qwen_gate.py).
DEFAULT_ANSWERED_FIRE = 0.3


GATE_KINDS = ("prefill", "self_judge")  # what --gate takes (and 'none')
_GATE_NAMES = {
    "prefill": "prefill",
    "self_judge": "self_judge",
    "self-judge": "self_judge",
    "none": False,
    "off": False,
}


def parse_gate(text: str) -> str | bool:
    """``--gate``: ``prefill``, ``self_judge`` or ``none`` (returned as False)."""
    value = _GATE_NAMES.get(text.strip().lower())
    if value is None:
        raise ValueError(f"expected one of {', '.join(GATE_KINDS)} or none; got {text!r}")
    return value


def gate_kind(value: bool | str | None) -> str | None:
    """The gate kind an option value asks for: True is ``prefill`` (it beat ``self_judge`` on fresh prompts,
    docs/evidence.md); False or None: no gate."""
    if value is True:
        return "prefill"
    if value is False or value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"gate must be one of {', '.join(GATE_KINDS)}, None or a bool; got {value!r}.")
    kind = parse_gate(value)
    return kind or None


def parse_share_or_youden(text: str) -> float | None:
    """``--gate-answered-fire``: a share such as 0.3, or ``youden`` (returned as None: Youden's J)."""
    if text.strip().lower() == "youden":
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a share such as 0.3, or 'youden'; got {text!r}") from None


def parse_threshold(text: str) -> float:
    """``--cos-threshold``: a cosine, or ``off`` (returned as infinity: every pair is kept)."""
    if text.strip().lower() in ("off", "none", "inf"):
        return float("inf")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a cosine such as 0.8, or 'off'; got {text!r}") from None


@dataclass(frozen=True)
class BuildConfig:
    """Everything that tunes a build. Fields left at None take the strategy's own value."""

    strategy: str = field(
        default=DEFAULT_STRATEGY,
        metadata={
            "help": "Build strategy: persona (persona system messages, read at the prompt), persona_answers "
            "(the same contrast read from the model's answers) or paper (METHOD.md's two-step recipe)."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Prompts per generation batch."})
    seed: int = field(default=0, metadata={"help": "Random seed of self-generation and the checks."})
    do_sample: bool = field(
        default=True,
        metadata={
            "help": "Sample the self-generated answers.",
            "flag": "sample",
            "negative_flag": "greedy",
            "negative_help": "Greedy self-generation instead of sampling.",
        },
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of self-generation."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling (top-p) of self-generation."})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "New tokens per self-generated answer.", "unset": "the strategy's"}
    )
    characteristics_tokens: int | None = field(
        default=None, metadata={"help": "New tokens for the paper's step A.", "unset": "the strategy's"}
    )
    layer_band: tuple[float, float] | None = field(
        default=None,
        metadata={
            "help": "Edited layers as fractions of depth, e.g. 0.33,0.67.",
            "unset": "the strategy's",
            "metavar": "LO,HI",
        },
    )
    scale_fraction: float | None = field(
        default=None,
        metadata={
            "help": "Push per unit strength as a fraction of the layer's typical norm.",
            "unset": "the strategy's",
        },
    )
    cos_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Drop contrast pairs whose cosine is above this; 'off' keeps every pair.",
            "unset": "the strategy's: 0.8 for paper, off for the persona strategies",
            "parse": parse_threshold,
        },
    )
    energy: float | None = field(
        default=None, metadata={"help": "Energy the SVD rule keeps.", "unset": "the strategy's"}
    )
    max_rank: int | None = field(
        default=None, metadata={"help": "Cap on directions per layer.", "unset": "the strategy's"}
    )
    n_directions: int | None = field(
        default=None, metadata={"help": "A fixed number of directions per layer.", "unset": "the SVD energy rule"}
    )
    max_query_tokens: int | None = field(
        default=None,
        metadata={"help": "Truncate queries to this many tokens.", "unset": "what fits the model's context"},
    )
    check_queries: int = field(
        default=4, metadata={"help": "Build queries of the self-check (log-likelihood margin shift); 0 skips it."}
    )
    orient: bool = field(
        default=True,
        metadata={
            "help": "Check, and if need be flip, the sign of axes that name a behaviour (harmless, cheerful, "
            "name=a,b@refusal) on the model's own build queries."
        },
    )
    orient_queries: int = field(default=16, metadata={"help": "Build queries of the sign check; 0 skips it."})
    orient_strength: float = field(default=2.0, metadata={"help": "Strength (+ and -) at which the sign is checked."})
    gate: bool | str = field(
        default=False,
        metadata={
            "help": "Gate refusal axes (harmless, name=a,b@refusal) so they steer only prompts like those the model "
            "itself refuses: 'prefill' reads the condition from the prompt's hidden states in the pass the model "
            "runs anyway (a direction and threshold fitted on its own refusals of the build queries), 'self_judge' "
            "asks the model its own 0-9 harm rating first (one extra pass per call), 'none'. --gate alone: "
            "prefill (it kept more of the harmful-refusal gain on fresh prompts, docs/evidence.md).",
            "parse": parse_gate,
            "nargs": "?",
            "const": True,
            "metavar": "KIND",
        },
    )
    gate_queries: int = field(
        default=64, metadata={"help": "With --gate: build queries the model rates and answers (spread)."}
    )
    gate_answered_fire: float | None = field(
        default=DEFAULT_ANSWERED_FIRE,
        metadata={
            "help": "With --gate: the gate fires on at most this share of the build queries the model answered; "
            "'youden' takes the threshold that best separates its refusals from its answers instead (self_judge; "
            "the prefill gate's search keeps the default budget).",
            "parse": parse_share_or_youden,
        },
    )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of every build option."""
        return tuple(f.name for f in fields(cls))

    def replace(self, **options) -> BuildConfig:
        """A copy with some options changed; an unknown option is a TypeError that lists the valid ones."""
        unknown = sorted(set(options) - set(self.field_names()))
        if unknown:
            raise TypeError(
                f"Unknown build option(s) {', '.join(map(repr, unknown))}; valid ones: {', '.join(self.field_names())}."
            )
        return replace(self, **options)
