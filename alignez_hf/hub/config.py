"""Push options, defined once: ``push_pack`` takes these defaults and ``alignez push`` (and ``alignez build
--push-to-hub``) is generated from these fields. Imports nothing but the standard library."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PushConfig:
    """How a pack is uploaded: the base it records and where the commit goes."""

    base_model_id: str | None = field(
        default=None,
        metadata={
            "help": "Hub repo id of the base model to record (needed when the pack names a local folder).",
            "unset": "the id the pack records",
        },
    )
    base_model_revision: str | None = field(
        default=None, metadata={"help": "Commit of the base model to record.", "unset": "its current commit"}
    )
    base_adapter_id: str | None = field(
        default=None,
        metadata={
            "help": "Hub repo id of the base's PEFT adapter to record (needed when the pack names a local folder).",
            "unset": "the id the pack records",
        },
    )
    base_adapter_revision: str | None = field(
        default=None, metadata={"help": "Commit of the PEFT adapter to record.", "unset": "its current commit"}
    )
    private: bool | None = field(
        default=None, metadata={"help": "Create the repo as private.", "unset": "the Hub's default for new repos"}
    )
    token: str | None = field(default=None, metadata={"help": "Hub token.", "unset": "the logged-in token or HF_TOKEN"})
    revision: str | None = field(
        default=None, metadata={"help": "Branch to push to (created if missing).", "unset": "main"}
    )
    commit_message: str | None = field(
        default=None, metadata={"help": "Commit message.", "unset": "one naming the axes and the base"}
    )
    create_pr: bool = field(default=False, metadata={"help": "Open a pull request instead of committing."})
    endpoint: str | None = field(
        default=None, metadata={"help": "Hub endpoint.", "unset": "HF_ENDPOINT or huggingface.co"}
    )
