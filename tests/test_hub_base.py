"""The base a pushed pack records: Hub ids, embedded models' ids, and the refusals that need no Hub."""

from __future__ import annotations

import pytest

from alignez_hf.embedded import EMBEDDED_MODELS
from alignez_hf.hub import HubBase, base_hub_id, embedded_by_hub_id, is_hub_id, resolve_hub_base


def test_hub_ids(tmp_path):
    assert is_hub_id("org/name") and is_hub_id("gpt2")
    assert not is_hub_id(None) and not is_hub_id("") and not is_hub_id("not a//repo")
    assert not is_hub_id(str(tmp_path))  # an existing local path is never read as an id
    assert base_hub_id("org/name") == "org/name" and base_hub_id(str(tmp_path)) is None and base_hub_id(None) is None
    smollm2 = EMBEDDED_MODELS["smollm2-135m"]
    assert embedded_by_hub_id(smollm2.hub_id) is smollm2 and embedded_by_hub_id("org/other") is None


def test_resolve_hub_base_without_a_hub(tmp_path):
    """A bundled base travels as recorded; a local-only base is refused; a given id and revision need no lookup."""
    bundled = {"bundled_base": True, "base_model_name_or_path": "base", "base_model_revision": "r1"}
    assert resolve_hub_base(bundled) == HubBase("base", "r1")
    with pytest.raises(ValueError, match="local folder .*base_model_id="):
        resolve_hub_base({"base_model_name_or_path": str(tmp_path)})
    with pytest.raises(ValueError, match="wrapped from memory"):
        resolve_hub_base({})
    with pytest.raises(ValueError, match="must be a Hub repo id"):
        resolve_hub_base({}, base_model_id="not a//repo")

    class NoCalls:
        def model_info(self, repo_id):
            raise AssertionError("no lookup needed")

    # An embedded model's licence is known and the revision is given: nothing is looked up.
    hub_id = EMBEDDED_MODELS["smollm2-135m"].hub_id
    assert resolve_hub_base({}, hub_id, "abc", api=NoCalls()) == HubBase(hub_id, "abc", "apache-2.0")
