"""alignez-hf: label-free self-alignment (AlignEZ) for Hugging Face causal LMs."""

from transformers import AutoConfig, AutoModelForCausalLM

from .configuration_alignez import AlignEZConfig
from .embedded import EMBEDDED_MODELS, default_base_model, embedded_base_for, embedded_model_path
from .modeling_alignez import BASE_RESOLVERS, AlignEZForCausalLM, AxisView

__version__ = "0.1.0"

AutoConfig.register(AlignEZConfig.model_type, AlignEZConfig, exist_ok=True)
AutoModelForCausalLM.register(AlignEZConfig, AlignEZForCausalLM, exist_ok=True)
if embedded_base_for not in BASE_RESOLVERS:
    BASE_RESOLVERS.append(embedded_base_for)

__all__ = [
    "EMBEDDED_MODELS",
    "AlignEZConfig",
    "AlignEZForCausalLM",
    "AxisView",
    "default_base_model",
    "embedded_model_path",
]
