"""Push a steering pack for the embedded SmolLM2 to a Hub, then load it back by repo id.

    HF_ENDPOINT=https://huggingface.co python examples/push_and_load.py --repo-id your-name/smollm2-cheerful
    python examples/push_and_load.py            # no HF_ENDPOINT: starts tests/hub_server.py on 127.0.0.1

The pack is made by hand in a second: the direction from "gloomy" to "cheerful" prompts in SmolLM2's own hidden
states (``alignez build`` does this properly, from model-written persona answers).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHEERFUL = ["Write a cheerful, happy sentence.", "Tell me something joyful and bright.", "Say something upbeat!"]
GLOOMY = ["Write a gloomy, sad sentence.", "Tell me something bleak and dark.", "Say something miserable."]


def start_local_hub() -> subprocess.Popen:
    """Start tests/hub_server.py and point the Hugging Face client at it (before transformers is imported)."""
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "hub_server.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    # The client reads these at import time; a throwaway cache keeps the local repos out of ~/.cache/huggingface.
    os.environ.update(
        HF_ENDPOINT=url,
        HF_HOME=tempfile.mkdtemp(prefix="alignez-example-hf-"),
        HF_HUB_DISABLE_XET="1",
        HF_TOKEN="hf_local_test_server",
    )
    print(f"HF_ENDPOINT is unset: started a local Hub-shaped server at {url} (tests/hub_server.py)")
    return server


def make_pack(max_layers: int = 6):
    """A one-axis pack on the embedded SmolLM2: mean cheerful minus mean gloomy prompt state per middle layer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignez_hf import AlignEZForCausalLM, default_base_model

    path = default_base_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AlignEZForCausalLM.from_base(AutoModelForCausalLM.from_pretrained(path).eval(), tokenizer)
    n = model.config.base_fingerprint["num_hidden_layers"]
    layers = list(range(n // 3, n // 3 + max_layers))

    def states(prompts):
        batch = tokenizer(prompts, return_tensors="pt", padding=True)
        return model.query_embeddings(batch["input_ids"], batch["attention_mask"], layers=layers)

    up, down = states(CHEERFUL), states(GLOOMY)
    # Half the mean difference per layer: strength 1 moves a gloomy prompt's state halfway towards cheerful.
    directions = {layer: 0.5 * (up[layer].mean(0) - down[layer].mean(0)) for layer in layers}
    model.add_axis("cheerful", directions, strength=1.0, positive="cheerful", negative="gloomy")
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    """Push a hand-made pack, load it back by repo id and compare greedy generations."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo-id", default="user/smollm2-cheerful", help="Repo to push to.")
    parser.add_argument("--prompt", default="How was your day?")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args(argv)
    server = None if os.environ.get("HF_ENDPOINT") else start_local_hub()
    try:
        return run(args)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)


def run(args: argparse.Namespace) -> int:
    """The example proper, once HF_ENDPOINT points at a Hub."""
    from huggingface_hub import HfApi

    from alignez_hf import AlignEZForCausalLM

    pack = make_pack()
    # The base is the embedded SmolLM2 folder: push records its Hub id, HuggingFaceTB/SmolLM2-135M-Instruct.
    commit = pack.push_to_hub(args.repo_id)
    print(f"pushed: {commit.commit_url}")

    recorded = HfApi().model_info(args.repo_id).sha
    # The base recorded in the pack is HuggingFaceTB/SmolLM2-135M-Instruct; with alignez_hf installed, loading
    # uses the embedded copy of those weights (the ones the pack was built on), so even a local test Hub works.
    loaded = AlignEZForCausalLM.from_pretrained(args.repo_id)
    base_id = loaded.config.base_model_name_or_path  # the Hub id recorded by push, not the local folder
    print(f"loaded {args.repo_id} at {recorded[:12]} (base {base_id}): axes {list(loaded.axes)}")

    tokenizer = pack.tokenizer
    messages = [{"role": "user", "content": args.prompt}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    settings = {"gloomy": {"cheerful": -1.0}, "plain": {"cheerful": 0.0}, "cheerful": {"cheerful": 1.0}}
    same = True
    for label, steering in settings.items():
        outputs = []
        for model in (pack, loaded):
            out = model.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=False, steering=steering)
            outputs.append(out[0, ids["input_ids"].shape[1] :].tolist())
        same &= outputs[0] == outputs[1]
        print(f"[{label:>8}] {tokenizer.decode(outputs[1], skip_special_tokens=True)!r}")
    print(f"identical generations: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
