"""Evaluation prompt sets: our own neutral, ordinary and edgy prompts, and AdvBench's harmful requests (held out)."""

from __future__ import annotations

import importlib.util
import random
import re
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
# Our own prompt files, shipped in alignez_hf/data/.
# ordinary2 / edgy2, ordinary3 / edgy3 and ordinary4 / edgy4: fresh pairs written to measure the issue-6 harm gate.
PROMPT_FILES = {
    "neutral": "eval_neutral.txt",
    "ordinary": "eval_ordinary.txt",
    "edgy": "eval_edgy.txt",
    "ordinary2": "eval_ordinary_2.txt",
    "edgy2": "eval_edgy_2.txt",
    "ordinary3": "eval_ordinary_3.txt",
    "edgy3": "eval_edgy_3.txt",
    "ordinary4": "eval_ordinary_4.txt",
    "edgy4": "eval_edgy_4.txt",
}
# harmful: AdvBench's evaluation split. harmful_build: its build split, for benchmarks that need more held-out
# harmful prompts than the evaluation split has left; a benchmark using it must say which part built or tuned.
PROMPT_SETS = (*PROMPT_FILES, "harmful", "harmful_build")
ADVBENCH_FILE = "seed_datasets/local/adv_bench.prompt"
# The AdvBench split is a fixed shuffle: half for building packs, half for evaluation, never overlapping.
ADVBENCH_SPLIT_SEED = 20240605
ADVBENCH_EVAL_FRACTION = 0.5
PYRIT_INSTALL = "pip install --no-deps pyrit==1.1.0"
_SLICE = re.compile(r"^(\w+)\[(\d*):(\d*)\]$")


def pyrit_data_file(relative: str) -> Path:
    """Path of a data file inside the installed pyrit wheel's ``datasets`` folder (pyrit is never imported)."""
    spec = importlib.util.find_spec("pyrit")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The pyrit wheel holds the AdvBench and refusal data; install it with `{PYRIT_INSTALL}`."
        )
    path = Path(next(iter(spec.submodule_search_locations)), "datasets", relative)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed pyrit; install it with `{PYRIT_INSTALL}`.")
    return path


def read_prompt_file(path: str | Path) -> list[str]:
    """One prompt per non-empty line; lines starting with '#' are comments."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@lru_cache(maxsize=1)
def load_advbench() -> tuple[str, ...]:
    """All 520 AdvBench harmful behaviours, in the file's order, from the pyrit wheel."""
    import yaml  # a dependency of transformers

    data = yaml.safe_load(pyrit_data_file(ADVBENCH_FILE).read_text(encoding="utf-8"))
    return tuple(str(seed["value"]).strip() for seed in data["seeds"])


def advbench_split_indices(count: int | None = None) -> dict[str, list[int]]:
    """Indices of AdvBench in the ``build`` and ``eval`` splits (a fixed seeded shuffle, disjoint, sorted)."""
    count = len(load_advbench()) if count is None else count
    order = list(range(count))
    random.Random(ADVBENCH_SPLIT_SEED).shuffle(order)
    cut = count - int(round(count * ADVBENCH_EVAL_FRACTION))
    return {"build": sorted(order[:cut]), "eval": sorted(order[cut:])}


def advbench_split(part: str = "eval") -> list[str]:
    """AdvBench prompts of one split: ``build`` (for making packs) or ``eval`` (for measuring them)."""
    prompts = load_advbench()
    indices = advbench_split_indices(len(prompts))
    if part not in indices:
        raise ValueError(f"AdvBench split must be 'build' or 'eval', got {part!r}.")
    return [prompts[i] for i in indices[part]]


def load_prompt_set(name: str, limit: int | None = None) -> list[str]:
    """A prompt set by name (``neutral``, ``ordinary``, ``edgy``, ``harmful``, ...) or a path to a text file.

    A slice after a name picks part of the set, e.g. ``harmful[60:120]`` (then ``limit`` applies to the slice).
    """
    sliced = _SLICE.match(name)
    if sliced and not Path(name).is_file():
        start, stop = (int(v) if v else None for v in sliced.group(2, 3))
        prompts = load_prompt_set(sliced.group(1))[start:stop]
        if not prompts:
            raise ValueError(f"The slice {name!r} is empty.")
        return prompts if limit is None else prompts[:limit]
    if name in ("harmful", "harmful_build"):
        prompts = advbench_split("eval" if name == "harmful" else "build")
    elif name in PROMPT_FILES:
        prompts = read_prompt_file(DATA_DIR / PROMPT_FILES[name])
    elif Path(name).is_file():
        prompts = read_prompt_file(name)
    else:
        raise ValueError(f"Unknown prompt set {name!r}: use one of {', '.join(PROMPT_SETS)} or a text file path.")
    return prompts if limit is None else prompts[:limit]
