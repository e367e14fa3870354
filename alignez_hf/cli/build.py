"""``alignez build --axis A --out DIR``: build a steering pack from unlabeled queries (options: ``BuildConfig``)."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from ..builder.config import BuildConfig
from ..builder.strategies import STRATEGIES
from .options import add_config_arguments, config_from_args
from .push import add_push_options, push_from_args

BUNDLED_QUERIES = "build_queries.txt"


def bundled_queries() -> Path:
    """The query set that ships with alignez-hf (``alignez_hf/data/build_queries.txt``), used without ``--queries``."""
    return Path(str(resources.files("alignez_hf") / "data" / BUNDLED_QUERIES))


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("build", help="Build a steering pack from unlabeled queries (no labels, no training).")
    p.add_argument(
        "--base",
        default="smollm2-135m",
        help="Hub id, local folder, or embedded model name; a folder or repo of a PEFT adapter loads the base it names "
        "with the adapter on top (needs peft: pip install 'alignez-hf[train]').",
    )
    p.add_argument(
        "--axis",
        action="append",
        required=True,
        help="Preset (harmless, helpful, humor, cheerful, simple) or 'name=positive,negative', optionally with "
        "'@refusal' or '@sentiment' (the behaviour its positive pole should raise, checked on the model). Repeat "
        "for several axes.",
    )
    p.add_argument("--out", required=True, help="Output folder of the pack (also holds self_generated.jsonl).")
    p.add_argument(
        "--queries",
        default=None,
        help=f"Query file: .txt (one per line), .jsonl or .csv (default: the bundled alignez_hf/data/"
        f"{BUNDLED_QUERIES}).",
    )
    p.add_argument("--column", default=None, help="Field or column holding the query (.jsonl/.csv).")
    p.add_argument("--max-queries", type=int, default=None, help="Use only the first N queries.")
    p.add_argument("--overwrite", action="store_true", help="Replace a different pack already in --out.")
    add_config_arguments(
        p.add_argument_group("build options (alignez_hf.builder.BuildConfig)"),
        BuildConfig,
        overrides={"strategy": {"choices": list(STRATEGIES)}},
    )
    p.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="Upload the pack to this Hub repo.")
    add_push_options(p.add_argument_group("push options (with --push-to-hub)"))
    return p


def load_base(name_or_path: str):
    """Load a base model and its tokenizer (embedded names are converted once and cached): ``(model, tokenizer,
    name to record, revision to record)``.

    A Hub repo id is resolved to the commit it points at now, and model and tokenizer load from that commit, so the
    pack names the exact weights it was built on. A folder or repo that holds a PEFT adapter
    (``adapter_config.json``) gives the base it names with the adapter on top, loaded through peft
    (``runtime/adapters.py``); the pack then records both, each at its revision.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..embedded import EMBEDDED_MODELS, resolve_base
    from ..runtime.adapters import inner_model, is_adapter, load_stack
    from ..runtime.serialization import BASE_RESOLVERS

    path = resolve_base(name_or_path)
    if is_adapter(path):
        model, recorded = load_stack(path, resolvers=BASE_RESOLVERS, dtype="float32")
        try:  # an adapter folder may ship the tokenizer; otherwise the base's is the one
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError):
            tokenizer = AutoTokenizer.from_pretrained(inner_model(model).name_or_path)
        return model, tokenizer, recorded, None
    revision = None if Path(path).is_dir() else hub_commit(path)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype="float32").eval()
    # Packs of embedded models name the public Hub id, so they stay valid on machines that download it.
    recorded = EMBEDDED_MODELS[name_or_path].hub_id if name_or_path in EMBEDDED_MODELS else name_or_path
    return model, tokenizer, recorded, revision


def hub_commit(repo_id: str) -> str | None:
    """The commit a Hub repo's main revision resolves to (from the cache when offline), or None if it is unknown."""
    from transformers.utils import cached_file
    from transformers.utils.hub import extract_commit_hash

    return extract_commit_hash(cached_file(repo_id, "config.json"), None)


def run(args: argparse.Namespace) -> int:
    """Build a pack from the command line."""
    from ..builder import AlignEZBuilder, load_queries

    if args.queries is None:
        path = bundled_queries()
        queries = load_queries(path, max_queries=args.max_queries)
        print(f"No --queries given: building from the bundled query set {path.name} ({len(queries)} queries, {path}).")
    else:
        queries = load_queries(args.queries, column=args.column, max_queries=args.max_queries)
    model, tokenizer, recorded, revision = load_base(args.base)
    builder = AlignEZBuilder(
        model,
        tokenizer,
        axes=args.axis,
        config=config_from_args(BuildConfig, args),
        base_model_name_or_path=recorded,
        base_model_revision=revision,
    )
    builder.build(queries, output_dir=args.out, overwrite=args.overwrite)
    print(f"\nLoad it with: AlignEZForCausalLM.from_pretrained({args.out!r})")
    if args.push_to_hub:
        return push_from_args(args.out, args.push_to_hub, args)
    return 0
