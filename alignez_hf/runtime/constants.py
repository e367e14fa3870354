"""Names and allowed values of the steering-pack format, in one place (see docs/pack-format.md)."""

from __future__ import annotations

import re

# The pack format this runtime writes and reads. Packs saved before the field existed carry none and are format 1.
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
STEERING_FILE = "steering.safetensors"
STEERING_METADATA = {"format": "pt", "alignez": "1"}
BUNDLED_BASE_FOLDER = "base"
# Keyword arguments of from_pretrained that locate files on the Hub; they apply to the pack, base and adapter alike.
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "proxies")

HOOK_POINTS = ("residual", "mlp")
LAYER_POLICIES = ("static", "per_query")
POSITIONS = ("last", "all")
COMPOSITIONS = ("sequential", "paper")
EDIT_RULES = ("additive", "tanh", "relu_suppress")
FINGERPRINT_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
# What a steering pack's config lets a caller override for the duration of a block (model.steering_options).
OPTION_FIELDS = ("hook_point", "layer_policy", "top_n", "positions", "composition")

AXIS_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
AXIS_NAME_RULE = "letters, digits, '_' and '-' only"
# The largest strength magnitude (config or steering=) and push size (scales) a pack may hold: larger ones only
# overflow the hidden states (NaN logits), so they are refused.
MAX_STRENGTH = 1e4
MAX_SCALE = 1e6
