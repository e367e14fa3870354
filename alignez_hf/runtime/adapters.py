"""Bases that carry a PEFT adapter: the pack records the adapter beside its base, and a load rebuilds that stack.

A pack built on ``PeftModel(base, adapter)`` records the base as usual (``base_model_name_or_path``,
``base_model_revision``) and the adapter in ``base_adapter_name_or_path``, ``base_adapter_revision`` and
``base_adapter_fingerprint`` (its PEFT type and a SHA-256 of its weights, which tells one adapter from another in
memory, where PEFT keeps no record of where an adapter came from). Loading such a pack loads the base, then the
adapter through PEFT; a base without that adapter, or with another one, is refused.

peft is an optional extra (``alignez-hf[train]``): it is imported inside ``try`` so that this file, shipped as remote
code, loads where peft is absent (transformers' remote-code check skips imports inside try blocks); only a pack
that names an adapter then asks for it.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from .constants import CONFIG_FILE
from .errors import BaseModelError

try:
    from peft import PeftConfig, PeftModel, get_peft_model_state_dict
except ImportError:  # the optional extra is not installed: packs without an adapter need none of it
    PeftConfig = PeftModel = get_peft_model_state_dict = None

INSTALL_PEFT = 'pip install "alignez-hf[train]" (or pip install peft)'
ADAPTER_CONFIG_FILE = "adapter_config.json"
# Where load_adapter notes, on the PeftModel, the adapter it loaded: from_base records it from there.
SOURCE_ATTRIBUTE = "alignez_adapter_source"


def require_peft(what: str) -> None:
    """Raise a ModuleNotFoundError naming the extra to install when peft is missing; ``what`` needs it."""
    if PeftModel is None:
        raise ModuleNotFoundError(f"{what} needs the peft package, not installed here: {INSTALL_PEFT}.", name="peft")


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is a peft ``PeftModel`` (False wherever peft is not installed)."""
    return PeftModel is not None and isinstance(model, PeftModel)


def inner_model(model: Any):
    """The transformers model under a PEFT wrapper, which holds the decoder layers; ``model`` itself otherwise."""
    return model.get_base_model() if is_peft_model(model) else model


def adapter_fingerprint(model) -> dict[str, str]:
    """``peft_type`` and ``weights_sha256`` (of the active adapter's tensors as float32) of a PeftModel."""
    names = list(model.active_adapters)
    if len(names) != 1:
        raise ValueError(
            f"The PEFT model has {len(names)} active adapters ({names}); a steering pack steers a base with one "
            "adapter. Activate one with peft_model.set_adapter(name) first."
        )
    config = model.peft_config[names[0]]
    peft_type = str(getattr(config.peft_type, "value", config.peft_type))
    if config.is_prompt_learning:
        raise ValueError(
            f"The PEFT adapter is a {peft_type} adapter, which adds virtual tokens instead of editing layers; steering "
            "packs support adapters that edit layers (LoRA and the like). Use such an adapter or the plain base."
        )
    state = get_peft_model_state_dict(model, adapter_name=names[0])
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{key} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.numpy().tobytes())
    return {"peft_type": peft_type, "weights_sha256": digest.hexdigest()}


def adapter_fields(model, name_or_path: str | None = None, revision: str | None = None) -> dict[str, Any]:
    """The config fields that record the adapter of ``model`` (none for a model without one); see module docs."""
    if not is_peft_model(model):
        refuse_foreign_adapter(model)
        if name_or_path:
            raise ValueError(
                f"base_adapter_name_or_path={name_or_path!r} names a PEFT adapter, but the base model carries none; "
                "pass the model with its adapter, PeftModel.from_pretrained(base, adapter), as the base."
            )
        return {}
    source = getattr(model, SOURCE_ATTRIBUTE, None) or {}
    return {
        "base_adapter_name_or_path": name_or_path or source.get("name_or_path"),
        "base_adapter_revision": revision or (None if name_or_path else source.get("revision")),
        "base_adapter_fingerprint": adapter_fingerprint(model),
    }


