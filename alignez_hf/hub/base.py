"""The base model of a pack as others can fetch it: a Hub repo id (not a local path), a pinned revision, a licence."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

from ..embedded import EMBEDDED_MODELS, EmbeddedModel, embedded_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubBase:
    """The base model of a pack as others can fetch it: Hub repo id, pinned revision, licence when known."""

    repo_id: str | None
    revision: str | None
    license: str | None = None


def is_hub_id(name_or_path: str | None) -> bool:
    """Whether ``name_or_path`` reads as a Hub repo id (and is not an existing local path)."""
    try:
        if not name_or_path or Path(name_or_path).expanduser().exists():
            return False
    except (OSError, ValueError):  # a name too long for a path, or one holding a NUL: no local folder either way
        pass
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


def embedded_by_hub_id(repo_id: str | None) -> EmbeddedModel | None:
    """The embedded model published under ``repo_id``, if any."""
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
    embedded = embedded_by_hub_id(repo_id)
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


def resolve_hub_adapter(
    config: dict[str, Any],
    adapter_id: str | None = None,
    adapter_revision: str | None = None,
    api: HfApi | None = None,
) -> HubBase | None:
    """The PEFT adapter a pushed pack records (Hub id and pinned revision), None for a pack without one; refuses an
    adapter others cannot fetch, as :func:`resolve_hub_base` does for the base."""
    recorded = config.get("base_adapter_name_or_path")
    if not (recorded or config.get("base_adapter_fingerprint") or adapter_id):
        return None
    repo_id = adapter_id or (recorded if is_hub_id(recorded) else None)
    if repo_id is None:
        where = f"the local folder {recorded!r}" if recorded else "not recorded (it was wrapped from memory)"
        raise ValueError(
            f"This pack's base carries a PEFT adapter that is {where}, which nobody else can load. Push the adapter "
            "to the Hub (peft_model.push_to_hub('org/adapter')), then pass its repo id: push_pack(..., "
            "base_adapter_id='org/adapter') or `alignez push DIR REPO --base-adapter-id org/adapter`."
        )
    if not is_hub_id(repo_id):
        raise ValueError(f"base_adapter_id must be a Hub repo id such as 'org/name', got {repo_id!r}.")
    revision = adapter_revision or (config.get("base_adapter_revision") if repo_id == recorded else None)
    if revision is None:  # pinned at the adapter repo's current commit, as the base is
        try:
            revision = (api or HfApi()).model_info(repo_id).sha
        except (RepositoryNotFoundError, HfHubHTTPError, OSError) as err:
            raise ValueError(
                f"The PEFT adapter {repo_id!r} cannot be found on the Hub endpoint ({err}). Push it first, fix the "
                "id, or pass base_adapter_revision= to record a revision without checking."
            ) from err
    return HubBase(repo_id, revision)
