"""Steering axes as keyword pairs: the paper's presets and custom ``name=positive,negative`` axes."""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.constants import AXIS_NAME, AXIS_NAME_RULE

BEHAVIOURS = (None, "refusal", "sentiment")  # what alignez_hf.builder.orientation can measure without labels


@dataclass(frozen=True)
class Axis:
    """One steering axis: a name, the keyword pair (positive, negative) that defines it, and optionally the
    observable behaviour its positive pole should raise (``"refusal"`` or ``"sentiment"``), which the builder uses
    to check, and if need be flip, the axis's sign on the model's own build queries."""

    name: str
    positive: str
    negative: str
    behaviour: str | None = None

    def __post_init__(self) -> None:
        if not AXIS_NAME.match(self.name or ""):
            raise ValueError(f"Axis names use {AXIS_NAME_RULE}; got {self.name!r}.")
        if not self.positive.strip() or not self.negative.strip():
            raise ValueError(
                f"Axis {self.name!r} needs two non-empty keywords, got {self.positive!r}, {self.negative!r}."
            )
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(
                f"Axis {self.name!r}: behaviour must be one of {', '.join(map(repr, BEHAVIOURS))}, "
                f"got {self.behaviour!r}."
            )
        if self.positive.strip().lower() == self.negative.strip().lower():
            raise ValueError(f"Axis {self.name!r}: the two keywords are the same ({self.positive!r}).")


# The paper's three axes, and two style axes whose effect is easy to see on small models.
PRESETS: dict[str, Axis] = {
    "helpful": Axis("helpful", "helpful", "useless"),
    "harmless": Axis("harmless", "safety-first", "malicious", behaviour="refusal"),
    "humor": Axis("humor", "humorous", "dull and boring"),
    "cheerful": Axis("cheerful", "cheerful", "gloomy", behaviour="sentiment"),
    "simple": Axis("simple", "simple", "technical"),
}


def parse_axis(spec: str | Axis) -> Axis:
    """Turn a preset name (``harmless``) or ``name=positive,negative[@behaviour]`` into an :class:`Axis`."""
    if isinstance(spec, Axis):
        return spec
    text = str(spec).strip()
    if "=" not in text:
        if text in PRESETS:
            return PRESETS[text]
        raise ValueError(
            f"Unknown axis {text!r}. Use a preset ({', '.join(PRESETS)}) or a keyword pair such as "
            "'cheerful=cheerful,gloomy'."
        )
    name, _, pair = text.partition("=")
    pair, _, behaviour = pair.partition("@")
    keywords = [k.strip() for k in pair.split(",")]
    if len(keywords) != 2:
        raise ValueError(
            f"Axis {text!r}: write the keyword pair as 'name=positive,negative' (exactly one comma), optionally "
            "followed by '@refusal' or '@sentiment' to check the sign against that behaviour."
        )
    return Axis(name.strip(), keywords[0], keywords[1], behaviour=behaviour.strip() or None)
