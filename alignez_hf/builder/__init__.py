"""The builder: self-generated contrasts -> per-layer subspaces -> a steering pack. The runtime never imports it."""

from .axes import PRESETS, Axis, parse_axis
from .builder import AlignEZBuilder
from .config import DEFAULT_STRATEGY, BuildConfig
from .output import RECORDS_FILE, PackExistsError
from .queries import load_queries, truncate_queries
from .report import AxisReport
from .strategies import STRATEGIES, Strategy
from .subspace import SubspaceError

__all__ = [
    "DEFAULT_STRATEGY",
    "PRESETS",
    "RECORDS_FILE",
    "STRATEGIES",
    "AlignEZBuilder",
    "Axis",
    "AxisReport",
    "BuildConfig",
    "PackExistsError",
    "Strategy",
    "SubspaceError",
    "load_queries",
    "parse_axis",
    "truncate_queries",
]
