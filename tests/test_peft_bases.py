"""Bases that are PEFT adapters: steering a PeftModel, packs that record base + adapter, and loads that rebuild it.

Real peft LoRA adapters on tiny random Llamas (word-level tokenizer of tiny_packs), built, saved and loaded for
real: locally, by repo id from the Hub-shaped test server (in a subprocess: transformers reads HF_ENDPOINT at
import), and in a subprocess where peft cannot be imported.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from peft import LoraConfig, PeftModel, PromptTuningConfig, get_peft_model
from tiny_models import make_tiny_llama
from tiny_packs import NEW_TOKENS, PROMPT, tiny_tokenizer
from transformers import AutoModelForCausalLM, LlamaForCausalLM, pipeline

from alignez_hf import AlignEZConfig, AlignEZForCausalLM, BaseModelError
from alignez_hf.cli import main
from alignez_hf.vllm.pack import unsupported

pytest_plugins = ["hub_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:Axis .*(likely to do nothing|separate barely)", "ignore::FutureWarning")

IDS = torch.tensor([[9, 10, 11, 12, 13]])
BASE_REPO, ADAPTER_REPO, PACK_REPO = "user/tiny-base", "user/tiny-adapter", "user/tiny-adapter-cheerful"
QUERIES = "w5 w6 w7\nw8 w9 w10 w11\nw12 w13\nw14 w15 w16\n"
# Poles the word-level tokenizer knows: its persona prompts differ in one token (cheerful/gloomy would both be <unk>).
BUILD = ["--axis", "cheerful=w100,w200", "--check-queries", "0", "--orient-queries", "0", "--max-new-tokens", "3"]
# In a child process, `import alignez_hf` fails (and find_spec finds nothing), as on a machine with transformers and
# peft only, where a pack runs as remote code; `sys.modules["peft"] = None` does the same for peft.
BLOCK_ALIGNEZ = 'import sys\nsys.modules["alignez_hf"] = None\n'


def lora(base, seed: int):
    """A LoRA adapter with random (non-zero) weights on q, v and the MLP's down projection of ``base``."""
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    return get_peft_model(base, config).eval()


def logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def stack(base_dir, adapter_dir):
    """The base folder with the adapter folder on top, loaded with plain transformers + peft (the reference)."""
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()


def generated_text(model, tokenizer=None) -> str:
    """pipeline()'s greedy text for PROMPT."""
    text = pipeline("text-generation", model=model, tokenizer=tokenizer)
    return text(PROMPT, max_new_tokens=NEW_TOKENS, do_sample=False)[0]["generated_text"]


@pytest.fixture
def folders(tmp_path):
    """A tiny base folder, two LoRA adapters saved with peft (adapter_config.json names the base), a query file."""
    base_dir, tokenizer = tmp_path / "tiny-base", tiny_tokenizer()
    make_tiny_llama().save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    adapters = []
    for seed in (1, 2):
        adapter_dir = tmp_path / f"adapter-{seed}"
        lora(AutoModelForCausalLM.from_pretrained(base_dir), seed).save_pretrained(adapter_dir)
        adapters.append(adapter_dir)
    queries = tmp_path / "queries.txt"
    queries.write_text(QUERIES)
    return {"base": base_dir, "adapter": adapters[0], "other": adapters[1], "queries": queries, "tokenizer": tokenizer}


