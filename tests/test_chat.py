"""The one chat format of the package (alignez_hf/chat.py)."""

import copy
import logging

import torch

from alignez_hf.chat import chat_prompt, encode, encode_chats, padding


def test_plain_format_without_chat_template(tiny_chat_llama, caplog):
    _, tok = tiny_chat_llama
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    with caplog.at_level(logging.WARNING):
        text = chat_prompt(plain, "What is rain?", system="You are an extremely cheerful assistant.")
    assert text == "You are an extremely cheerful assistant.\n\nUser: What is rain?\nAssistant:"
    assert "no chat template" in caplog.text


def test_chat_template_is_used_when_present(tiny_chat_llama):
    _, tok = tiny_chat_llama
    text = chat_prompt(tok, "What is rain?", system="Be brief.")
    assert text == tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is rain?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    # the template writes its own special tokens: encoding adds none
    assert encode(tok, text) == tok(text, add_special_tokens=False)["input_ids"]


def test_encode_chats_pads_on_the_side_asked_and_restores_the_tokenizer(tiny_chat_llama):
    _, tok = tiny_chat_llama
    side = tok.padding_side
    left = encode_chats(tok, ["hi", "a much longer question about many things"])
    right = encode_chats(tok, ["hi", "a much longer question about many things"], side="right")
    assert bool(left["attention_mask"][:, -1].all()) and not bool(left["attention_mask"][:, 0].all())
    assert bool(right["attention_mask"][:, 0].all()) and not bool(right["attention_mask"][:, -1].all())
    assert torch.equal(left["attention_mask"].sum(1), right["attention_mask"].sum(1))
    assert tok.padding_side == side


def test_padding_gives_a_pad_token_for_the_block_only(tiny_chat_llama):
    _, tok = tiny_chat_llama
    bare = copy.deepcopy(tok)
    bare.pad_token = None
    with padding(bare, "left"):
        assert bare.pad_token == bare.eos_token and bare.padding_side == "left"
    assert bare.pad_token is None
