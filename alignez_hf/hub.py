"""Share steering packs on the Hugging Face Hub: push a pack with its model card so others load it by repo id.

Loading needs nothing from here: ``AlignEZForCausalLM.from_pretrained("org/pack")`` (or transformers' Auto classes
with ``trust_remote_code=True``) fetches the pack and its base. This module prepares what others need for that:
a base recorded by Hub id and revision rather than a local path, the tokenizer, and a README.md model card.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from huggingface_hub import CommitInfo, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id
from transformers import PretrainedConfig

from .configuration_alignez import AlignEZConfig
from .embedded import EMBEDDED_MODELS, embedded_name

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
CARD_TEMPLATE = "steering_pack.md"
# A card holding this text was written by us and may be rewritten; any other README.md is the user's own.
CARD_MARKER = "Written by alignez-hf"
CARD_TAGS = ["alignez", "steering", "representation-editing"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


@dataclass(frozen=True)
class HubBase:
    """The base model of a pack as others can fetch it: Hub repo id, pinned revision, licence when known."""

    repo_id: str | None
    revision: str | None
    license: str | None = None


def is_hub_id(name_or_path: str | None) -> bool:
    """Whether ``name_or_path`` reads as a Hub repo id (and is not an existing local path)."""
    if not name_or_path or Path(name_or_path).expanduser().exists():
        return False
    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        return False
    return True


def base_hub_id(name_or_path: str | None) -> str | None:
    """The Hub id of a base given by id or local path: itself, an embedded model's id, or None if only local."""
    if is_hub_id(name_or_path):
        return name_or_path
    name = embedded_name(name_or_path) if name_or_path else None
    return EMBEDDED_MODELS[name].hub_id if name else None


def _embedded_by_hub_id(repo_id: str | None):
    return next((m for m in EMBEDDED_MODELS.values() if m.hub_id == repo_id), None)


def resolve_hub_base(
    config: dict[str, Any],
    base_model_id: str | None = None,
    base_model_revision: str | None = None,
    api: HfApi | None = None,
) -> HubBase:
    """Decide which base repo id and revision a pushed pack records, refusing a base others cannot fetch."""
    recorded = config.get("base_model_name_or_path")
    if config.get("bundled_base"):  # the base travels inside the pack
        return HubBase(base_model_id or recorded, base_model_revision or config.get("base_model_revision"))
    repo_id = base_model_id or base_hub_id(recorded)
    if repo_id is None:
        where = f"the local folder {recorded!r}" if recorded else "not recorded (it was wrapped from memory)"
        raise ValueError(
            f"This pack's base model is {where}, which nobody else can load. Push the base "
            "model to the Hub (or find its original repo), then pass its repo id: "
            "push_pack(..., base_model_id='org/base', base_model_revision='<commit sha>') or "
            "`alignez push DIR REPO --base-model-id org/base`."
        )
    if not is_hub_id(repo_id):
        raise ValueError(f"base_model_id must be a Hub repo id such as 'org/name', got {repo_id!r}.")
    embedded = _embedded_by_hub_id(repo_id)
    revision = base_model_revision
    if revision is None and repo_id == recorded:
        revision = config.get("base_model_revision")
    license = embedded.license if embedded else None
    if revision is None or license is None:
        # Pin the base at its current commit, so a later push to the base repo cannot silently change the pack.
        try:
            info = (api or HfApi()).model_info(repo_id)
        except (RepositoryNotFoundError, HfHubHTTPError, OSError) as err:
            if embedded is None and revision is None:
                raise ValueError(
                    f"The base model {repo_id!r} cannot be found on the Hub endpoint ({err}). Push it first, fix "
                    "the id, or pass base_model_revision= to record a revision without checking."
                ) from err
            logger.warning(
                "Could not look up the base model %s on this Hub endpoint (%s); recording no revision.",
                repo_id,
                type(err).__name__,
            )
        else:
            revision = revision or info.sha
            card_license = getattr(info.card_data, "license", None) if info.card_data else None
            license = license or (card_license if isinstance(card_license, str) else None)
    return HubBase(repo_id, revision, license)


# ---------------------------------------------------------------------------------------------- model card
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
    embedded = _embedded_by_hub_id(base_id)
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


