"""The README.md model card of a steering pack, rendered from ``model_cards/steering_pack.md``.

The card shows the axes, the build metadata (self-check, sign check, gate), any evaluation rows, and how to load
the pack; a README.md the user wrote is never overwritten by accident.
"""

from __future__ import annotations

import logging
import math
import os
import re
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import yaml
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from huggingface_hub.utils import validate_repo_id
from transformers import PretrainedConfig

from ..runtime.constants import AXIS_NAME
from .base import base_hub_id, embedded_by_hub_id

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
CARD_TEMPLATE = "steering_pack.md"
# A card holding this text was written by us and may be rewritten; any other README.md is the user's own.
CARD_MARKER = "Written by alignez-hf"
CARD_TAGS = ["alignez", "steering", "representation-editing"]
# A README.md larger than this is not read (real cards hold kilobytes); pushing replaces it with a generated card.
MAX_CARD_BYTES = 4 * 2**20
# Markdown that pack text could use to end a table cell, open a link or an image, start HTML or a code span.
MARKDOWN = re.compile(r"([\\|<>\[\]`])")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # control characters (NEL among them) are not text


def _config_dict(model_or_config: Any) -> dict[str, Any]:
    if isinstance(model_or_config, dict):
        return model_or_config
    config = getattr(model_or_config, "config", model_or_config)
    if isinstance(config, PretrainedConfig):
        return config.to_dict()
    raise TypeError(f"Expected an AlignEZForCausalLM, an AlignEZConfig or a config dict, got {type(config).__name__}.")


def _one_line(value: Any) -> str:
    """``value`` as one line of text: every run of whitespace or control characters (line breaks of any kind too)
    becomes one space."""
    text = " ".join(CONTROL.sub(" ", str(value)).split())
    return text.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate would not save as UTF-8


def _inline(value: Any) -> str:
    """Text from a pack as inert markdown inside a line: one line, with the characters that could end a table cell,
    open a link or image, start HTML or a code span escaped. A pack's config is data, never markup."""
    return MARKDOWN.sub(r"\\\1", _one_line(value))


def _code(value: Any) -> str:
    """Text from a pack for inside a `code span`: one line, no backticks (which would end the span), pipes escaped
    (in a table a pipe ends the cell even inside a code span)."""
    return _one_line(value).replace("`", "'").replace("|", "\\|")


