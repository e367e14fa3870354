"""``alignez pairs``: a pack's self-generated answer pairs as preference data that datasets and TRL take as they are.

Packs are built for real (``persona_answers`` on tiny random models, a few tokens per answer); the conversational
file trains TRL's real ``DPOTrainer`` (LoRA through peft) for two steps.
"""

from __future__ import annotations

import json
import math

import pytest
from datasets import load_dataset
from peft import LoraConfig
from tiny_models import make_tiny_llama
from tiny_packs import tiny_tokenizer
from trl import DPOConfig, DPOTrainer

from alignez_hf.builder import RECORDS_FILE
from alignez_hf.builder.pairs import preference_rows
from alignez_hf.cli import main

pytest_plugins = ["hub_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:Axis .*(likely to do nothing|separate barely)", "ignore::FutureWarning")

# A chat template the word-level tokenizer can read: turns as "<s> w1 content </s>" (w1: user, w2: assistant).
CHAT_TEMPLATE = (
    "{% for m in messages %}<s> {{ {'system': 'w0', 'user': 'w1', 'assistant': 'w2'}[m['role']] }} {{ m['content'] }} "
    "</s> {% endfor %}{% if add_generation_prompt %}<s> w2 {% endif %}"
)
BUILD = ["--check-queries", "0", "--orient-queries", "0", "--max-new-tokens", "4", "--strategy", "persona_answers"]


def build(tmp_path, model, tokenizer, queries: str, axis: str, *extra: str):
    """Save ``model`` and ``tokenizer`` as a base folder and build a pack on it with `alignez build`."""
    base, out, query_file = tmp_path / "base", tmp_path / "pack", tmp_path / "queries.txt"
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    query_file.write_text(queries)
    argv = ["build", "--base", str(base), "--queries", str(query_file), "--out", str(out), "--axis", axis]
    assert main([*argv, *BUILD, *extra]) == 0
    return out


def test_chat_pack_pairs_train_trl_dpo(tmp_path, capsys):
    """With a chat template the pairs are conversational; datasets loads them and DPOTrainer trains on them."""
    model, tokenizer = make_tiny_llama(), tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    queries = "w5 w6 w7\nw8 w9 w10 w11\nw12 w13\nw14 w15 w16\n"
    pack = build(tmp_path, model, tokenizer, queries, "up=w100,w200")
    records = [json.loads(line) for line in (pack / RECORDS_FILE).read_text().splitlines()]
    out = tmp_path / "data" / "pairs.jsonl"
    assert main(["pairs", str(pack), "--out", str(out)]) == 0
    assert "conversational preference pairs" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    kept = [r for r in records if r["answers"]["positive"].strip() != r["answers"]["negative"].strip()]
    assert len(rows) == len(kept) > 0 and not list(out.parent.glob(".*"))  # no temporary file left behind
    first, record = rows[0], kept[0]
    assert first["prompt"] == [{"role": "user", "content": record["query"]}]
    assert first["chosen"] == [{"role": "assistant", "content": record["answers"]["positive"]}]
    assert first["rejected"] == [{"role": "assistant", "content": record["answers"]["negative"]}]

    dataset = load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "datasets"))
    assert dataset.column_names == ["prompt", "chosen", "rejected"] and len(dataset) == len(rows)
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=2,
        per_device_train_batch_size=2,
        max_length=64,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    result = trainer.train()
    assert trainer.state.global_step == 2 and math.isfinite(result.training_loss)
    steps = [log for log in trainer.state.log_history if "loss" in log]
    assert len(steps) == 2 and all(math.isfinite(log["loss"]) and "rewards/margins" in log for log in steps)