def test_from_base_on_a_peft_model_steers_like_the_merged_model(tiny_llama):
    """Layers are found through the wrapper; the steered stack gives the logits of the same steering on the
    adapter merged into the base (merge_and_unload), and with steering off, the adapter model's own logits."""
    peft_model = lora(copy.deepcopy(tiny_llama), seed=1)
    model = AlignEZForCausalLM.from_base(peft_model, base_adapter_name_or_path="org/tiny-lora")
    assert model.config.layers_path == "model.layers"  # the path inside the transformers model, not the wrapper's
    assert model.config.base_adapter_name_or_path == "org/tiny-lora"
    assert model.config.base_adapter_fingerprint["peft_type"] == "LORA"
    directions = {1: 4 * torch.randn(2, 32), 2: 4 * torch.randn(32)}
    model.add_axis("cheerful", directions, strength=1.5)

    merged = AlignEZForCausalLM.from_base(copy.deepcopy(peft_model).merge_and_unload())
    assert "base_adapter_fingerprint" not in merged.config.to_dict()
    tensors = model.axis_tensors("cheerful")
    merged.add_axis("cheerful", tensors["directions"], scales=tensors["scales"], strength=1.5)

    steered = logits(model)
    assert torch.allclose(steered, logits(merged), atol=1e-5)
    with model.steering_disabled():
        assert torch.allclose(logits(model), logits(peft_model), atol=1e-6)
    assert not torch.allclose(logits(peft_model), logits(tiny_llama), atol=1e-3), "the adapter must change the model"
    assert not torch.allclose(steered, logits(peft_model), atol=1e-3), "steering must show"
    # generate() of the wrapper runs the inner model's: the edits must still find each row's last real token.
    padded = torch.tensor([[9, 10, 11, 12, 13], [9, 10, 11, 0, 0]])
    greedy = {"attention_mask": (padded != 0).long(), "max_new_tokens": NEW_TOKENS, "do_sample": False}
    assert model.generate(padded, **greedy).tolist() == merged.generate(padded, **greedy).tolist()

    # Folding the pack into weights folds the adapter too: one plain checkpoint (one token: every position is last).
    one = IDS[:, :1]
    expected = logits(model, one)
    plain = model.merge_and_unload()
    assert type(plain) is LlamaForCausalLM and torch.allclose(logits(plain, one), expected, atol=1e-5)


def test_build_on_an_adapter_folder_records_and_rebuilds_the_stack(folders, tmp_path):
    """`alignez build --base ADAPTER` steers base + adapter and records both; from_pretrained, the Auto class and
    pipeline() rebuild the same stack (the remote code does too: test_build_push_and_load_by_repo_id)."""
    out = tmp_path / "pack"
    assert main(["build", "--base", str(folders["adapter"]), "--queries", str(folders["queries"]), "--out", str(out),
                 *BUILD]) == 0  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["base_model_name_or_path"] == str(folders["base"])
    assert config["base_adapter_name_or_path"] == str(folders["adapter"])
    assert config["base_adapter_revision"] is None  # a local folder has no revision
    assert config["base_adapter_fingerprint"]["peft_type"] == "LORA"

    reference_stack = stack(folders["base"], folders["adapter"])
    reference = AlignEZForCausalLM.from_pretrained(out, base_model=reference_stack)
    expected = logits(reference)
    assert not torch.allclose(expected, logits(reference_stack), atol=1e-4), "steering must show"

    model = AlignEZForCausalLM.from_pretrained(out)
    assert isinstance(model.base, PeftModel) and torch.allclose(logits(model), expected, atol=1e-5)
    with model.steering_disabled():
        assert torch.allclose(logits(model), logits(reference_stack), atol=1e-6)
    auto = AutoModelForCausalLM.from_pretrained(out)
    assert type(auto) is AlignEZForCausalLM and torch.allclose(logits(auto), expected, atol=1e-5)
    assert generated_text(str(out)) == generated_text(reference, folders["tokenizer"])


