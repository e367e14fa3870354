"""The builder: self-generated contrasts -> per-layer subspaces -> a steering pack. The runtime never imports it."""

from .axes import PRESETS, Axis, parse_axis
from .builder import RECORDS_FILE, AlignEZBuilder, AxisReport, PackExistsError
from .queries import load_queries, truncate_queries
from .strategies import DEFAULT_STRATEGY, STRATEGIES, Strategy
from .subspace import SubspaceError

__all__ = [
    "DEFAULT_STRATEGY",
    "PRESETS",
    "RECORDS_FILE",
    "STRATEGIES",
    "AlignEZBuilder",
    "Axis",
    "AxisReport",
    "PackExistsError",
    "Strategy",
    "SubspaceError",
    "load_queries",
    "parse_axis",
    "truncate_queries",
]
