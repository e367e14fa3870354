"""EvalConfig: the options of ``alignez eval``, with the same defaults as ``evaluate()``."""

from __future__ import annotations

import inspect
from dataclasses import asdict

from alignez_hf.evaluation import DEFAULT_STRENGTHS, evaluate
from alignez_hf.evaluation.config import EvalConfig


def test_defaults_match_evaluate():
    params = inspect.signature(evaluate).parameters
    for name, value in asdict(EvalConfig()).items():
        default = params[name].default
        assert (list(default) if isinstance(default, tuple) else default) == value, name


def test_defaults_are_fresh_lists():
    first, second = EvalConfig(), EvalConfig()
    first.strengths.append(9.0)
    assert second.strengths == list(DEFAULT_STRENGTHS) and second.prompt_sets == ["neutral"]
