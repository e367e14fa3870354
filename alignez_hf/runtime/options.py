"""Scoped steering options of a model: turn steering off, or override how a pack steers, for one block.

Nothing here changes the pack: overrides live on a stack for the duration of a ``with`` block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from .configuration_alignez import check_option
from .constants import EDIT_RULES, OPTION_FIELDS


class SteeringOptions:
    """Mixed into AlignEZForCausalLM; needs ``config``, ``_registry``, ``_disabled`` and ``_overrides``."""

    @contextlib.contextmanager
    def steering_disabled(self) -> Iterator[None]:
        """Run the unedited base model inside this block."""
        previous, self._disabled = self._disabled, True
        try:
            yield
        finally:
            self._disabled = previous

    @contextlib.contextmanager
    def steering_options(self, *, rules: Mapping[str, str] | None = None, **options: Any) -> Iterator[None]:
        """Override how the pack steers inside this block, without changing the pack.

        ``options``: any of ``hook_point``, ``layer_policy``, ``top_n``, ``positions`` (``"all"`` edits every
        position, e.g. to score given text under steering) and ``composition``; ``rules`` maps axis names to another
        edit rule. Blocks nest; the innermost value wins.
        """
        for field, value in options.items():
            check_option(field, value)
        rules = dict(rules or {})
        for name, rule in rules.items():
            self._registry.entry(name)
            if rule not in EDIT_RULES:
                raise ValueError(f"Unknown edit rule {rule!r} for axis {name!r}; known rules: {', '.join(EDIT_RULES)}.")
        self._overrides.append({**options, "rules": rules})
        try:
            yield
        finally:
            self._overrides.pop()

    def steering_option(self, field: str) -> Any:
        """The value of a steering option now: the innermost ``steering_options`` override, else the pack's."""
        if field not in OPTION_FIELDS:
            raise ValueError(f"{field!r} is not a steering option; options: {', '.join(OPTION_FIELDS)}.")
        return next((o[field] for o in reversed(self._overrides) if field in o), getattr(self.config, field))

    def effective_rule(self, name: str) -> str:
        """The edit rule axis ``name`` uses now: a ``steering_options(rules=...)`` override, else its own."""
        return (
            next((o["rules"][name] for o in reversed(self._overrides) if name in o["rules"]), None)
            or (self._registry.entry(name)["rule"])
        )
