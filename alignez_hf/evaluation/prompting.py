"""The prompting baseline: an axis's own persona words as a system message, the first thing a user would try.

``prompt_conditions`` lists, for one axis, the conditions ``evaluate(..., prompting=True)`` adds: ``prompt`` (the
persona system message of one pole, the pack off; strength +1 / -1 says which pole) and ``prompt+axis`` (the
message and the pack at each strength). The words are those the pack was built from.

With ``dial``, ``prompt`` also runs at every rung of a wording-intensity ladder (``WORDINGS``): the prompt's dial,
next to the pack's strength. A rung is named by the strength its rows carry; rung 1 is the pack's own words, the
others are written from the axis's pole keywords. The rungs are ordinal: prompt rung 2 and pack strength 2 are not
the same amount of anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Rung -> system message; {kw} is a pole keyword, {a} its article. Rung 1 is the builder's persona words.
WORDINGS = {
    0.25: "You are a slightly {kw} assistant.",
    0.5: "You are {a} {kw} assistant.",
    1.0: None,
    2.0: "You are an extremely {kw} assistant. Be {kw} in every sentence of every answer, whatever anyone asks.",
}


def persona_messages(model, axis: str) -> tuple[str, str]:
    """The (positive, negative) persona system messages of ``axis``: the builder's record, else from its poles."""
    view = model.axes[axis]
    messages = view.metadata.get("persona_system")
    if messages:
        return messages[0], messages[1]
    positive, negative = _keywords(
        view, axis, "has no prompting baseline; evaluate it with prompting=False (without --prompting)"
    )
    from ..builder.axes import Axis
    from ..builder.prompts import persona_system

    pole = Axis(axis, positive, negative)
    return persona_system(pole, "positive"), persona_system(pole, "negative")


def wording(keyword: str, rung: float) -> str:
    """The system message of one rung of the wording dial for a pole keyword (not rung 1: that is the pack's own)."""
    template = WORDINGS.get(rung)
    if template is None:
        raise ValueError(f"The wording dial has rungs {sorted(k for k, v in WORDINGS.items() if v)} besides 1.")
    return template.format(kw=keyword, a="an" if keyword[:1].lower() in "aeiou" else "a")


def prompt_conditions(
    model, axis: str, steered: Sequence[float], user_system: str | None = None, dial: bool = False
) -> list[tuple[str, str | None, float, str]]:
    """``(condition, axis or None, strength, system message)`` of the prompting baseline of ``axis``.

    With ``user_system`` (the user's own system message) the persona words come first, the user's message after.
    With ``dial``, ``prompt`` runs at every rung of ``WORDINGS`` for each pole in ``steered``.
    """
    own = dict(zip((1.0, -1.0), persona_messages(model, axis)))
    signs = sorted({math.copysign(1.0, s) for s in steered})
    rungs = sorted(WORDINGS) if dial else [1.0]
    if dial:
        view = model.axes[axis]
        missing = "has no wording dial; evaluate it with prompt_dial=False (without --prompt-dial)"
        keywords = dict(zip((1.0, -1.0), _keywords(view, axis, missing)))

    def message(sign: float, rung: float) -> str:
        words = own[sign] if rung == 1.0 else wording(keywords[sign], rung)
        return f"{words}\n\n{user_system}" if user_system else words

    out = [("prompt", None, sign * rung, message(sign, rung)) for sign in signs for rung in rungs]
    return out + [("prompt+axis", axis, s, message(math.copysign(1.0, s), 1.0)) for s in steered]


def _keywords(view, axis: str, consequence: str) -> tuple[str, str]:
    if not (view.positive and view.negative):
        raise ValueError(f"Axis {axis!r} names no persona words (positive/negative), so it {consequence}.")
    return view.positive, view.negative
