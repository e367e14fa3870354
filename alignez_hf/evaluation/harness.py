"""The evaluation harness: greedy generations at several strengths, scored and compared with the base and a random axis.

Strength 0 is always the exact base model (steering disabled). Rows of one batched ``generate`` share the same set of
active axes, so the composition rule never mixes a row's axis with another row's random control.
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from .metrics import mean_summary, next_token_kl, paired_delta_summary, rate_summary, sequence_nll
from .prompts import load_prompt_set
from .scorers import SCORERS, get_scorer, refusal_agreement

DEFAULT_STRENGTHS = (0.0, 0.5, 1.0, 2.0, 4.0)
# Per-answer numbers; "refusal" is a rate, the others are means.
METRICS = ("refusal", "sentiment", "readability", "words", "tokens", "nll")
KL_PROMPT_SET = "neutral"
NOT_MEASURED = (
    "No LLM judge or reward model runs here: helpfulness and harmlessness are measured only through keyword refusal "
    "rates, sentiment (VADER), readability (Flesch, textstat), length and drift (NLL under the base, KL); answer "
    "quality and correctness are not measured."
)
# Config fields a Setting may override for the duration of its run.
CONFIG_OVERRIDES = ("hook_point", "layer_policy", "top_n", "positions", "composition")


@dataclass
class Setting:
    """One thing to evaluate: a model with an axis, plus temporary overrides (edit rule, hook point, policy ...)."""

    label: str
    model: Any
    axis: str
    tokenizer: Any = None
    rule: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Generation:
    """One greedy answer: its prompt, the strengths it ran with, the text and its mean NLL under the base."""

    prompt: str
    steering: dict[str, float]
    text: str
    tokens: int
    nll: float


# ---------------------------------------------------------------------- model plumbing
@contextlib.contextmanager
def applied(setting: Setting) -> Iterator[None]:
    """Apply a setting's rule and config overrides to its model for the duration of the block."""
    model, saved = setting.model, {}
    unknown = set(setting.config) - set(CONFIG_OVERRIDES)
    if unknown:
        raise ValueError(f"Setting {setting.label!r}: cannot override {sorted(unknown)}; allowed: {CONFIG_OVERRIDES}.")
    if setting.axis not in model.axes:
        raise KeyError(f"Setting {setting.label!r}: unknown axis {setting.axis!r}; axes: {', '.join(model.axes)}.")
    entry = next(a for a in model.config.axes if a["name"] == setting.axis)
    old_rule = entry["rule"]
    try:
        for key, value in setting.config.items():
            saved[key] = getattr(model.config, key)
            setattr(model.config, key, value)
        model.config.validate_steering()
        if setting.rule is not None:
            entry["rule"] = setting.rule
            model.config.validate_steering()
        yield
    finally:
        entry["rule"] = old_rule
        for key, value in saved.items():
            setattr(model.config, key, value)


def add_random_control(model, axis: str, seed: int = 0, name: str | None = None) -> str:
    """Add an axis of the same size as ``axis`` (layers, ranks, scales, rule) along random orthonormal directions."""
    name = name or f"random_control_{axis}"
    tensors = model.axis_tensors(axis)
    generator = torch.Generator().manual_seed(seed)
    directions = {}
    for layer in sorted(tensors["directions"]):
        k, d = tensors["directions"][layer].shape
        q, _ = torch.linalg.qr(torch.randn(d, k, generator=generator))
        directions[layer] = q.T.contiguous()
    model.add_axis(
        name,
        directions,
        rule=model.axes[axis].rule,
        strength=0.0,
        scales=tensors["scales"],
        replace=True,
        random_control_of=axis,
        seed=seed,
        # A gated axis gets a control behind the same gate: both steer the same prompts.
        gate=next(a for a in model.config.axes if a["name"] == axis).get("gate"),
    )
    return name


@contextlib.contextmanager
def random_control_axis(model, axis: str, seed: int = 0, enabled: bool = True) -> Iterator[str | None]:
    """A temporary random-direction control axis for ``axis`` (removed afterwards); yields its name or None."""
    if not enabled:
        yield None
        return
    name = add_random_control(model, axis, seed)
    try:
        yield name
    finally:
        model.remove_axis(name)


