"""A steering pack in a transformers pipeline: chat messages in, strengths chosen per call.

    python examples/pipeline_chat.py                    # builds a small cheerful pack for SmolLM2 first
    python examples/pipeline_chat.py --pack my-pack     # or use a pack you saved (quickstart.py --out my-pack)
    python examples/pipeline_chat.py --quick            # 6 build queries, 12-token replies (a test runs this)

``pipeline("text-generation", model=pack_folder)`` loads the pack like any model: the pack names its base model,
and ``steering={"axis": strength}`` passes through the pipeline to ``generate`` (0 = the plain base model).
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from importlib import resources
from pathlib import Path

from transformers import pipeline

import alignez_hf  # noqa: F401  (registers the pack's Auto classes, so pipeline() can load it)


def build_pack(folder: Path, n_queries: int) -> Path:
    """A one-axis cheerful pack for the embedded SmolLM2, saved to ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignez_hf.builder import AlignEZBuilder, load_queries

    base_path = alignez_hf.default_base_model()
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base = AutoModelForCausalLM.from_pretrained(base_path).eval()
    queries = load_queries(Path(str(resources.files("alignez_hf") / "data" / "build_queries.txt")))[:n_queries]
    builder = AlignEZBuilder(base, tokenizer, axes=["cheerful"], check_queries=0, verbose=False, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        builder.build(queries, output_dir=folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    """Chat with a pack at several strengths through ``pipeline``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", default=None, help="A saved pack folder or Hub id (default: build one).")
    parser.add_argument("--axis", default="cheerful", help="The pack's axis to steer.")
    parser.add_argument("--strengths", default="-1,0,1", help="Comma-separated strengths, one reply each.")
    parser.add_argument("--out", default=None, help="Where to save the built pack (default: a temporary folder).")
    parser.add_argument("--quick", action="store_true", help="A reduced run: 6 build queries, 12-token replies.")
    args = parser.parse_args(argv)
    max_new_tokens = 12 if args.quick else 48
    if args.pack is None:
        folder = Path(args.out or tempfile.mkdtemp(prefix="alignez-chat-")) / "smollm2-cheerful"
        args.pack = str(build_pack(folder, n_queries=6 if args.quick else 24))
    pack = args.pack

    chat = pipeline("text-generation", model=pack)
    print(f"pipeline model: {type(chat.model).__name__} with axes {list(chat.model.axes)} (pack {pack})")
    messages = [
        {"role": "system", "content": "You are a helpful assistant. Answer in two sentences."},
        {"role": "user", "content": "My train was cancelled this morning. What should I do now?"},
    ]
    strengths = [float(s) for s in args.strengths.split(",")]
    replies = {}
    for strength in strengths:
        out = chat(messages, max_new_tokens=max_new_tokens, do_sample=False, steering={args.axis: strength})
        replies[strength] = out[0]["generated_text"][-1]  # the conversation, with the new assistant turn appended
        print(f"[{args.axis} {strength:+g}] {replies[strength]['content']}")

    # A second turn: the conversation so far, with the steered reply, goes back in; steering applies again.
    strongest = max(strengths)
    follow_up = messages + [replies[strongest], {"role": "user", "content": "And how should I tell my boss?"}]
    out = chat(follow_up, max_new_tokens=max_new_tokens, do_sample=False, steering={args.axis: strongest})
    print(f"[{args.axis} {strongest:+g}, second turn] {out[0]['generated_text'][-1]['content']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
