"""The runtime: what a steering pack needs to steer a model. Shipped inside every pack as remote code.

``plan`` is engine-neutral (no hooks, no transformers); ``hooks`` applies a plan inside transformers'
``forward``/``generate``; ``modeling_alignez`` is the user-facing model class.
"""

from .axes import AxisView
from .configuration_alignez import AlignEZConfig
from .errors import (
    AlignEZError,
    BaseModelError,
    DownloadError,
    FolderLockedError,
    GateError,
    NotAPackError,
    PackError,
    PackFileError,
    SteeringError,
    SteeringTypeError,
    UnknownAxisError,
)
from .modeling_alignez import AlignEZForCausalLM
from .plan import AxisEdit, LayerEdit, SteeringPlan, build_plan, resolve_strengths
from .serialization import BASE_RESOLVERS

__all__ = [
    "BASE_RESOLVERS",
    "AlignEZConfig",
    "AlignEZError",
    "AlignEZForCausalLM",
    "AxisEdit",
    "AxisView",
    "BaseModelError",
    "DownloadError",
    "FolderLockedError",
    "GateError",
    "LayerEdit",
    "NotAPackError",
    "PackError",
    "PackFileError",
    "SteeringError",
    "SteeringPlan",
    "SteeringTypeError",
    "UnknownAxisError",
    "build_plan",
    "resolve_strengths",
]
