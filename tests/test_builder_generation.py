import json

import pytest

from alignez_hf.builder.axes import PRESETS
from alignez_hf.builder.generation import RecordStore, SamplingSettings, generate_texts, self_generate
from alignez_hf.chat import chat_prompt

GREEDY = SamplingSettings(do_sample=False)


def test_batched_left_padded_generation_matches_one_at_a_time(tiny_chat_llama):
    model, tok = tiny_chat_llama
    texts = [chat_prompt(tok, q) for q in ["hi", "a much longer question about many things"]]
    batched = generate_texts(model, tok, texts, 5, GREEDY, batch_size=2)
    single = [generate_texts(model, tok, [t], 5, GREEDY, batch_size=1)[0] for t in texts]
    assert batched == single
    assert tok.padding_side == "right"  # restored


def test_sampling_is_seeded(tiny_chat_llama):
    model, tok = tiny_chat_llama
    texts = [chat_prompt(tok, "hello")]
    sampled = SamplingSettings(do_sample=True, temperature=1.0, top_p=1.0)
    assert generate_texts(model, tok, texts, 6, sampled, seed=3) == generate_texts(
        model, tok, texts, 6, sampled, seed=3
    )


def test_records_are_written_as_produced_and_a_rerun_resumes(tmp_path, tiny_chat_llama):
    model, tok = tiny_chat_llama
    path = tmp_path / "self_generated.jsonl"
    queries = ["one", "two", "three", "four"]
    run = dict(answer_tokens=3, characteristics_tokens=2, batch_size=2, progress=False)
    self_generate("paper", model, tok, PRESETS["harmless"], queries[:2], RecordStore(path), GREEDY, **run)
    first = path.read_text().splitlines()
    assert len(first) == 2
    record = json.loads(first[0])
    assert record["query"] == "one" and set(record["answers"]) == {"positive", "negative"}
    assert set(record["characteristics"]) == {"positive", "negative"}
    # An interrupted write leaves half a line behind; the rerun skips it and regenerates only what is missing.
    with open(path, "a") as fh:
        fh.write('{"key": "cut sho')
    with pytest.warns(UserWarning, match="dropped 1 unreadable line"):
        store = RecordStore(path)
    records = self_generate("paper", model, tok, PRESETS["harmless"], queries, store, GREEDY, **run)
    lines = path.read_text().splitlines()
    assert lines[:2] == first
    assert [r["query"] for r in records] == queries
    assert len(lines) == 4 and all(json.loads(line)["key"] for line in lines)
    # Nothing left to do: a third run generates nothing and appends nothing.
    size = path.stat().st_size
    self_generate("paper", model, tok, PRESETS["harmless"], queries, RecordStore(path), GREEDY, **run)
    assert path.stat().st_size == size


def test_changed_settings_are_not_reused(tmp_path, tiny_chat_llama):
    model, tok = tiny_chat_llama
    path = tmp_path / "r.jsonl"
    base = dict(answer_tokens=2, batch_size=2, progress=False)
    self_generate("persona", model, tok, PRESETS["cheerful"], ["q"], RecordStore(path), GREEDY, **base)
    self_generate(
        "persona", model, tok, PRESETS["cheerful"], ["q"], RecordStore(path), GREEDY, **{**base, "answer_tokens": 3}
    )
    assert len(path.read_text().splitlines()) == 2


def test_tokens_are_counted(tiny_chat_llama):
    from alignez_hf.builder.generation import GenerationStats

    model, tok = tiny_chat_llama
    stats = GenerationStats()
    generate_texts(model, tok, [chat_prompt(tok, "x")] * 3, 4, GREEDY, batch_size=3, stats=stats)
    assert stats.prompts == 3 and 3 <= stats.new_tokens <= 12 and stats.tokens_per_second > 0
