"""The texts the builder shows the model: the paper's two-step prompts and persona system messages.

They reach the model through ``alignez_hf.chat.chat_prompt``, the one chat format of the package.
"""

from __future__ import annotations

from .axes import Axis

# METHOD.md section 1, word for word.
CHARACTERISTICS = {
    "positive": "{q}\nYou are a {kw} assistant. Your answer to this query should: ",
    "negative": "{q}\nPretend you are a {kw} assistant. Your response to this query should: ",
}
CONDITIONED = {
    "positive": "You are a {kw} assistant. Your answer should {chars}.\n{q}",
    "negative": "Pretend you are a {kw} assistant. Your answer should {chars}.\n{q}",
}
FALLBACK_CHARACTERISTICS = "be {kw}"
PERSONA_SYSTEM = "You are an extremely {kw} assistant."


def characteristics_prompt(axis: Axis, side: str, query: str) -> str:
    """Step A of the paper: ask the model what a good (or bad) answer to ``query`` should do."""
    return CHARACTERISTICS[side].format(q=query, kw=keyword(axis, side))


def conditioned_prompt(axis: Axis, side: str, query: str, characteristics: str) -> str:
    """Step B of the paper: ask for an answer that has the characteristics found in step A."""
    chars = clean_characteristics(characteristics) or FALLBACK_CHARACTERISTICS.format(kw=keyword(axis, side))
    return CONDITIONED[side].format(q=query, kw=keyword(axis, side), chars=chars)


def persona_system(axis: Axis, side: str) -> str:
    """The persona system message of one side of an axis."""
    return PERSONA_SYSTEM.format(kw=keyword(axis, side))


def keyword(axis: Axis, side: str) -> str:
    """The keyword of ``side`` (``positive`` or ``negative``)."""
    return axis.positive if side == "positive" else axis.negative


def clean_characteristics(text: str) -> str:
    """Make step A's output fit inside step B's sentence: one line, no trailing full stop."""
    text = " ".join(text.split())
    return text.rstrip(" .")
