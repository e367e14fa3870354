"""Turning user requests into model input: one chat format for the builder, the evaluation, the CLI and benchmarks.

Every prompt goes through the tokenizer's chat template when it has one (as the paper advises for instruct models);
a tokenizer without one gets a plain ``User:/Assistant:`` format, the same everywhere, so that a pack is built and
measured on identically prompted models.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

logger = logging.getLogger(__name__)
_NOTICE_SHOWN: set[int] = set()


def has_chat_template(tokenizer) -> bool:
    """Whether the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(tokenizer, user: str, system: str | None = None) -> str:
    """The text that makes the model answer ``user`` (optionally under a ``system`` message), ready to generate."""
    if has_chat_template(tokenizer):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if id(tokenizer) not in _NOTICE_SHOWN:
        _NOTICE_SHOWN.add(id(tokenizer))
        logger.warning("The tokenizer has no chat template; prompts use a plain 'User:/Assistant:' format.")
    head = f"{system}\n\n" if system else ""
    return f"{head}User: {user}\nAssistant:"


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of an already formatted text (a chat template writes its own special tokens)."""
    return tokenizer(text, add_special_tokens=not has_chat_template(tokenizer))["input_ids"]


@contextlib.contextmanager
def padding(tokenizer, side: str = "left") -> Iterator[object]:
    """Pad on ``side`` for the duration of the block, with a pad token (the EOS token if the tokenizer has none).

    Generation needs left padding (every row's prompt ends at the last column); scoring given text wants right
    padding (real tokens keep their positions).
    """
    old_side, old_pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = old_side
        if old_pad is None:
            tokenizer.pad_token = None


def encode_texts(tokenizer, texts: Sequence[str], side: str = "left"):
    """A padded batch (``input_ids``, ``attention_mask`` tensors) of already formatted texts."""
    with padding(tokenizer, side):
        return tokenizer(
            list(texts), return_tensors="pt", padding=True, add_special_tokens=not has_chat_template(tokenizer)
        )


def encode_chats(tokenizer, users: Sequence[str], system: str | None = None, side: str = "left"):
    """A padded batch of user requests in the chat format (see :func:`chat_prompt`), ready for ``generate``."""
    return encode_texts(tokenizer, [chat_prompt(tokenizer, u, system=system) for u in users], side)