def _num(value: Any, spec: str) -> str:
    """A number formatted with ``spec``; anything else (a hand-edited config) as inert text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return _fmt(value)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{_inline(k)}: {_fmt(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) or "none"
    return _inline(value)


def _axes_section(config: dict[str, Any]) -> str:
    axes = config.get("axes") or []
    if not axes:
        return "This pack has no axes."
    lines = [
        "| axis | keywords (+ / −) | edit rule | default strength | layers | rank per layer |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for axis in axes:
        keywords = f"{_fmt(axis.get('positive') or '?')} / {_fmt(axis.get('negative') or '?')}"
        rank = axis.get("rank") or {}
        lines.append(
            f"| `{_code(axis['name'])}` | {keywords} | {_fmt(axis.get('rule'))} | {_fmt(axis.get('strength'))} | "
            f"{_fmt(axis.get('layers'))} | {_fmt(rank)} |"
        )
    lines += [
        "",
        f"Edits apply at the `{_code(config.get('hook_point', 'residual'))}` output of each listed layer, at "
        f"`{_code(config.get('positions', 'last'))}` positions, with the "
        f"`{_code(config.get('layer_policy', 'static'))}` layer policy and "
        f"`{_code(config.get('composition', 'sequential'))}` composition of several axes.",
    ]
    return "\n".join(lines)


def _build_section(config: dict[str, Any]) -> str:
    parts = []
    for axis in config.get("axes") or []:
        build = axis.get("build") or {}
        facts = []
        if axis.get("strategy"):
            facts.append(f"strategy `{_code(axis['strategy'])}`")
        for key, label in (("queries", "queries"), ("pairs_generated", "persona pairs generated")):
            if build.get(key) is not None:
                facts.append(f"{_fmt(build[key])} {label}")
        if build.get("pairs_kept"):
            facts.append(f"pairs kept per layer: {_fmt(build['pairs_kept'])}")
        if build.get("rank"):
            facts.append(f"rank per layer: {_fmt(build['rank'])}")
        if build.get("separation"):
            facts.append(f"pair separation per layer (0.5 = chance): {_fmt(build['separation'])}")
        quality = build.get("quality")
        if quality:
            verdict = "moves the model" if quality.get("effective") else "did NOT clearly move the model"
            facts.append(
                f"self-check: the axis {verdict} (log-likelihood margin shift {_fmt(quality.get('shift'))} nats at "
                f"+strength, {_fmt(quality.get('reverse_shift'))} at −strength, random directions "
                f"{_fmt(quality.get('random_shift'))})"
            )
        sign = build.get("orientation")
        if sign:
            outcome = (
                "the axis was FLIPPED (as built, +strength lowered it)"
                if sign.get("flipped")
                else "the keyword order was kept"
                if sign.get("decided")
                else "no clear difference, so the sign is unverified"
            )
            facts.append(
                f"sign check against {_fmt(sign.get('behaviour'))} on {_fmt(sign.get('queries'))} build queries: "
                f"{_fmt(sign.get('minus'))} / {_fmt(sign.get('base'))} / {_fmt(sign.get('plus'))} at "
                f"−{_num(sign.get('strength'), 'g')} / 0 / +{_num(sign.get('strength'), 'g')} as built; {outcome}"
            )
        gate = build.get("gate")
        if gate and gate.get("added") and gate.get("kind") == "prefill":
            facts.append(
                f"prefill harm gate: the axis steers only prompts whose layer-{_fmt(gate.get('layer'))} state "
                f"({_fmt(gate.get('pooling'))} pooling) scores {_fmt(gate.get('comparison'))} "
                f"{_num(gate.get('threshold'), '.3f')} along a direction fitted on the model's own refusals of "
                f"{_fmt(gate.get('queries'))} build queries ({_fmt(gate.get('refused'))} refused); on held-out build "
                f"queries it fires on {_num(gate.get('fires_refused'), '.0%')} of the refused and "
                f"{_num(gate.get('fires_answered'), '.0%')} of the answered (AUC {_num(gate.get('auc'), '.2f')})"
            )
        elif gate and gate.get("added"):
            facts.append(
                f"harm gate: the axis steers only prompts the model itself rates above "
                f"{_num(gate.get('threshold'), '.2f')} on a 0-9 harm scale (threshold placed on its own refusals of "
                f"{_fmt(gate.get('queries'))} build queries, {_fmt(gate.get('refused'))} refused; AUC "
                f"{_num(gate.get('auc'), '.2f')}; fires on {_num(gate.get('fires_refused'), '.0%')} of the refused "
                f"and {_num(gate.get('fires_answered'), '.0%')} of the answered)"
            )
        for other, cosine in (build.get("subspace_cosine_mean") or {}).items():
            if cosine is not None:
                facts.append(
                    f"subspace cosine with `{_code(other)}`: {_num(cosine, '.2f')} (0 = independent axes, 1 = the same)"
                )
        for warning in build.get("warnings") or []:
            facts.append(f"warning: {_fmt(warning)}")
        if facts:
            parts.append(f"- **{_inline(axis['name'])}**: " + "; ".join(facts) + ".")
    if not parts:
        return "This pack carries no build metadata (it was made by hand or with an older version)."
    return "\n".join(parts)


def _evaluation_section(config: dict[str, Any]) -> str:
    evaluation = config.get("evaluation")
    if not evaluation:
        return "No evaluation results ship with this pack (`alignez eval` adds them)."
    rows = evaluation.get("rows") or []
    fixed = ("setting", "prompt_set", "condition", "strength", "n")
    metrics = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in fixed]
    lines = []
    if rows:
        header = (*fixed, *map(_inline, metrics))
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for row in rows:
            cells = [_fmt(row.get(k)) for k in fixed]
            for key in metrics:
                value = row.get(key)
                # Metrics are stored as [value, low, high]: a value and its confidence interval.
                if isinstance(value, (list, tuple)) and len(value) == 3 and value[0] is not None:
                    cells.append(f"{_fmt(value[0])} [{_fmt(value[1])}, {_fmt(value[2])}]")
                else:
                    cells.append(_fmt(value))
            lines.append("| " + " | ".join(cells) + " |")
    details = {k: v for k, v in evaluation.items() if k not in ("rows", "settings") and v not in (None, [], {})}
    if details:
        lines += ["", *(f"- {_inline(str(k).replace('_', ' '))}: {_fmt(v)}" for k, v in details.items())]
    return "\n".join(lines) or "The evaluation summary is empty."


def render_model_card(
    model_or_config: Any,
    *,
    repo_id: str | None = None,
    base_model_id: str | None = None,
    base_model_revision: str | None = None,
    license: str | None = None,
) -> ModelCard:
    """Render the README.md model card of a pack from the ``model_cards/steering_pack.md`` template."""
    config = _config_dict(model_or_config)
    base_id = _repo_id(base_model_id or base_hub_id(config.get("base_model_name_or_path")))
    revision = base_model_revision or (config.get("base_model_revision") if base_id else None)
    embedded = embedded_by_hub_id(base_id)
    license = license or (embedded.license if embedded else None)
    # A base that carries a PEFT adapter: base_model stays the base, base_adapter names the adapter on top of it.
    adapter_id = _repo_id(config.get("base_adapter_name_or_path"))
    card_data = ModelCardData(
        base_model=base_id,
        base_adapter=adapter_id,
        library_name="transformers",
        pipeline_tag="text-generation",
        license=license,
        tags=list(CARD_TAGS),
    )
    axes = config.get("axes")
    axes = [a for a in axes if isinstance(a, dict)] if isinstance(axes, list) else []
    first = axes[0] if axes and isinstance(axes[0].get("name"), str) and AXIS_NAME.match(axes[0]["name"]) else None
    base_label = _inline(base_id or config.get("base_model_name_or_path") or "its base model")
    template = Template(resources.files("alignez_hf.model_cards").joinpath(CARD_TEMPLATE).read_text("utf-8"))
    text = template.substitute(
        card_data=front_matter(card_data),
        title=_inline(repo_id.split("/")[-1]) if repo_id else "AlignEZ steering pack",
        repo_id=repo_id or "path/to/this/pack",
        base_model=base_label,
        base_model_url=f"https://huggingface.co/{base_id}" if base_id else "#",
        base_revision_note=(f" (revision `{_code(revision)}`)" if revision else "")
        + (
            f", built on the quantized GGUF weights that alignez-hf embeds (`{embedded.install}`); the Hub's "
            "full-precision weights may steer very slightly differently"
            if embedded
            else ""
        )
        + _adapter_note(config, adapter_id),
        axes=_section(_axes_section, config),
        build=_section(_build_section, config),
        evaluation=_section(_evaluation_section, config),
        first_axis=first["name"] if first else "axis",
        example_strength=_example_strength(first),
    )
    return PackCard(text)


class PackCard(ModelCard):
    """A ModelCard that writes its metadata with :func:`front_matter` (huggingface_hub's own dump writes U+2028 and
    NEL unescaped, which YAML then reads as line breaks: a value would not read back as written)."""

    @property
    def content(self) -> str:
        return f"---\n{front_matter(self.data)}\n---\n{self.text}"

    @content.setter
    def content(self, content: str) -> None:
        ModelCard.content.fset(self, content)


def front_matter(card_data: ModelCardData) -> str:
    """The card's metadata as YAML that reads back to exactly these values: safe types only, and ASCII, so that no
    character the YAML reader takes for a line break (U+2028, NEL) can pass through unescaped."""
    return yaml.safe_dump(card_data.to_dict(), sort_keys=False, allow_unicode=False).strip()


def _adapter_note(config: dict[str, Any], adapter_id: str | None) -> str:
    """The card's words for the PEFT adapter on top of the base, when the pack records one."""
    name = adapter_id or config.get("base_adapter_name_or_path")
    if not (name or config.get("base_adapter_fingerprint")):
        return ""
    revision = config.get("base_adapter_revision") if adapter_id else None
    link = f"[{_inline(name)}](https://huggingface.co/{adapter_id})" if adapter_id else _inline(name or "unnamed")
    pinned = f" (revision `{_code(revision)}`)" if revision else ""
    return f", with the PEFT adapter {link}{pinned} on top of it (from_pretrained loads both; it needs `peft`)"


