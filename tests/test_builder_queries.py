import json

import pytest

from alignez_hf.builder.queries import load_queries, truncate_queries


def test_txt_jsonl_and_csv(tmp_path):
    (tmp_path / "q.txt").write_text("first\n\n  second  \n")
    assert load_queries(tmp_path / "q.txt") == ["first", "second"]
    (tmp_path / "q.jsonl").write_text(json.dumps({"query": "a"}) + "\n" + json.dumps({"prompt": "b"}) + "\n")
    assert load_queries(tmp_path / "q.jsonl") == ["a", "b"]
    (tmp_path / "q.csv").write_text('id,text\n1,"hello, world"\n2,bye\n')
    assert load_queries(tmp_path / "q.csv", column="text") == ["hello, world", "bye"]
    assert load_queries(tmp_path / "q.txt", max_queries=1) == ["first"]


def test_empty_missing_and_unreadable_files_give_clear_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("\n   \n")
    with pytest.raises(ValueError, match="holds no queries"):
        load_queries(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError):
        load_queries(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match="UTF-8"):
        load_queries(tmp_path / "bin.txt")
    (tmp_path / "bad.jsonl").write_text('{"query": "ok"}\n{"other": 1}\n')
    with pytest.raises(ValueError, match="line 2"):
        load_queries(tmp_path / "bad.jsonl")
    (tmp_path / "q.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        load_queries(tmp_path / "q.csv")


def test_long_queries_are_truncated_with_a_count(smollm2_tokenizer):
    queries = ["short one", "word " * 300, "word " * 50]
    with pytest.warns(UserWarning, match="2 of 3 queries were longer than 40 tokens"):
        out = truncate_queries(queries, smollm2_tokenizer, 40)
    assert out[0] == "short one"
    assert len(smollm2_tokenizer(out[1], add_special_tokens=False)["input_ids"]) <= 40
