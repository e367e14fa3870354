"""Evaluation of steering packs: prompt sets, model-free scorers, intervals, the harness and its reports.

The runtime never imports this package.
"""

from .harness import (
    DEFAULT_STRENGTHS,
    Generation,
    Setting,
    evaluate,
    generate_answers,
    steering_kl,
)
from .metrics import bootstrap_mean_interval, mean_summary, rate_summary, sequence_nll, wilson_interval
from .prompts import PROMPT_SETS, advbench_split, advbench_split_indices, load_advbench, load_prompt_set
from .report import attach_evaluation, evaluation_summary, write_results, write_sweep
from .scorers import is_refusal, readability, refusal_agreement, sentiment, word_count
from .sweep import sweep_2d

__all__ = [
    "DEFAULT_STRENGTHS",
    "PROMPT_SETS",
    "Generation",
    "Setting",
    "advbench_split",
    "advbench_split_indices",
    "attach_evaluation",
    "bootstrap_mean_interval",
    "evaluate",
    "evaluation_summary",
    "generate_answers",
    "is_refusal",
    "load_advbench",
    "load_prompt_set",
    "mean_summary",
    "rate_summary",
    "readability",
    "refusal_agreement",
    "sentiment",
    "sequence_nll",
    "steering_kl",
    "sweep_2d",
    "wilson_interval",
    "word_count",
    "write_results",
    "write_sweep",
]