# ---------------------------------------------------------------------------------------------- push
def _stage(model_or_folder: Any, staging: Path) -> None:
    """Copy a pack folder, or save a model, into ``staging`` without touching the user's files."""
    if isinstance(model_or_folder, (str, os.PathLike)):
        source = Path(model_or_folder)
        if not (source / "config.json").is_file():
            raise FileNotFoundError(f"{source} is not a steering pack folder (it has no config.json).")
        # Hidden files are caches, VCS data or leftovers of an interrupted atomic save: never part of a pack.
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(".*", "__pycache__", "*.pyc"))
    elif hasattr(model_or_folder, "save_pretrained") and hasattr(model_or_folder, "steering_state_dict"):
        model_or_folder.save_pretrained(staging)
    else:
        raise TypeError(f"Expected an AlignEZForCausalLM or a pack folder, got {type(model_or_folder).__name__}.")


def _add_tokenizer(staging: Path, recorded_base: str | None) -> None:
    """Give the pack a tokenizer (pipeline() reads it from the pack repo), copied from a local base if needed."""
    if (staging / "tokenizer_config.json").is_file():
        return
    local = Path(recorded_base).expanduser() if recorded_base else None
    if local is not None and local.is_dir() and (local / "tokenizer_config.json").is_file():
        for name in TOKENIZER_FILES:
            if (local / name).is_file():
                shutil.copyfile(local / name, staging / name)
        return
    logger.warning(
        "The pack has no tokenizer files; pipeline('text-generation', model=repo) will need tokenizer=. "
        "Wrap the base with a tokenizer (AlignEZForCausalLM.from_base(base, tokenizer)) to include one."
    )


def push_pack(
    model_or_folder: Any,
    repo_id: str,
    *,
    base_model_id: str | None = None,
    base_model_revision: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    endpoint: str | None = None,
) -> CommitInfo:
    """Upload a steering pack (an AlignEZForCausalLM or a pack folder) with a model card to a Hub repo."""
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="alignez-push-") as tmp:
        staging = Path(tmp) / "pack"
        _stage(model_or_folder, staging)
        config_path = staging / "config.json"
        config = json.loads(config_path.read_text("utf-8"))
        if config.get("model_type") != AlignEZConfig.model_type:
            raise ValueError(
                f"{model_or_folder} is not an AlignEZ steering pack (model_type {config.get('model_type')!r})."
            )
        recorded = config.get("base_model_name_or_path")
        base = resolve_hub_base(config, base_model_id, base_model_revision, api)
        config["base_model_name_or_path"], config["base_model_revision"] = base.repo_id, base.revision
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", "utf-8")
        _add_tokenizer(staging, recorded)
        write_model_card(
            config,
            staging,
            base.repo_id,
            base_model_revision=base.revision,
            repo_id=repo_id,
            license=base.license,
        )
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and not create_pr:
            api.create_branch(repo.repo_id, branch=revision, exist_ok=True)
        axes = ", ".join(a["name"] for a in config.get("axes") or [])
        return api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=staging,
            revision=revision,
            commit_message=commit_message or f"Upload AlignEZ steering pack ({axes}) for {base.repo_id}",
            create_pr=create_pr,
        )


# ---------------------------------------------------------------------------------------------- CLI
def add_push_arguments(parser: argparse.ArgumentParser, *, positionals: bool = True) -> None:
    """Add ``alignez push`` arguments (``positionals=False`` leaves out PACK and REPO_ID, e.g. for build)."""
    if positionals:
        parser.add_argument("pack", help="Folder of the steering pack to upload.")
        parser.add_argument("repo_id", help="Hub repo to push to, e.g. your-name/smollm2-cheerful.")
    parser.add_argument(
        "--base-model-id",
        default=None,
        help="Hub repo id of the base model to record (needed when the pack names a local folder).",
    )
    parser.add_argument("--base-model-revision", default=None, help="Commit of the base model to record.")
    parser.add_argument("--private", action="store_true", default=None, help="Create the repo as private.")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in token or HF_TOKEN).")
    parser.add_argument("--revision", default=None, help="Branch to push to (created if missing).")
    parser.add_argument("--commit-message", default=None, help="Commit message.")
    parser.add_argument("--create-pr", action="store_true", help="Open a pull request instead of committing.")
    parser.add_argument("--endpoint", default=None, help="Hub endpoint (default: HF_ENDPOINT or huggingface.co).")


def push_command(args: argparse.Namespace) -> int:
    """Run ``alignez push`` from parsed arguments (``args.pack``, ``args.repo_id`` and the push options)."""
    info = push_pack(
        args.pack,
        args.repo_id,
        base_model_id=args.base_model_id,
        base_model_revision=args.base_model_revision,
        private=args.private,
        token=args.token,
        revision=args.revision,
        commit_message=args.commit_message,
        create_pr=args.create_pr,
        endpoint=args.endpoint,
    )
    print(f"Pushed {args.pack} to {info.pr_url or info.commit_url}")
    return 0