def refuse_foreign_adapter(model, error: type[Exception] = ValueError) -> None:
    """Refuse a transformers model into which transformers itself loaded an adapter: no pack could record it."""
    if getattr(model, "_hf_peft_config_loaded", False):
        raise error(
            f"The base model {getattr(model, 'name_or_path', '') or type(model).__name__} carries a PEFT adapter "
            "that transformers loaded into it (load_adapter, or from_pretrained of an adapter folder), which a "
            "steering pack cannot record. Load the base and the adapter with peft instead: "
            "PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)."
        )


def describe(name_or_path, revision, fingerprint) -> str:
    """An adapter as a message names it: its id, revision, type and the start of its weights' digest."""
    fingerprint = fingerprint if isinstance(fingerprint, dict) else {}
    facts = [f"revision {revision}"] if revision else []
    if fingerprint.get("weights_sha256"):
        facts.append(f"weights sha256 {str(fingerprint['weights_sha256'])[:12]}")
    kind = f"the {fingerprint['peft_type']} adapter" if fingerprint.get("peft_type") else "the adapter"
    name = repr(name_or_path) if name_or_path else "(not named)"
    return f"{kind} {name}" + (f" ({', '.join(facts)})" if facts else "")


def check_adapter(config, base_model) -> None:
    """Raise a BaseModelError naming both adapters when ``base_model`` does not carry the adapter the pack records."""
    recorded = {k: getattr(config, f"base_adapter_{k}", None) for k in ("name_or_path", "revision", "fingerprint")}
    expects = bool(recorded["name_or_path"] or recorded["fingerprint"])
    base = config.base_model_name_or_path or "its base model"
    if not is_peft_model(base_model):
        refuse_foreign_adapter(base_model, BaseModelError)
        if expects:
            raise BaseModelError(
                f"This steering pack was built for {base} with {describe(*recorded.values())} on top, but the model "
                f"it is being loaded onto carries no PEFT adapter. Let from_pretrained load the adapter (pass no "
                "base_model=), or pass base_model=PeftModel.from_pretrained(base, adapter)."
            )
        return
    source = getattr(base_model, SOURCE_ATTRIBUTE, None) or {}
    try:
        actual = adapter_fingerprint(base_model)
    except ValueError as err:  # several active adapters, or a prompt-learning one: not a base a pack can steer
        raise BaseModelError(str(err)) from err
    found = describe(source.get("name_or_path"), source.get("revision"), actual)
    if not expects:
        raise BaseModelError(
            f"This steering pack was built for {base} without a PEFT adapter, but the model it is being loaded onto "
            f"carries {found}. Load it onto the plain base (peft_model.unload() gives it back), or build a pack on "
            "the adapter (alignez build --base ADAPTER)."
        )
    digest = (recorded["fingerprint"] or {}).get("weights_sha256")
    if digest is not None and digest != actual["weights_sha256"]:
        raise BaseModelError(
            f"This steering pack was built for {base} with {describe(*recorded.values())} on top, but the model it is "
            f"being loaded onto carries a different adapter: {found} (base_adapter_fingerprint in its {CONFIG_FILE}). "
            "Load it with the adapter it was built for (the one it names, or base_adapter_name_or_path= pointing at "
            "a copy of it), or build a pack on this adapter."
        )


def adapter_location(source: str, config, kwargs: dict) -> tuple[str, str | None] | None:
    """``(folder or Hub id, revision)`` of the adapter a pack names, or None; pops the ``base_adapter_*`` overrides.

    ``base_adapter_name_or_path=`` (with ``base_adapter_revision=``) in ``kwargs`` overrides the recorded adapter.
    """
    name = kwargs.pop("base_adapter_name_or_path", None)
    revision = kwargs.pop("base_adapter_revision", None)
    recorded = getattr(config, "base_adapter_name_or_path", None)
    if not (name or recorded or getattr(config, "base_adapter_fingerprint", None)):
        return None
    require_peft(f"The steering pack {source} steers a base with a PEFT adapter, which")
    if not (name or recorded):
        raise BaseModelError(
            f"The steering pack {source} steers {config.base_model_name_or_path or 'its base'} with a PEFT adapter "
            f"that it does not name (base_adapter_name_or_path in its {CONFIG_FILE} is null: it was wrapped from "
            "memory). Pass base_adapter_name_or_path= (the adapter's folder or Hub id) or "
            "base_model=PeftModel.from_pretrained(base, adapter) to from_pretrained."
        )
    return name or recorded, revision if name else revision or getattr(config, "base_adapter_revision", None)


