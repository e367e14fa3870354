"""Share steering packs on the Hugging Face Hub: push a pack with its model card so others load it by repo id.

- :mod:`.base`: the base model a pack records (a Hub id and pinned revision, never a local path);
- :mod:`.card`: the README.md model card;
- :mod:`.push`: staging and upload (:func:`push_pack`, also ``model.push_to_hub``);
- :mod:`.config`: the push options (:class:`PushConfig`), from which ``alignez push`` is generated.
"""

from .base import HubBase, base_hub_id, embedded_by_hub_id, is_hub_id, resolve_hub_base
from .card import CARD_FILE, CARD_MARKER, CARD_TAGS, CARD_TEMPLATE, render_model_card, write_model_card
from .config import PushConfig
from .push import TOKENIZER_FILES, add_tokenizer, push_pack, stage

__all__ = [
    "CARD_FILE",
    "CARD_MARKER",
    "CARD_TAGS",
    "CARD_TEMPLATE",
    "TOKENIZER_FILES",
    "HubBase",
    "PushConfig",
    "add_tokenizer",
    "base_hub_id",
    "embedded_by_hub_id",
    "is_hub_id",
    "push_pack",
    "render_model_card",
    "resolve_hub_base",
    "stage",
    "write_model_card",
]