def test_a_different_or_missing_adapter_is_refused(folders, tmp_path):
    """Another adapter, no adapter, an adapter that is gone, an adapter on a pack built without one: each refused
    with an error naming both sides. So are a bundle of a PEFT stack, an adapter that transformers injected, a
    prompt-learning adapter and a malformed fingerprint."""
    out = tmp_path / "pack"
    model = AlignEZForCausalLM.from_base(stack(folders["base"], folders["adapter"]), folders["tokenizer"],
                                         base_adapter_name_or_path=str(folders["adapter"]))  # fmt: skip
    model.add_axis("cheerful", {1: torch.randn(32)})
    model.save_pretrained(out)
    digest = model.config.base_adapter_fingerprint["weights_sha256"][:12]

    with pytest.raises(BaseModelError, match="different adapter") as err:
        AlignEZForCausalLM.from_pretrained(out, base_adapter_name_or_path=str(folders["other"]))
    assert str(folders["adapter"]) in str(err.value) and str(folders["other"]) in str(err.value)
    with pytest.raises(BaseModelError, match="different adapter") as err:
        AlignEZForCausalLM.from_pretrained(out, base_model=stack(folders["base"], folders["other"]))
    assert digest in str(err.value) and str(folders["adapter"]) in str(err.value)
    with pytest.raises(BaseModelError, match="carries no PEFT adapter") as err:
        AlignEZForCausalLM.from_pretrained(out, base_model=AutoModelForCausalLM.from_pretrained(folders["base"]))
    assert str(folders["adapter"]) in str(err.value) and str(folders["base"]) in str(err.value)

    shutil.move(folders["adapter"], tmp_path / "moved")
    with pytest.raises(BaseModelError, match="Could not load the PEFT adapter") as err:
        AlignEZForCausalLM.from_pretrained(out)
    assert str(folders["adapter"]) in str(err.value) and "base_adapter_name_or_path=" in str(err.value)
    moved = AlignEZForCausalLM.from_pretrained(out, base_adapter_name_or_path=str(tmp_path / "moved"))
    assert moved.config.base_adapter_name_or_path == str(folders["adapter"])  # the override is not recorded

    plain = AlignEZForCausalLM.from_base(AutoModelForCausalLM.from_pretrained(folders["base"]))
    plain.add_axis("cheerful", {1: torch.randn(32)})
    plain.save_pretrained(tmp_path / "plain")
    with pytest.raises(BaseModelError, match="without a PEFT adapter") as err:
        AlignEZForCausalLM.from_pretrained(tmp_path / "plain", base_model=stack(folders["base"], folders["other"]))
    assert str(folders["other"]) not in str(err.value) and "LORA adapter" in str(err.value)

    with pytest.raises(ValueError, match="include_base=True"):
        model.save_pretrained(tmp_path / "bundle", include_base=True)
    assert "PEFT adapter" in unsupported(model.config)  # vLLM would serve the base without it
    injected = AutoModelForCausalLM.from_pretrained(folders["base"])
    injected.load_adapter(str(folders["other"]))  # transformers' own integration: not a PeftModel
    with pytest.raises(ValueError, match="PeftModel.from_pretrained"):
        AlignEZForCausalLM.from_base(injected)
    prompt_tuning = get_peft_model(AutoModelForCausalLM.from_pretrained(folders["base"]), PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=2))  # fmt: skip
    with pytest.raises(ValueError, match="virtual tokens"):
        AlignEZForCausalLM.from_base(prompt_tuning)
    with pytest.raises(ValueError, match="weights_sha256"):
        AlignEZConfig(base_adapter_fingerprint={"peft_type": "LORA", "weights_sha256": "not hex"})


