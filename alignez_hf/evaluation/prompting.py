"""The prompting baseline: an axis's own persona words as a system message, the first thing a user would try.

``prompt_conditions`` lists, for one axis, the conditions ``evaluate(..., prompting=True)`` adds: ``prompt`` (the
persona system message of one pole, the pack off; strength +1 / -1 says which pole) and ``prompt+axis`` (the
message and the pack at each strength). The words are those the pack was built from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def persona_messages(model, axis: str) -> tuple[str, str]:
    """The (positive, negative) persona system messages of ``axis``: the builder's record, else from its poles."""
    view = model.axes[axis]
    messages = view.metadata.get("persona_system")
    if messages:
        return messages[0], messages[1]
    if not (view.positive and view.negative):
        raise ValueError(
            f"Axis {axis!r} names no persona words (positive/negative), so it has no prompting baseline; "
            "evaluate it with prompting=False (without --prompting)."
        )
    from ..builder.axes import Axis
    from ..builder.prompts import persona_system

    pole = Axis(axis, view.positive, view.negative)
    return persona_system(pole, "positive"), persona_system(pole, "negative")


def prompt_conditions(
    model, axis: str, steered: Sequence[float], user_system: str | None = None
) -> list[tuple[str, str | None, float, str]]:
    """``(condition, axis or None, strength, system message)`` of the prompting baseline of ``axis``.

    With ``user_system`` (the user's own system message) the persona words come first, the user's message after.
    """
    positive, negative = persona_messages(model, axis)
    by_sign = {1.0: positive, -1.0: negative}
    if user_system:
        by_sign = {sign: f"{words}\n\n{user_system}" for sign, words in by_sign.items()}
    signs = sorted({math.copysign(1.0, s) for s in steered})
    out = [("prompt", None, sign, by_sign[sign]) for sign in signs]
    return out + [("prompt+axis", axis, s, by_sign[math.copysign(1.0, s)]) for s in steered]
