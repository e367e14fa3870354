"""alignez-hf: label-free self-alignment (AlignEZ) for Hugging Face causal LMs."""

from transformers import AutoConfig, AutoModelForCausalLM

from .embedded import EMBEDDED_MODELS, default_base_model, embedded_base_for, embedded_model_path
from .runtime import (
    BASE_RESOLVERS,
    AlignEZConfig,
    AlignEZError,
    AlignEZForCausalLM,
    AxisView,
    BaseModelError,
    DownloadError,
    FolderLockedError,
    GateError,
    NotAPackError,
    PackError,
    PackFileError,
    SteeringError,
    SteeringPlan,
    SteeringTypeError,
    UnknownAxisError,
)

__version__ = "0.1.0"

AutoConfig.register(AlignEZConfig.model_type, AlignEZConfig, exist_ok=True)
AutoModelForCausalLM.register(AlignEZConfig, AlignEZForCausalLM, exist_ok=True)
if embedded_base_for not in BASE_RESOLVERS:
    BASE_RESOLVERS.append(embedded_base_for)

__all__ = [
    "EMBEDDED_MODELS",
    "AlignEZConfig",
    "AlignEZError",
    "AlignEZForCausalLM",
    "AxisView",
    "BaseModelError",
    "DownloadError",
    "FolderLockedError",
    "GateError",
    "NotAPackError",
    "PackError",
    "PackFileError",
    "SteeringError",
    "SteeringPlan",
    "SteeringTypeError",
    "UnknownAxisError",
    "default_base_model",
    "embedded_model_path",
]
