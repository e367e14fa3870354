"""Shared fixtures: tiny random models built from configs (fast) and the embedded SmolLM2 (real)."""

from __future__ import annotations

import os

import pytest
import torch
from tiny_models import make_tiny_llama
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import alignez_hf
from alignez_hf import AlignEZForCausalLM

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """Local checkpoint folder of the embedded SmolLM2-135M-Instruct (converted once, cached)."""
    return alignez_hf.default_base_model()


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path):
    return AutoTokenizer.from_pretrained(smollm2_path)


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    """The real SmolLM2 model, shared read-only by the tests that need one."""
    return AutoModelForCausalLM.from_pretrained(smollm2_path).eval()


@pytest.fixture
def tiny_llama() -> LlamaForCausalLM:
    """A random 4-layer Llama (hidden 32)."""
    return make_tiny_llama()


@pytest.fixture
def tiny_gpt2() -> GPT2LMHeadModel:
    """A random 3-layer GPT-2 (hidden 32): another layer layout (transformer.h) and tuple block outputs."""
    torch.manual_seed(1)
    config = GPT2Config(vocab_size=256, n_embd=32, n_layer=3, n_head=4, n_positions=256, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture
def tiny_qwen2() -> Qwen2ForCausalLM:
    """A random 3-layer Qwen2 (hidden 32)."""
    torch.manual_seed(2)
    config = Qwen2Config(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture
def tiny_chat_llama(smollm2_tokenizer):
    """A random tiny Llama that shares SmolLM2's real tokenizer and chat template (for builder mechanics)."""
    return make_tiny_llama(vocab_size=len(smollm2_tokenizer)), smollm2_tokenizer


@pytest.fixture
def tiny_base_dir(tmp_path, tiny_llama):
    """The tiny Llama saved as a local checkpoint folder (a base that from_pretrained can load)."""
    path = tmp_path / "tiny-base"
    tiny_llama.save_pretrained(path)
    return str(path)


@pytest.fixture
def tiny_chat_pack(tiny_chat_llama):
    """A tiny random chat model (SmolLM2's tokenizer) with two hand-made axes: cheerful (default 1) and simple (0.7)."""
    base, tokenizer = tiny_chat_llama
    model = AlignEZForCausalLM.from_base(base, tokenizer)
    gen = torch.Generator().manual_seed(0)
    model.add_axis("cheerful", {1: torch.randn(2, 32, generator=gen), 2: torch.randn(32, generator=gen)})
    model.add_axis("simple", {2: torch.randn(32, generator=gen)}, strength=0.7)
    return model, tokenizer
