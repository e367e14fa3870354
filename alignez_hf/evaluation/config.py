"""Evaluation options, defined once: ``alignez eval`` is generated from these fields. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_STRENGTHS = (0.0, 0.5, 1.0, 2.0, 4.0)
DEFAULT_PROMPT_SETS = ("neutral",)


@dataclass(frozen=True)
class EvalConfig:
    """How a pack is measured against its base model (see ``alignez_hf.evaluation.evaluate``)."""

    strengths: list[float] = field(
        default_factory=lambda: list(DEFAULT_STRENGTHS),
        metadata={"help": "Comma-separated strengths; 0 (the base model) is always included.", "metavar": "S,S,..."},
    )
    prompt_sets: list[str] = field(
        default_factory=lambda: list(DEFAULT_PROMPT_SETS),
        metadata={
            "help": "Comma-separated prompt sets (neutral, ordinary, edgy, harmful, ...; see "
            "alignez_hf.evaluation.PROMPT_SETS) or paths to text files, one prompt a line.",
            "flag": "prompts",
            "metavar": "SET,SET,...",
        },
    )
    limit: int = field(default=20, metadata={"help": "Prompts per set."})
    max_new_tokens: int = field(default=48, metadata={"help": "Greedy tokens per answer."})
    batch_size: int = field(default=8, metadata={"help": "Rows per generate call."})
    seed: int = field(default=0, metadata={"help": "Seed of the random control and the bootstrap."})
    random_control: bool = field(default=True, metadata={"help": "Also run a random-direction axis of the same size."})
    prompting: bool = field(
        default=False,
        metadata={
            "help": "Also run the prompting baseline: the axis's persona words as a system message, alone and with "
            "the pack (conditions prompt and prompt+axis)."
        },
    )
    prompt_dial: bool = field(
        default=False,
        metadata={
            "help": "With --prompting: also run the prompt at every rung of a wording-intensity ladder (strengths "
            "0.25 slightly, 0.5 plain, 1 the pack's own words, 2 insistent), the prompt's dial next to the pack's."
        },
    )
    system: str | None = field(
        default=None,
        metadata={
            "help": "The user's own system message, given with every prompt (after the persona words in the "
            "prompting conditions): how much of its effect does each method keep under it?"
        },
    )
    kl: bool = field(default=True, metadata={"help": "Measure the next-token KL to the base on neutral text."})
    plots: bool = field(default=True, metadata={"help": "Write metric plots (PNG) next to results.md."})