def load_adapter(base_model, name_or_path: str, revision: str | None, source: str, hub: dict):
    """``base_model`` with the PEFT adapter at ``name_or_path`` on top: an eval-mode PeftModel that notes its source.

    ``hub`` holds Hub keyword arguments (``cache_dir``, ``token``, ...); ``source`` is who names the adapter.
    """
    require_peft(f"The PEFT adapter {name_or_path!r} named by {source}")
    try:
        model = PeftModel.from_pretrained(base_model, name_or_path, revision=revision, **hub)
    except (OSError, ValueError) as err:  # not found, not downloadable, not an adapter of this base
        raise BaseModelError(
            f"Could not load the PEFT adapter {name_or_path!r} (revision {revision}) named by {source}: {err}\n"
            "If the adapter lives elsewhere, pass base_adapter_name_or_path=."
        ) from err
    if not os.path.isdir(name_or_path):  # record the commit the Hub served, as for the base
        from transformers.utils import cached_file
        from transformers.utils.hub import extract_commit_hash

        path = cached_file(name_or_path, ADAPTER_CONFIG_FILE, revision=revision, **hub)
        revision = extract_commit_hash(path, None) or revision
    setattr(model, SOURCE_ATTRIBUTE, {"name_or_path": name_or_path, "revision": revision})
    return model.eval()


def is_adapter(name_or_path: str, revision: str | None = None) -> bool:
    """Whether a folder or Hub repo holds a PEFT adapter (an ``adapter_config.json``)."""
    from transformers.utils import find_adapter_config_file

    return find_adapter_config_file(name_or_path, revision=revision) is not None


def load_stack(name_or_path: str, revision: str | None = None, resolvers=(), **kwargs):
    """The base named by the adapter at ``name_or_path`` (its ``adapter_config.json``) with the adapter on top.

    ``resolvers`` map the adapter's PeftConfig to a local copy of its base (see ``serialization.BASE_RESOLVERS``);
    ``kwargs`` go to the base's ``from_pretrained``. Returns the PeftModel and the base's recorded id.
    """
    require_peft(f"Loading the PEFT adapter {name_or_path!r}")
    try:
        peft_config = PeftConfig.from_pretrained(name_or_path, revision=revision)
    except ValueError as err:
        raise BaseModelError(f"{name_or_path!r} is not a loadable PEFT adapter: {err}") from err
    recorded = peft_config.base_model_name_or_path
    if not recorded:
        raise BaseModelError(
            f"The PEFT adapter {name_or_path!r} names no base model (base_model_name_or_path in its "
            f"{ADAPTER_CONFIG_FILE}); load the base yourself and pass PeftModel.from_pretrained(base, adapter)."
        )
    where = next(filter(None, (r(peft_config) for r in resolvers)), None)
    pinned = {} if where or not peft_config.revision else {"revision": peft_config.revision}
    try:
        base = AutoModelForCausalLM.from_pretrained(where or recorded, **pinned, **kwargs)
    except (OSError, ValueError) as err:
        raise BaseModelError(
            f"Could not load the base model {recorded!r} (revision {pinned.get('revision')}) that the PEFT adapter "
            f"{name_or_path!r} names in its {ADAPTER_CONFIG_FILE}: {err}"
        ) from err
    return load_adapter(base, name_or_path, revision, f"the adapter folder or repo {name_or_path!r}", {}), recorded


def merge_adapter(model) -> None:
    """Fold the PEFT adapter of a pack's base into the base's weights (``merge_and_unload``), in place."""
    if is_peft_model(model.base):
        model.base = model.base.merge_and_unload()


def check_bundle(model) -> None:
    """Refuse to bundle a base that carries a PEFT adapter (``include_base=True``): its weights are two checkpoints."""
    if is_peft_model(model.base):
        raise ValueError(
            "include_base=True bundles a plain transformers checkpoint, and this pack's base carries a PEFT adapter. "
            "Save the pack without the base (it records the base and the adapter, and from_pretrained loads both), "
            "or merge the adapter first (peft_model.merge_and_unload()) and build a pack on the merged model."
        )
