"""Hostile text in a pack's model card: pack values that break YAML or markdown, and hostile README.md files.

A pack's config is data written by whoever built the pack. Rendered into a card, each value must come back out of
the YAML front matter exactly as it went in (no injected keys, no broken front matter), and in the markdown body it
must stay inert text on its own line of the template (no new lines, table cells, links, HTML or code). A README.md
in a pack folder is never parsed by loading (tests/test_runtime_hostile.py); ``push`` reads it with PyYAML's safe
loader only, and replaces one it cannot push as is. Pushes go to tests/hub_server.py on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from tiny_packs import BASE_REPO, PACK_REPO, tiny_pack, tiny_tokenizer

from alignez_hf import PackError
from alignez_hf.hub import CARD_MARKER, CARD_TAGS, push_pack, render_model_card, write_model_card
from alignez_hf.hub.card import MAX_CARD_BYTES

pytest_plugins = ["hub_fixtures"]

HOSTILE = {
    "front-matter-end": "calm\n---\nlicense: evil\n---\n# Owned",
    "dashes": "---",
    "key-value": "mood: happy # a comment",
    "quotes": "it's \"quoted\" 'twice'",
    "python-tag": '!!python/object/apply:os.system ["echo hi"]',
    "anchor-alias": "&a [*a, *a]",
    "crlf-front-matter-end": "x\r\n---\r\nlicense: evil\r\n",
    "unicode-line-breaks": "a\u2028---\u2029b\x85---",
    "code-fence": "```\nimport os\n```",
    "html": '<script>alert(1)</script><img src=x onerror="alert(1)">',
    "table-cell": "a | b | c",
    "link": "[click](javascript:alert(1)) ![x](http://evil/x.png)",
    "template-placeholder": "$card_data ${title}",
    "nul-and-controls": "a\x00b\x1bc\x7f",
    "lone-surrogate": "a\ud800b",
    "long": "word " * 5000,
}


def _config(text: str) -> dict:
    """A pack config with ``text`` in every free-text field the card shows."""
    return {
        "base_model_name_or_path": "org/base",
        "axes": [
            {
                "name": "cheerful", "rule": "additive", "strength": 2.0, "layers": [1], "rank": {"1": 2},
                "positive": text, "negative": text, "strategy": text,
                "build": {
                    "queries": text, "warnings": [text, text],
                    "orientation": {"behaviour": text, "queries": text, "strength": text, "decided": True},
                    "gate": {"added": True, "threshold": text, "queries": 3, "refused": text, "auc": text,
                             "fires_refused": text, "fires_answered": 0.5},
                    "subspace_cosine_mean": {text: 0.5, "other": text},
                },
            }
        ],
        "evaluation": {"rows": [{"setting": text, "n": 3, text: [0.5, 0.1, text]}], text: text, "seed": text},
    }  # fmt: skip


def _split(card: ModelCard) -> tuple[dict, str]:
    text = str(card)
    match = REGEX_YAML_BLOCK.search(text)
    assert match is not None and match.start() == 0, text[:300]
    return yaml.safe_load(match.group(2)), text[match.end() :]


def _unescaped(char: str, text: str) -> int:
    """How often ``char`` appears unescaped outside code spans (inside one, text is literal)."""
    outside = re.sub(r"(?<!\\)`[^`\n]*`", "", text.split("```python")[0])
    return len(re.findall(rf"(?<!\\){re.escape(char)}", outside))


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_pack_text_renders_as_inert_text(case, tmp_path):
    text = HOSTILE[case]
    benign = render_model_card(_config("calm"), base_model_id="org/base", base_model_revision="r1", license="mit")
    card = render_model_card(_config(text), base_model_id="org/base", base_model_revision=text, license=text)
    local = render_model_card({**_config(text), "base_model_name_or_path": f"/models/{text}"})
    (meta, body), (benign_meta, benign_body) = _split(card), _split(benign)
    # The front matter reads back to exactly the intended values, with our reader and huggingface_hub's.
    assert meta == {**benign_meta, "license": text} == ModelCard(str(card)).data.to_dict()
    assert _split(local)[0] == {k: v for k, v in benign_meta.items() if k not in ("base_model", "license")}
    for rendered, reference in ((body, benign_body), (_split(local)[1], benign_body)):
        # Same lines as the benign card: nothing started a line, a block, or a second front matter.
        assert len(rendered.splitlines()) == len(reference.splitlines())
        assert not any(line.startswith("---") for line in rendered.splitlines())
        for char in "|<>[]`":
            assert _unescaped(char, rendered) == _unescaped(char, reference), char
        assert "```python" in rendered and rendered.count("```") == reference.count("```")
        row = next(line for line in rendered.splitlines() if line.startswith("| `cheerful`"))
        assert len(re.findall(r"(?<!\\)\|", row)) == 7, row  # six cells: the table keeps its shape
    path = write_model_card(_config(text), tmp_path, "org/base", base_model_revision=text, license=text)
    assert ModelCard.load(path).data.license == text  # saved as UTF-8 and read back by huggingface_hub


def test_an_axis_name_from_a_raw_config_cannot_reach_the_code_example():
    """Axis names are checked when a config loads; the card does not rely on it for the Python example."""
    name = 'x": 1}); import os; os.system("echo owned"); print({"'
    config = _config("calm")
    config["axes"][0]["name"] = name
    _, body = _split(render_model_card(config))
    assert 'steering={"axis": ' in body and "os.system" not in body.split("```python")[1]
    assert '| `x": 1}); import os; os.system("echo owned"); print({"` |' in body


# ---------------------------------------------------------------------------------------------- push
HOSTILE_CARDS = {
    "python-object-tag": "---\nlicense: !!python/object/apply:os.system ['touch {marker}']\n---\n# mine\n",
    "custom-tag": "---\nlicense: !evil {a: 1}\n---\n",
    "billion-laughs": "---\na: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    + "---\n",
    "broken-yaml": "---\nlicense: [unclosed\n: : :\n---\n",
    "not-a-mapping": "---\n- a\n- b\n---\n",
    "too-large": "---\nlicense: mit\n---\n" + "x" * (MAX_CARD_BYTES + 1),
}


@pytest.fixture
def pack_folder(hub_server, hub_env, tmp_path, tiny_llama):
    """A saved tiny pack whose base repo exists on the test Hub."""
    HfApi(endpoint=hub_server.url).create_repo(BASE_REPO)
    hub_server.put_file(BASE_REPO, "config.json", tiny_llama.config.to_json_string().encode())
    folder = tmp_path / "pack"
    tiny_pack(tiny_llama, tiny_tokenizer(), strength=1.0).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case", list(HOSTILE_CARDS))
def test_push_replaces_a_hostile_card_without_running_it(pack_folder, hub_server, tmp_path, caplog, case):
    marker = tmp_path / "executed"
    (pack_folder / "README.md").write_text(HOSTILE_CARDS[case].replace("{marker}", str(marker)))
    with caplog.at_level(logging.WARNING, logger="alignez_hf.hub.card"):
        push_pack(pack_folder, PACK_REPO, endpoint=hub_server.url)
    uploaded = hub_server.get_file(PACK_REPO, "README.md").decode()
    assert CARD_MARKER in uploaded and _split(ModelCard(uploaded))[0]["tags"] == CARD_TAGS
    assert "Replacing" in caplog.text and not marker.exists()
    assert (pack_folder / "README.md").read_text().startswith("---")  # the user's folder is untouched


def test_push_keeps_a_plain_user_card(pack_folder, hub_server):
    card = "---\nlicense: mit\ntags: [mine]\n---\n# My card\n"
    (pack_folder / "README.md").write_text(card)
    push_pack(pack_folder, PACK_REPO, endpoint=hub_server.url)
    assert hub_server.get_file(PACK_REPO, "README.md").decode() == card


LINKS_OUT = {
    "card-link-to-a-secret": ("README.md", "link"),
    "data-link-to-a-secret": ("notes.txt", "link"),
    "linked-folder": ("extra", "folder-link"),
    "fifo": ("pipe.jsonl", "fifo"),
}


@pytest.mark.parametrize("case", list(LINKS_OUT))
def test_push_refuses_to_upload_what_is_not_in_the_folder(pack_folder, hub_server, tmp_path, case):
    """A link out of the pack folder would upload its target (here a 'secret'); a pipe would block the copy."""
    name, how = LINKS_OUT[case]
    secret = tmp_path / "secrets"
    secret.mkdir()
    (secret / "id_rsa").write_text("PRIVATE KEY")
    if how == "link":
        os.symlink(secret / "id_rsa", pack_folder / name)
    elif how == "folder-link":
        os.symlink(secret, pack_folder / name)
    else:
        os.mkfifo(pack_folder / name)
    with pytest.raises(ValueError, match=f"{name} is .*pushing would upload what is not part of the pack"):
        push_pack(pack_folder, PACK_REPO, endpoint=hub_server.url)
    assert not HfApi(endpoint=hub_server.url).repo_exists(PACK_REPO)


def test_push_renders_hostile_config_values_inertly_and_refuses_a_malformed_config(pack_folder, hub_server):
    config = json.loads((pack_folder / "config.json").read_text())
    text = HOSTILE["front-matter-end"] + HOSTILE["python-tag"] + HOSTILE["html"]
    config["axes"][0].update(positive=text, negative=text)
    (pack_folder / "config.json").write_text(json.dumps(config))
    push_pack(pack_folder, PACK_REPO, endpoint=hub_server.url)
    meta, body = _split(ModelCard(hub_server.get_file(PACK_REPO, "README.md").decode()))
    assert set(meta) == {"base_model", "library_name", "pipeline_tag", "tags"} and meta["base_model"] == BASE_REPO
    assert not re.search(r"(?<!\\)<script", body) and "\n---\nlicense" not in body
    bad = pack_folder.parent / "bad"
    shutil.copytree(pack_folder, bad)
    config["axes"][0]["name"] = 'x"); import os'
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(PackError, match="config.json of the steering pack .*bad is malformed: Axis names use"):
        push_pack(bad, "user/bad", endpoint=hub_server.url)