def _run_child(code: str, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env or os.environ.copy(), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_build_push_and_load_by_repo_id(folders, hub_env, hub_server, tmp_path):
    """Base and adapter on the Hub: `alignez build --base org/adapter` records both, the adapter at its commit; the
    pushed pack loads by repo id (class, Auto class, pipeline) onto the same stack; its card names both."""
    api = HfApi(endpoint=hub_server.url)
    hub_adapter = tmp_path / "hub-adapter"
    shutil.copytree(folders["adapter"], hub_adapter)
    adapter_config = json.loads((hub_adapter / "adapter_config.json").read_text())
    (hub_adapter / "adapter_config.json").write_text(
        json.dumps({**adapter_config, "base_model_name_or_path": BASE_REPO})
    )
    for repo, folder in ((BASE_REPO, folders["base"]), (ADAPTER_REPO, hub_adapter)):
        api.create_repo(repo)
        api.upload_folder(repo_id=repo, folder_path=folder)
    out = tmp_path / "pack"
    code = textwrap.dedent(
        f"""
        import json, torch
        from alignez_hf import AlignEZForCausalLM
        from alignez_hf.cli import main
        from alignez_hf.hub import push_pack
        from transformers import AutoModelForCausalLM, pipeline

        def logits(model):
            with torch.no_grad():
                return model(input_ids=torch.tensor({IDS.tolist()})).logits.tolist()

        def error_of(load):
            try:
                load()
            except Exception as err:
                return [type(err).__name__, str(err)]

        assert main(["build", "--base", {ADAPTER_REPO!r}, "--queries", {str(folders["queries"])!r},
                     "--out", {str(out)!r}, *{BUILD!r}]) == 0
        push_pack({str(out)!r}, {PACK_REPO!r})
        push_pack({str(out)!r}, "user/orphan", base_adapter_id="user/deleted-adapter",
                  base_adapter_revision="0" * 40)
        text = pipeline("text-generation", model={PACK_REPO!r})({PROMPT!r}, max_new_tokens={NEW_TOKENS},
                                                                do_sample=False)
        print(json.dumps({{
            "direct": logits(AlignEZForCausalLM.from_pretrained({PACK_REPO!r})),
            "auto": logits(AutoModelForCausalLM.from_pretrained({PACK_REPO!r})),
            "pipeline": text[0]["generated_text"],
            "orphan": error_of(lambda: AlignEZForCausalLM.from_pretrained("user/orphan")),
        }}))
        """
    )
    out_json = _run_child(code)
    config = json.loads((out / "config.json").read_text())
    assert config["base_model_name_or_path"] == BASE_REPO and config["base_adapter_name_or_path"] == ADAPTER_REPO
    assert config["base_adapter_revision"] == hub_server.head(ADAPTER_REPO)  # the commit it was built on
    pushed = json.loads(hub_server.get_file(PACK_REPO, "config.json"))
    assert (pushed["base_model_name_or_path"], pushed["base_model_revision"]) == (BASE_REPO, hub_server.head(BASE_REPO))
    assert (pushed["base_adapter_name_or_path"], pushed["base_adapter_revision"]) == (
        ADAPTER_REPO,
        hub_server.head(ADAPTER_REPO),
    )

    reference = AlignEZForCausalLM.from_pretrained(out, base_model=stack(folders["base"], folders["adapter"]))
    expected = logits(reference)
    for key in ("direct", "auto"):
        assert torch.allclose(torch.tensor(out_json[key]), expected, atol=1e-5), key
    assert out_json["pipeline"] == generated_text(reference, folders["tokenizer"])
    kind, message = out_json["orphan"]
    assert kind == "BaseModelError" and "user/deleted-adapter" in message and "base_adapter_name_or_path=" in message

    card = ModelCard.load(PACK_REPO)
    assert card.data.base_model == BASE_REPO and card.data.base_adapter == ADAPTER_REPO
    assert hub_server.head(ADAPTER_REPO) in card.text and f"https://huggingface.co/{ADAPTER_REPO}" in card.text


def test_push_refuses_a_local_adapter_without_a_hub_id(folders, hub_server):
    model = AlignEZForCausalLM.from_base(stack(folders["base"], folders["adapter"]), base_model_name_or_path=BASE_REPO,
                                         base_adapter_name_or_path=str(folders["adapter"]))  # fmt: skip
    model.add_axis("cheerful", {1: torch.randn(32)})
    from alignez_hf.hub import push_pack

    with pytest.raises(ValueError, match=r"local folder .*adapter-1.*base_adapter_id="):
        push_pack(model, "user/refused", base_model_revision="0" * 40, endpoint=hub_server.url, token="hf_test")
    assert not HfApi(endpoint=hub_server.url).repo_exists("user/refused")


def test_remote_code_with_and_without_peft(folders, tmp_path):
    """Without alignez_hf, a pack's own runtime files rebuild the adapter stack. Where peft cannot be imported, a
    pack without an adapter loads (as remote code and with the library), and a pack that names one, or a build on
    an adapter, fails with an error naming the extra to install."""
    adapter_pack, plain_pack = tmp_path / "adapter-pack", tmp_path / "plain-pack"
    model = AlignEZForCausalLM.from_base(stack(folders["base"], folders["adapter"]), folders["tokenizer"],
                                         base_adapter_name_or_path=str(folders["adapter"]))  # fmt: skip
    model.add_axis("cheerful", {1: torch.randn(32)}, strength=4.0)
    model.save_pretrained(adapter_pack)
    shutil.copytree(adapter_pack, tmp_path / "adapter-pack-copy")  # a fresh remote module, imported without peft
    plain = AlignEZForCausalLM.from_base(AutoModelForCausalLM.from_pretrained(folders["base"]), folders["tokenizer"])
    plain.add_axis("cheerful", {1: torch.randn(32)})
    plain.save_pretrained(plain_pack)
    code = BLOCK_ALIGNEZ + textwrap.dedent(
        f"""
        import contextlib, io, json, sys, torch
        from transformers import AutoModelForCausalLM

        def error_of(load):
            try:
                load()
            except Exception as err:
                return [type(err).__name__, str(err)]

        out = {{}}
        remote = AutoModelForCausalLM.from_pretrained({str(adapter_pack)!r}, trust_remote_code=True)
        with torch.no_grad():
            out["stack"] = remote(input_ids=torch.tensor({IDS.tolist()})).logits.tolist()
        out["stack_classes"] = [type(remote).__module__, type(remote.base).__name__]

        sys.modules["peft"] = None  # from here on, as where peft is not installed
        out["remote_plain"] = type(AutoModelForCausalLM.from_pretrained({str(plain_pack)!r},
                                                                        trust_remote_code=True)).__module__
        out["remote_adapter"] = error_of(lambda: AutoModelForCausalLM.from_pretrained(
            {str(tmp_path / "adapter-pack-copy")!r}, trust_remote_code=True))

        del sys.modules["alignez_hf"]  # the library, also without peft
        from alignez_hf import AlignEZForCausalLM
        from alignez_hf.cli import main

        out["plain"] = type(AlignEZForCausalLM.from_pretrained({str(plain_pack)!r}).base).__name__
        out["adapter"] = error_of(lambda: AlignEZForCausalLM.from_pretrained({str(adapter_pack)!r}))
        with contextlib.redirect_stderr(io.StringIO()) as printed:
            code = main(["build", "--base", {str(folders["adapter"])!r}, "--queries", {str(folders["queries"])!r},
                         "--out", {str(tmp_path / "never")!r}, *{BUILD!r}])
        out["build"] = [code, printed.getvalue()]
        print(json.dumps(out))
        """
    )
    out = _run_child(code)
    module, base_class = out["stack_classes"]
    assert module.startswith("transformers_modules.") and base_class == "PeftModelForCausalLM"
    assert torch.allclose(torch.tensor(out["stack"]), logits(model), atol=1e-5)
    assert out["remote_plain"].startswith("transformers_modules.") and out["plain"] == "LlamaForCausalLM"
    for key, pack in (("remote_adapter", tmp_path / "adapter-pack-copy"), ("adapter", adapter_pack)):
        kind, message = out[key]
        assert kind == "ModuleNotFoundError" and 'pip install "alignez-hf[train]"' in message, out[key]
        assert str(pack) in message
    code, printed = out["build"]
    assert code == 2 and 'pip install "alignez-hf[train]"' in printed and not (tmp_path / "never").exists()