def test_pairs_without_a_chat_template_are_plain_text(tmp_path, capsys):
    """A word-level tokenizer with no chat template: standard (string) rows in the build's User:/Assistant: format;
    --axis picks one axis of several; an axis the pack lacks is refused."""
    queries = "w5 w6 w7\nw8 w9\nw10 w11 w12\n"
    pack = build(tmp_path, make_tiny_llama(), tiny_tokenizer(), queries, "up=w100,w200", "--axis", "down=w150,w250")
    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", str(pack), "--out", str(out), "--axis", "up"]) == 0
    assert "standard preference pairs" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    records = [json.loads(line) for line in (pack / RECORDS_FILE).read_text().splitlines()]
    up = [r for r in records if r["axis"] == "up" and r["answers"]["positive"] != r["answers"]["negative"]]
    assert len(rows) == len(up) > 0
    assert rows[0] == {
        "prompt": f"User: {up[0]['query']}\nAssistant:",
        "chosen": f" {up[0]['answers']['positive']}",
        "rejected": f" {up[0]['answers']['negative']}",
    }
    dataset = load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "datasets"))
    assert dataset.features["prompt"].dtype == "string"
    assert main(["pairs", str(pack), "--out", str(out), "--axis", "sideways"]) == 2
    assert "['down', 'up']" in capsys.readouterr().err


def test_pairs_refuses_a_pack_without_answers(tmp_path, capsys):
    """The default strategy generates no answers: the error says which strategies record them; nothing written."""
    pack = tmp_path / "pack"
    queries = tmp_path / "queries.txt"
    queries.write_text("w5 w6\nw7 w8\n")
    base = tmp_path / "base"
    make_tiny_llama().save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    argv = ["build", "--base", str(base), "--queries", str(queries), "--out", str(pack), "--axis", "up=w100,w200"]
    assert main([*argv, "--check-queries", "0", "--orient-queries", "0"]) == 0
    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", str(pack), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert RECORDS_FILE in err and "persona_answers" in err and "paper" in err and not out.exists()


def test_preference_rows_skip_what_teaches_nothing():
    records = [
        {"axis": "a", "query": "q1", "answers": {"positive": "yes!", "negative": "no."}},
        {"axis": "a", "query": "q2", "answers": {"positive": "same", "negative": "same "}},
        {"axis": "a", "query": "q3", "answers": {"positive": "", "negative": "no."}},
        {"axis": "a", "query": "q4", "answers": None},
    ]
    rows, skipped = preference_rows(records, form="conversational")
    assert skipped == 3 and [r["prompt"][0]["content"] for r in rows] == ["q1"]
    with pytest.raises(ValueError, match="form must be one of"):
        preference_rows(records, form="chatml")


def test_pairs_from_a_pushed_pack_by_repo_id(hub_server, hub_env, tmp_path, capsys):
    """A pushed pack carries its records: `alignez pairs REPO` downloads them (pinned by --revision) and writes the
    same rows as from the folder; a repo pushed without records gets the strategies hint."""
    from huggingface_hub import HfApi
    from tiny_packs import BASE_REPO

    model, tokenizer = make_tiny_llama(), tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    pack = build(tmp_path, model, tokenizer, "w5 w6 w7\nw8 w9 w10\nw12 w13\n", "up=w100,w200")
    api = HfApi(endpoint=hub_server.url)
    api.create_repo(BASE_REPO)
    hub_server.put_file(BASE_REPO, "config.json", model.config.to_json_string().encode())
    push = ["push", str(pack), "user/pairs-pack", "--base-model-id", BASE_REPO, "--endpoint", hub_server.url]
    assert main(push) == 0
    first = api.list_repo_commits("user/pairs-pack")[0].commit_id
    local, remote = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    assert main(["pairs", str(pack), "--out", str(local)]) == 0
    assert main(["pairs", "user/pairs-pack", "--revision", first, "--out", str(remote)]) == 0
    assert "conversational preference pairs" in capsys.readouterr().out
    assert remote.read_text() == local.read_text() and local.read_text()
    (pack / RECORDS_FILE).unlink()
    assert main([*push[:2], "user/no-records", *push[3:]]) == 0
    assert main(["pairs", "user/no-records", "--out", str(tmp_path / "none.jsonl")]) == 2
    assert "persona_answers" in capsys.readouterr().err and not (tmp_path / "none.jsonl").exists()
