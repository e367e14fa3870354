"""The README.md model card of a steering pack, rendered from ``model_cards/steering_pack.md``.

The card shows the axes, the build metadata (self-check, sign check, gate), any evaluation rows, and how to load
the pack; a README.md the user wrote is never overwritten by accident.
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from transformers import PretrainedConfig

from .base import base_hub_id, embedded_by_hub_id

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
CARD_TEMPLATE = "steering_pack.md"
# A card holding this text was written by us and may be rewritten; any other README.md is the user's own.
CARD_MARKER = "Written by alignez-hf"
CARD_TAGS = ["alignez", "steering", "representation-editing"]


def _config_dict(model_or_config: Any) -> dict[str, Any]:
    if isinstance(model_or_config, dict):
        return model_or_config
    config = getattr(model_or_config, "config", model_or_config)
    if isinstance(config, PretrainedConfig):
        return config.to_dict()
    raise TypeError(f"Expected an AlignEZForCausalLM, an AlignEZConfig or a config dict, got {type(config).__name__}.")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) or "none"
    return str(value)


def _axes_section(config: dict[str, Any]) -> str:
    axes = config.get("axes") or []
    if not axes:
        return "This pack has no axes."
    lines = [
        "| axis | keywords (+ / −) | edit rule | default strength | layers | rank per layer |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for axis in axes:
        keywords = f"{axis.get('positive') or '?'} / {axis.get('negative') or '?'}"
        rank = axis.get("rank") or {}
        lines.append(
            f"| `{axis['name']}` | {keywords} | {axis.get('rule')} | {_fmt(axis.get('strength'))} | "
            f"{_fmt(axis.get('layers'))} | {_fmt(rank)} |"
        )
    lines += [
        "",
        f"Edits apply at the `{config.get('hook_point', 'residual')}` output of each listed layer, at "
        f"`{config.get('positions', 'last')}` positions, with the `{config.get('layer_policy', 'static')}` layer "
        f"policy and `{config.get('composition', 'sequential')}` composition of several axes.",
    ]
    return "\n".join(lines)


def _build_section(config: dict[str, Any]) -> str:
    parts = []
    for axis in config.get("axes") or []:
        build = axis.get("build") or {}
        facts = []
        if axis.get("strategy"):
            facts.append(f"strategy `{axis['strategy']}`")
        for key, label in (("queries", "queries"), ("pairs_generated", "persona pairs generated")):
            if build.get(key) is not None:
                facts.append(f"{build[key]} {label}")
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
                f"sign check against {sign['behaviour']} on {sign['queries']} build queries: "
                f"{_fmt(sign.get('minus'))} / {_fmt(sign.get('base'))} / {_fmt(sign.get('plus'))} at "
                f"−{sign['strength']:g} / 0 / +{sign['strength']:g} as built; {outcome}"
            )
        gate = build.get("gate")
        if gate and gate.get("added"):
            facts.append(
                f"harm gate: the axis steers only prompts the model itself rates above {gate['threshold']:.2f} on a "
                f"0-9 harm scale (threshold placed on its own refusals of {gate['queries']} build queries, "
                f"{gate['refused']} refused; AUC {gate['auc']:.2f}; fires on {gate['fires_refused']:.0%} of the "
                f"refused and {gate['fires_answered']:.0%} of the answered)"
            )
        for other, cosine in (build.get("subspace_cosine_mean") or {}).items():
            if cosine is not None:
                facts.append(f"subspace cosine with `{other}`: {cosine:.2f} (0 = independent axes, 1 = the same)")
        for warning in build.get("warnings") or []:
            facts.append(f"warning: {warning}")
        if facts:
            parts.append(f"- **{axis['name']}**: " + "; ".join(facts) + ".")
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
        lines += ["| " + " | ".join((*fixed, *metrics)) + " |", "|" + " --- |" * (len(fixed) + len(metrics))]
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
        lines += ["", *(f"- {k.replace('_', ' ')}: {_fmt(v)}" for k, v in details.items())]
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
    base_id = base_model_id or base_hub_id(config.get("base_model_name_or_path"))
    revision = base_model_revision or (config.get("base_model_revision") if base_id else None)
    embedded = embedded_by_hub_id(base_id)
    license = license or (embedded.license if embedded else None)
    card_data = ModelCardData(
        base_model=base_id,
        library_name="transformers",
        pipeline_tag="text-generation",
        license=license,
        tags=list(CARD_TAGS),
    )
    axes = config.get("axes") or []
    base_label = base_id or config.get("base_model_name_or_path") or "its base model"
    template = Template(resources.files("alignez_hf.model_cards").joinpath(CARD_TEMPLATE).read_text("utf-8"))
    text = template.substitute(
        card_data=card_data.to_yaml(),
        title=repo_id.split("/")[-1] if repo_id else "AlignEZ steering pack",
        repo_id=repo_id or "path/to/this/pack",
        base_model=base_label,
        base_model_url=f"https://huggingface.co/{base_id}" if base_id else "#",
        base_revision_note=(f" (revision `{revision}`)" if revision else "")
        + (
            f", built on the quantized GGUF weights that alignez-hf embeds (`{embedded.install}`); the Hub's "
            "full-precision weights may steer very slightly differently"
            if embedded
            else ""
        ),
        axes=_axes_section(config),
        build=_build_section(config),
        evaluation=_evaluation_section(config),
        first_axis=axes[0]["name"] if axes else "axis",
        example_strength=_fmt(2.0 * float(axes[0].get("strength") or 1.0)) if axes else "1.0",
    )
    return ModelCard(text)


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
    """Write README.md next to a pack; a README.md the user wrote is kept unless ``overwrite_user_card``."""
    path = Path(folder) / CARD_FILE
    if path.is_file() and CARD_MARKER not in path.read_text("utf-8", errors="replace") and not overwrite_user_card:
        logger.warning("Keeping the existing %s (not written by alignez-hf); delete it to get a generated card.", path)
        return None
    card = render_model_card(
        model_or_config,
        repo_id=repo_id,
        base_model_id=base_model_id,
        base_model_revision=base_model_revision,
        license=license,
    )
    card.save(path)
    return path