def _example_strength(axis: dict[str, Any] | None) -> str:
    """Twice the first axis's default strength (1.0 when it has none, or none that is a finite number)."""
    strength = (axis or {}).get("strength")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        strength = 0
    return _fmt(2.0 * float(strength or 1.0)) if axis else "1.0"


def _repo_id(value: Any) -> str | None:
    """``value`` when it reads as a Hub repo id (the only kind of base_model the Hub links), else None."""
    try:
        validate_repo_id(value)
    except (HFValidationError, TypeError, ValueError):
        return None
    return value


def _section(render, config: dict[str, Any]) -> str:
    """A section of the card; metadata too malformed to show (a hand-edited config) is left out, not a crash."""
    try:
        return render(config)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as err:
        logger.warning("Part of the pack's metadata is malformed and is left out of the card (%s).", err)
        return "This pack's metadata for this section is malformed, so it is not shown."


def write_model_card(
    model_or_config: Any,
    folder: str | os.PathLike,
    base_model_id: str | None = None,
    *,
    base_model_revision: str | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    overwrite_user_card: bool = False,
) -> Path | None:
    """Write README.md next to a pack; a README.md the user wrote is kept unless ``overwrite_user_card``.

    A README.md that cannot be a card on the Hub is replaced, with a warning saying why: one that is not a regular
    file (a link is replaced, never written through), one larger than ``MAX_CARD_BYTES``, or one whose metadata is
    not plain YAML (tags such as ``!!python/object``, anchors and aliases, a YAML error). It is never executed.
    """
    path = Path(folder) / CARD_FILE
    if os.path.lexists(path) and not overwrite_user_card:
        problem = card_problem(path)
        if problem is None:
            logger.warning(
                "Keeping the existing %s (not written by alignez-hf); delete it to get a generated card.", path
            )
            return None
        if problem != CARD_MARKER:
            logger.warning("Replacing %s with a generated card: %s.", path, problem)
    card = render_model_card(
        model_or_config,
        repo_id=repo_id,
        base_model_id=base_model_id,
        base_model_revision=base_model_revision,
        license=license,
    )
    if path.is_symlink() or (path.exists() and not path.is_file()):
        path.unlink()  # a link or a pipe: write a file in its place, not through it
    card.save(path)
    return path