def chat_text(tokenizer, prompt: str) -> str:
    """The prompt as one user turn through the chat template (plain text if the tokenizer has none)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    return prompt


@contextlib.contextmanager
def _padding(tokenizer, side: str) -> Iterator[None]:
    old_side, old_pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.padding_side = old_side
        if old_pad is None:
            tokenizer.pad_token = old_pad


def _encode(tokenizer, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    texts = [chat_text(tokenizer, p) for p in prompts]
    # The chat template already writes BOS where the model wants one.
    special = not getattr(tokenizer, "chat_template", None)
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=special)


def _eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None) if model.generation_config is not None else None
    ids = eos if isinstance(eos, list) else [eos]
    ids = [i for i in ids + [tokenizer.eos_token_id] if i is not None]
    return sorted(set(ids))


def generate_answers(
    model,
    tokenizer,
    jobs: Sequence[tuple[str, Mapping[str, float]]],
    max_new_tokens: int = 48,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "generating",
) -> list[Generation]:
    """Greedy answers for ``(prompt, {axis: strength})`` jobs, batched; all-zero jobs run the exact base model."""
    names = list(model.axes)
    eos = _eos_ids(model, tokenizer)
    groups: dict[frozenset, list[int]] = defaultdict(list)
    for i, (_, steer) in enumerate(jobs):
        groups[frozenset(k for k, v in steer.items() if v != 0)].append(i)
    results: list[Generation | None] = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, leave=False)
    with _padding(tokenizer, "left"):
        config = GenerationConfig(
            do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos
        )
        for active, members in groups.items():
            members = sorted(members, key=lambda i: len(jobs[i][0]))  # similar lengths pad less
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                enc = _encode(tokenizer, [jobs[i][0] for i in chunk])
                if active:
                    steering = [{n: float(jobs[i][1].get(n, 0.0)) for n in names} for i in chunk]
                    out = model.generate(**enc, steering=steering, generation_config=config)
                else:
                    with model.steering_disabled():
                        out = model.generate(**enc, generation_config=config)
                new = out[:, enc["input_ids"].shape[1] :]
                is_eos = torch.isin(new, torch.tensor(eos, dtype=new.dtype))
                # Keep tokens up to and including the first EOS; generate pads finished rows after it.
                valid = ((is_eos.long().cumsum(-1) - is_eos.long()) == 0).long()
                nll = sequence_nll(
                    model.base,
                    out,
                    torch.cat([enc["attention_mask"], valid], dim=1),
                    torch.cat([torch.zeros_like(enc["attention_mask"]), valid], dim=1),
                )
                for row, i in enumerate(chunk):
                    ids = new[row][valid[row].bool()]
                    results[i] = Generation(
                        prompt=jobs[i][0],
                        steering={k: float(v) for k, v in jobs[i][1].items()},
                        text=tokenizer.decode(ids, skip_special_tokens=True).strip(),
                        tokens=int(valid[row].sum()),
                        nll=nll[row],
                    )
                bar.update(len(chunk))
    bar.close()
    return results  # type: ignore[return-value]


@torch.no_grad()
def steering_kl(
    model,
    tokenizer,
    prompts: Sequence[str],
    steerings: Sequence[Mapping[str, float]],
    batch_size: int = 8,
) -> list[list[float]]:
    """Per steering, per prompt: mean KL(steered || base) of next-token distributions over the chat-templated prompt.

    Teacher-forced; the steered pass edits every position (``positions="all"``), as generation would have edited
    each of those tokens in turn.
    """
    names = list(model.axes)
    out: list[list[float]] = [[] for _ in steerings]
    old_positions = model.config.positions
    model.config.positions = "all"
    try:
        with _padding(tokenizer, "right"):  # right padding: real tokens keep their positions
            for start in range(0, len(prompts), batch_size):
                enc = _encode(tokenizer, prompts[start : start + batch_size])
                with model.steering_disabled():
                    base = model(**enc).logits
                for j, steer in enumerate(steerings):
                    full = {n: float(steer.get(n, 0.0)) for n in names}
                    steered = model(**enc, steering=full).logits
                    out[j].extend(next_token_kl(steered, base, enc["attention_mask"]))
    finally:
        model.config.positions = old_positions
    return out


# ---------------------------------------------------------------------- harness
def _settings(model, tokenizer, axis: str | None, settings: Sequence[Setting] | None) -> list[Setting]:
    if settings:
        resolved = [
            s if s.tokenizer is not None else Setting(**{**s.__dict__, "tokenizer": tokenizer}) for s in settings
        ]
    else:
        if model is None:
            raise ValueError("evaluate() needs a model (and axis) or a list of settings.")
        if axis is None:
            if len(model.axes) != 1:
                raise ValueError(f"The model has axes {', '.join(model.axes) or 'none'}: name the one to evaluate.")
            axis = next(iter(model.axes))
        resolved = [Setting(label=axis, model=model, axis=axis, tokenizer=tokenizer)]
    for s in resolved:
        if s.tokenizer is None:
            s.tokenizer = getattr(s.model, "tokenizer", None)
        if s.tokenizer is None:
            raise ValueError(f"Setting {s.label!r} has no tokenizer.")
    labels = [s.label for s in resolved]
    if len(set(labels)) != len(labels):
        raise ValueError(f"Setting labels must be unique, got {labels}.")
    return resolved


def _describe(setting: Setting) -> dict[str, Any]:
    model, view = setting.model, setting.model.axes[setting.axis]
    return {
        "label": setting.label,
        "axis": setting.axis,
        "pack": str(getattr(model, "name_or_path", "") or "") or None,
        "base_model": model.config.base_model_name_or_path,
        "base_model_revision": model.config.base_model_revision,
        "rule": view.rule,
        "hook_point": model.config.hook_point,
        "layer_policy": model.config.layer_policy,
        "top_n": model.config.top_n,
        "positions": model.config.positions,
        "composition": model.config.composition,
        "layers": list(view.layers),
        "rank": {str(k): v for k, v in view.rank.items()},
        "positive": view.positive,
        "negative": view.negative,
    }


def _score(gen: Generation) -> dict[str, float]:
    scores = {name: SCORERS[name](gen.text) for name in ("refusal", "sentiment", "readability", "words")}
    scores.update(tokens=float(gen.tokens), nll=gen.nll)
    return scores


def _summaries(scores: list[dict[str, float]], base: list[dict[str, float]], seed: int) -> tuple[dict, dict]:
    metrics, delta = {}, {}
    for name in METRICS:
        values = [s[name] for s in scores]
        metrics[name] = rate_summary(values) if name == "refusal" else mean_summary(values, seed=seed)
        delta[name] = paired_delta_summary(values, [s[name] for s in base], seed=seed)
    base_nll = mean_summary([s["nll"] for s in base], seed=seed)["value"]
    metrics["nll_ratio"] = {
        "value": metrics["nll"]["value"] / base_nll if base_nll and not math.isnan(base_nll) else math.nan,
        "n": metrics["nll"]["n"],
    }
    return metrics, delta


def evaluate(
    model=None,
    tokenizer=None,
    axis: str | None = None,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    prompt_sets: Sequence[str] = ("neutral",),
    *,
    settings: Sequence[Setting] | None = None,
    limit: int | None = 20,
    max_new_tokens: int = 48,
    seed: int = 0,
    batch_size: int = 8,
    random_control: bool = True,
    kl: bool = True,
    out_dir: str | None = None,
    plots: bool = True,
    progress: bool = True,
    base_cache: dict | None = None,
) -> dict[str, Any]:
    """Compare the base (strength 0) with each strength of one axis, or of several ``settings``, on prompt sets.

    Returns the results dict (see ``results.json``); with ``out_dir`` also writes results.json, results.md,
    answers.json and plots. Settings that wrap the same base model object share its (greedy, unsteered) answers
    instead of generating them again; pass a dict as ``base_cache`` to share them across calls as well.
    """
    started = time.time()
    torch.manual_seed(seed)
    base_cache = {} if base_cache is None else base_cache
    strengths = sorted({0.0, *(float(s) for s in strengths)})
    steered = [s for s in strengths if s != 0]
    chosen = _settings(model, tokenizer, axis, settings)
    prompts = {name: load_prompt_set(name, limit) for name in prompt_sets}
    kl_prompts = load_prompt_set(KL_PROMPT_SET, limit) if kl else []
    rows, kl_rows, answers, described = [], [], [], []
    for setting in tqdm(chosen, desc="settings", disable=not progress or len(chosen) == 1):
        m, tok, ax = setting.model, setting.tokenizer, setting.axis
        with applied(setting), random_control_axis(m, ax, seed, random_control) as control:
            described.append(_describe(setting))
            conditions = [("axis", ax, s) for s in steered] + [("random", control, s) for s in steered if control]
            keys, jobs = [], []
            for set_name, plist in prompts.items():
                for i, prompt in enumerate(plist):
                    keys.append((set_name, i, "base", 0.0))
                    jobs.append((prompt, {}))
                    for condition, name, s in conditions:
                        keys.append((set_name, i, condition, s))
                        jobs.append((prompt, {name: s}))
            gens = _generate_with_base_cache(
                m, tok, jobs, max_new_tokens, batch_size, progress, f"{setting.label}", base_cache
            )
            scored: dict[tuple, list] = defaultdict(list)
            for key, gen in zip(keys, gens):
                scored[(key[0], key[2], key[3])].append(_score(gen))
                answers.append(
                    {
                        "setting": setting.label,
                        "prompt_set": key[0],
                        "index": key[1],
                        "condition": key[2],
                        "strength": key[3],
                        "prompt": gen.prompt,
                        "answer": gen.text,
                        "tokens": gen.tokens,
                        "nll": gen.nll,
                    }
                )
            for set_name in prompts:
                base = scored[(set_name, "base", 0.0)]
                for condition, s in [("base", 0.0)] + [(c, s) for c, _, s in conditions]:
                    metrics, delta = _summaries(scored[(set_name, condition, s)], base, seed)
                    rows.append(
                        {
                            "setting": setting.label,
                            "prompt_set": set_name,
                            "condition": "axis" if condition == "base" else condition,
                            "strength": s,
                            "n": len(base),
                            "metrics": metrics,
                            "delta": delta,
                        }
                    )
            if kl_prompts:
                kl_conditions = [("axis", ax, 0.0)] + conditions
                per = steering_kl(m, tok, kl_prompts, [{n: s} for _, n, s in kl_conditions], batch_size)
                for (condition, _, s), values in zip(kl_conditions, per):
                    kl_rows.append(
                        {
                            "setting": setting.label,
                            "condition": condition,
                            "strength": s,
                            "kl": mean_summary(values, seed=seed),
                        }
                    )
    results = {
        "meta": {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.time() - started, 1),
            "seed": seed,
            "strengths": strengths,
            "decoding": "greedy",
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "limit": limit,
            "prompt_sets": {name: {"n": len(p)} for name, p in prompts.items()},
            "kl_prompt_set": {"name": KL_PROMPT_SET, "n": len(kl_prompts)} if kl else None,
            "random_control": random_control,
            "intervals": "95%: Wilson for rates, percentile bootstrap (2000 resamples, seeded) for means and deltas",
            "kl": "mean over positions of KL(steered || base) on chat-templated neutral prompts, teacher-forced",
            "nll": "mean per-token NLL of each answer under the unsteered base model (nats)",
            "refusal_detector": refusal_agreement().to_dict(),
            "not_measured": NOT_MEASURED,
            "versions": _versions(),
        },
        "settings": described,
        "rows": rows,
        "kl": kl_rows,
    }
    if out_dir is not None:
        from .report import write_results

        write_results(results, out_dir, answers=answers, plots=plots)
    results["answers"] = answers
    return results


def _generate_with_base_cache(
    model, tokenizer, jobs, max_new_tokens: int, batch_size: int, progress: bool, desc: str, cache: dict
) -> list[Generation]:
    """``generate_answers``, serving unsteered jobs from ``cache`` when the same base already answered them.

    Strength 0 runs the exact base model with greedy decoding, so its answer depends only on the base model, the
    tokenizer, the prompt and the length limit: the key. Steered jobs are always generated.
    """
    key = (id(model.base), id(tokenizer), max_new_tokens)
    results: list[Generation | None] = [None] * len(jobs)
    todo = []
    for i, (prompt, steer) in enumerate(jobs):
        hit = cache.get((*key, prompt)) if not any(v != 0 for v in steer.values()) else None
        if hit is not None:
            results[i] = Generation(prompt, {k: float(v) for k, v in steer.items()}, hit.text, hit.tokens, hit.nll)
        else:
            todo.append(i)
    made = generate_answers(model, tokenizer, [jobs[i] for i in todo], max_new_tokens, batch_size, progress, desc)
    for i, gen in zip(todo, made):
        results[i] = gen
        if not any(v != 0 for v in jobs[i][1].values()):
            cache[(*key, jobs[i][0])] = gen
    return results  # type: ignore[return-value]


def _versions() -> dict[str, str]:
    import transformers

    from .. import __version__

    return {
        "alignez_hf": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------- two axes
def sweep_2d(
    model,
    tokenizer,
    axis_a: str,
    axis_b: str,
    strengths_a: Sequence[float],
    strengths_b: Sequence[float],
    scorer_a: str | Callable[[str], float] = "sentiment",
    scorer_b: str | Callable[[str], float] = "readability",
    prompt_set: str = "neutral",
    *,
    limit: int | None = 10,
    max_new_tokens: int = 48,
    batch_size: int = 8,
    seed: int = 0,
    out_dir: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every (strength_a, strength_b) cell with both scorers: the grids of the paper's Figure 3.

    ``score_a[i][j]`` is the mean of ``scorer_a`` at ``strengths_a[i]``, ``strengths_b[j]``. ``own`` and ``cross``
    give how far each score moves along its own axis and along the other one (mean range across the grid).
    """
    for name in (axis_a, axis_b):
        if name not in model.axes:
            raise KeyError(f"Unknown axis {name!r}; axes: {', '.join(model.axes)}.")
    name_a, fn_a = get_scorer(scorer_a)
    name_b, fn_b = get_scorer(scorer_b)
    prompts = load_prompt_set(prompt_set, limit)
    cells = [(float(a), float(b)) for a in strengths_a for b in strengths_b]
    jobs = [(p, {axis_a: a, axis_b: b}) for a, b in cells for p in prompts]
    gens = generate_answers(model, tokenizer, jobs, max_new_tokens, batch_size, progress, desc="sweep")
    n = len(prompts)
    grids: dict[str, list[list[dict]]] = {"a": [], "b": [], "nll": []}
    for i in range(len(strengths_a)):
        row_a, row_b, row_nll = [], [], []
        for j in range(len(strengths_b)):
            block = gens[(i * len(strengths_b) + j) * n : (i * len(strengths_b) + j + 1) * n]
            row_a.append(mean_summary([fn_a(g.text) for g in block], seed=seed))
            row_b.append(mean_summary([fn_b(g.text) for g in block], seed=seed))
            row_nll.append(mean_summary([g.nll for g in block], seed=seed))
        grids["a"].append(row_a)
        grids["b"].append(row_b)
        grids["nll"].append(row_nll)

    def values(grid):
        return [[c["value"] for c in row] for row in grid]

    result = {
        "meta": {
            "seed": seed,
            "prompt_set": prompt_set,
            "n": n,
            "max_new_tokens": max_new_tokens,
            "decoding": "greedy",
            "composition": model.config.composition,
            "pack": str(getattr(model, "name_or_path", "") or "") or None,
            "versions": _versions(),
        },
        "axis_a": axis_a,
        "axis_b": axis_b,
        "scorer_a": name_a,
        "scorer_b": name_b,
        "strengths_a": [float(s) for s in strengths_a],
        "strengths_b": [float(s) for s in strengths_b],
        "score_a": values(grids["a"]),
        "score_b": values(grids["b"]),
        "nll": values(grids["nll"]),
        "cells_a": grids["a"],
        "cells_b": grids["b"],
        "own": {"a": _mean_range(values(grids["a"]), 0), "b": _mean_range(values(grids["b"]), 1)},
        "cross": {"a": _mean_range(values(grids["a"]), 1), "b": _mean_range(values(grids["b"]), 0)},
        "answers": [{"prompt": g.prompt, "steering": g.steering, "answer": g.text} for g in gens],
    }
    if out_dir is not None:
        from .report import write_sweep

        write_sweep(result, out_dir)
    return result


def _mean_range(grid: list[list[float]], along: int) -> float:
    """Mean over lines of (max - min) along rows (0: down the first index) or columns (1); NaNs ignored."""
    lines = [list(col) for col in zip(*grid)] if along == 0 else grid
    spans = []
    for line in lines:
        kept = [v for v in line if not math.isnan(v)]
        if kept:
            spans.append(max(kept) - min(kept))
    return sum(spans) / len(spans) if spans else math.nan
