"""Tiny packs and a word-level tokenizer for the Hub tests (test_hub_push, test_hub_card, test_cli_push)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from alignez_hf import AlignEZForCausalLM

BASE_REPO = "user/tiny-base"
PACK_REPO = "user/tiny-cheerful"
PROMPT = "w5 w6 w7 w8"
NEW_TOKENS = 6


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A 256-word tokenizer ("w0".."w251") so pipeline() and the pack's tokenizer files work offline."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{f"w{i}": 4 + i for i in range(252)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_pack(base, tokenizer, strength: float) -> AlignEZForCausalLM:
    """A one-axis ``cheerful`` pack on ``base`` with fixed random directions, recording BASE_REPO as its base."""
    model = AlignEZForCausalLM.from_base(base, tokenizer, base_model_name_or_path=BASE_REPO)
    generator = torch.Generator().manual_seed(0)
    directions = {1: 4 * torch.randn(2, 32, generator=generator), 2: 4 * torch.randn(32, generator=generator)}
    model.add_axis("cheerful", directions, strength=strength, positive="cheerful", negative="gloomy")
    return model.eval()
