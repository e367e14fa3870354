"""Tiny random models built from configs, shared by fixtures and module-scoped test setups."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def make_tiny_llama(vocab_size: int = 256, seed: int = 0) -> LlamaForCausalLM:
    """A random 4-layer Llama (hidden 32), seeded: the tiny model most tests use."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()