def card_problem(path: Path) -> str | None:
    """Why the README.md at ``path`` is not a card of the user's to keep, or None when it is one.

    ``CARD_MARKER`` means that alignez-hf wrote it (and may rewrite it); other answers say what is wrong with it.
    """
    if path.is_symlink():
        return "it is a symbolic link"
    if not path.is_file():
        return "it is not a regular file"
    size = path.stat().st_size
    if size > MAX_CARD_BYTES:
        return f"it holds {size:,} bytes, more than the {MAX_CARD_BYTES:,} a model card may hold here"
    text = path.read_text("utf-8", errors="replace")
    if CARD_MARKER in text:
        return CARD_MARKER
    return metadata_problem(text)


def metadata_problem(text: str) -> str | None:
    """What makes the YAML metadata (front matter) of a model card unfit for the Hub, or None.

    Read with PyYAML's safe loader only, after a pass over its events: anchors and aliases (the "billion laughs"
    expansion) are refused before anything is built, tags that would name Python objects fail the safe loader.
    """
    match = REGEX_YAML_BLOCK.search(text)
    if match is None:
        return None  # no metadata: a plain markdown card
    block = match.group(2)
    try:
        for event in yaml.parse(block, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                return "its metadata uses YAML anchors or aliases"
        data = yaml.safe_load(block)
    except (yaml.YAMLError, RecursionError) as err:
        return f"its metadata is not plain YAML ({_one_line(err)[:200]})"
    if data is not None and not isinstance(data, dict):
        return "its metadata is not a YAML mapping"
    return None
