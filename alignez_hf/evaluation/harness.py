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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from ..chat import encode_chats, padding
from ..runtime.constants import OPTION_FIELDS
from .config import DEFAULT_PROMPT_SETS, DEFAULT_STRENGTHS, EvalConfig
from .metrics import mean_summary, next_token_kl, paired_delta_summary, rate_summary, sequence_nll
from .prompting import prompt_conditions
from .prompts import load_prompt_set
from .scorers import SCORERS, refusal_agreement

# Per-answer numbers; "refusal" is a rate, the others are means. "context": prompt tokens beyond the plain prompt's
# (a system message's cost; negative where it replaces a chat template's default system message).
METRICS = ("refusal", "sentiment", "readability", "words", "tokens", "nll", "context")
# Conditions besides "axis" and "random": the axis's persona words as a system message, alone and with the pack.
PROMPT_CONDITIONS = ("prompt", "prompt+axis")
KL_PROMPT_SET = "neutral"
DEFAULTS = EvalConfig()  # the options evaluate() shares with `alignez eval`, defined once
NOT_MEASURED = (
    "No LLM judge or reward model runs here: helpfulness and harmlessness are measured only through keyword refusal "
    "rates, sentiment (VADER), readability (Flesch, textstat), length and drift (NLL under the base, KL); answer "
    "quality and correctness are not measured."
)


@dataclass
class Setting:
    """One thing to evaluate: a model with an axis, plus temporary overrides: an edit rule for the axis and any
    ``model.steering_options`` (hook_point, layer_policy, top_n, positions, composition) in ``config``."""

    label: str
    model: Any
    axis: str
    tokenizer: Any = None
    rule: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Generation:
    """One greedy answer: its prompt, the strengths it ran with, the text and its mean NLL under the base.

    The NLL is always that of the answer after the plain prompt (no system message): the drift from what the base
    would say to the user's own words, the same yardstick for a pack and for a prompt.
    """

    prompt: str
    steering: dict[str, float]
    text: str
    tokens: int
    nll: float
    system: str | None = None
    context: int = 0  # prompt tokens beyond the plain prompt's


# ---------------------------------------------------------------------- model plumbing
def applied(setting: Setting):
    """The setting's rule and option overrides (``model.steering_options``) for the duration of a block."""
    if setting.axis not in setting.model.axes:
        raise KeyError(
            f"Setting {setting.label!r}: unknown axis {setting.axis!r}; axes: {', '.join(setting.model.axes)}."
        )
    rules = {setting.axis: setting.rule} if setting.rule is not None else None
    return setting.model.steering_options(rules=rules, **setting.config)


def control(model, axis: str, seed: int, enabled: bool):
    """``model.random_control(axis, seed)`` when ``enabled``, else a block that yields None."""
    return model.random_control(axis, seed) if enabled else contextlib.nullcontext()


def _eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None) if model.generation_config is not None else None
    ids = eos if isinstance(eos, list) else [eos]
    ids = [i for i in ids + [tokenizer.eos_token_id] if i is not None]
    return sorted(set(ids))


def _as_job(job: Sequence) -> tuple[str, Mapping[str, float], str | None]:
    """``(prompt, {axis: strength})`` or ``(prompt, {axis: strength}, system)`` as the three-field form."""
    return job[0], job[1], job[2] if len(job) > 2 else None


def generate_answers(
    model,
    tokenizer,
    jobs: Sequence[tuple],
    max_new_tokens: int = 48,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "generating",
    user_system: str | None = None,
    nll_model=None,
) -> list[Generation]:
    """Greedy answers for ``(prompt, {axis: strength}[, system])`` jobs, batched; all-zero jobs run the exact base.

    ``user_system`` is the user's own system message: the context each answer's NLL is scored in (with the prompt).
    ``nll_model`` is the model that scores each answer's NLL (default: ``model.base``); give the original base when
    ``model`` wraps a fine-tune of it, so that the drift is measured from the same model for every method.
    """
    nll_model = model.base if nll_model is None else nll_model
    names = list(model.axes)
    eos = _eos_ids(model, tokenizer)
    jobs = [_as_job(job) for job in jobs]
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (_, steer, system) in enumerate(jobs):
        groups[(frozenset(k for k, v in steer.items() if v != 0), system)].append(i)
    results: list[Generation | None] = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, leave=False)
    with padding(tokenizer, "left"):
        config = GenerationConfig(
            do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos
        )
        for (active, system), members in groups.items():
            members = sorted(members, key=lambda i: len(jobs[i][0]))  # similar lengths pad less
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                enc = encode_chats(tokenizer, [jobs[i][0] for i in chunk], system=system)
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
                plain = (
                    enc if system == user_system else encode_chats(tokenizer, [jobs[i][0] for i in chunk], user_system)
                )
                nll = sequence_nll(
                    nll_model,
                    torch.cat([plain["input_ids"], new], dim=1),
                    torch.cat([plain["attention_mask"], valid], dim=1),
                    torch.cat([torch.zeros_like(plain["attention_mask"]), valid], dim=1),
                )
                context = (enc["attention_mask"].sum(1) - plain["attention_mask"].sum(1)).tolist()
                for row, i in enumerate(chunk):
                    ids = new[row][valid[row].bool()]
                    results[i] = Generation(
                        prompt=jobs[i][0],
                        steering={k: float(v) for k, v in jobs[i][1].items()},
                        text=tokenizer.decode(ids, skip_special_tokens=True).strip(),
                        tokens=int(valid[row].sum()),
                        nll=nll[row],
                        system=system,
                        context=int(context[row]),
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
    with model.steering_options(positions="all"):
        for start in range(0, len(prompts), batch_size):
            # right padding: real tokens keep their positions
            enc = encode_chats(tokenizer, prompts[start : start + batch_size], side="right")
            with model.steering_disabled():
                base = model(**enc).logits
            for j, steer in enumerate(steerings):
                full = {n: float(steer.get(n, 0.0)) for n in names}
                steered = model(**enc, steering=full).logits
                out[j].extend(next_token_kl(steered, base, enc["attention_mask"]))
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
        "rule": model.effective_rule(setting.axis),
        **{field: model.steering_option(field) for field in OPTION_FIELDS},
        "layers": list(view.layers),
        "rank": {str(k): v for k, v in view.rank.items()},
        "positive": view.positive,
        "negative": view.negative,
    }


def _score(gen: Generation) -> dict[str, float]:
    scores = {name: SCORERS[name](gen.text) for name in ("refusal", "sentiment", "readability", "words")}
    scores.update(tokens=float(gen.tokens), nll=gen.nll, context=float(gen.context))
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
    prompt_sets: Sequence[str] = DEFAULT_PROMPT_SETS,
    *,
    settings: Sequence[Setting] | None = None,
    limit: int | None = DEFAULTS.limit,
    max_new_tokens: int = DEFAULTS.max_new_tokens,
    seed: int = DEFAULTS.seed,
    batch_size: int = DEFAULTS.batch_size,
    random_control: bool = DEFAULTS.random_control,
    prompting: bool = DEFAULTS.prompting,
    prompt_dial: bool = DEFAULTS.prompt_dial,
    system: str | None = DEFAULTS.system,
    kl: bool = DEFAULTS.kl,
    out_dir: str | None = None,
    plots: bool = DEFAULTS.plots,
    progress: bool = True,
    base_cache: dict | None = None,
) -> dict[str, Any]:
    """Compare the base (strength 0) with each strength of one axis, or of several ``settings``, on prompt sets.

    Returns the results dict (see ``results.json``); with ``out_dir`` also writes results.json, results.md,
    answers.json and plots. Settings that wrap the same base model object share its (greedy, unsteered) answers
    instead of generating them again; pass a dict as ``base_cache`` to share them across calls as well.
    With ``prompting``, each setting also runs the baseline a user would try first: the axis's own persona words as a
    system message (the negative pole's for negative strengths), alone (condition ``prompt``, strength +-1) and
    together with the pack (``prompt+axis``); with ``prompt_dial`` the prompt also runs at each rung of a
    wording-intensity ladder (``prompting.WORDINGS``; a ``prompt`` row's strength names its rung). ``system`` is
    the user's own system message, given to every condition (after the persona words in the prompting ones): does
    each method keep its effect under it?
    """
    if prompt_dial and not prompting:
        raise ValueError(
            "prompt_dial runs the prompting baseline at several wordings: pass prompting=True as well "
            "(on the command line: --prompting --prompt-dial)."
        )
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
        with applied(setting), control(m, ax, seed, random_control) as random_axis:
            described.append(_describe(setting))
            conditions = [("axis", ax, s) for s in steered]
            conditions += [("random", random_axis, s) for s in steered if random_axis]
            prompted = prompt_conditions(m, ax, steered, system, prompt_dial) if prompting else []
            if prompted:
                described[-1]["prompt_messages"] = {f"{s:+g}": text for c, _, s, text in prompted if c == "prompt"}
            keys, jobs = [], []
            for set_name, plist in prompts.items():
                for i, prompt in enumerate(plist):
                    keys.append((set_name, i, "base", 0.0))
                    jobs.append((prompt, {}, system))
                    for condition, name, s in conditions:
                        keys.append((set_name, i, condition, s))
                        jobs.append((prompt, {name: s}, system))
                    for condition, name, s, message in prompted:
                        keys.append((set_name, i, condition, s))
                        jobs.append((prompt, {name: s} if name else {}, message))
            gens = _generate_with_base_cache(
                m, tok, jobs, max_new_tokens, batch_size, progress, f"{setting.label}", base_cache, system
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
                        "system": gen.system,
                        "answer": gen.text,
                        "tokens": gen.tokens,
                        "nll": gen.nll,
                    }
                )
            for set_name in prompts:
                base = scored[(set_name, "base", 0.0)]
                for condition, s in [("base", 0.0)] + [(c[0], c[2]) for c in conditions + prompted]:
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
            "prompting": prompting,
            "prompt_dial": prompt_dial,
            "system": system,
            "intervals": "95%: Wilson for rates, percentile bootstrap (2000 resamples, seeded) for means and deltas",
            "kl": "mean over positions of KL(steered || base) on chat-templated neutral prompts, teacher-forced",
            "nll": "mean per-token NLL of each answer under the unsteered base model (nats)",
            "refusal_detector": refusal_agreement().to_dict(),
            "not_measured": NOT_MEASURED,
            "versions": versions(),
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
    model, tokenizer, jobs, max_new_tokens: int, batch_size: int, progress: bool, desc: str, cache: dict,
    user_system: str | None = None,
) -> list[Generation]:  # fmt: skip
    """``generate_answers``, serving unsteered jobs from ``cache`` when the same base already answered them.

    Strength 0 runs the exact base model with greedy decoding, so its answer depends only on the base model, the
    tokenizer, the prompt, its system message, the context its NLL is scored in and the length limit: the key.
    Steered jobs are always generated.
    """
    key = (id(model.base), id(tokenizer), max_new_tokens, user_system)
    jobs = [_as_job(job) for job in jobs]
    results: list[Generation | None] = [None] * len(jobs)
    todo = []
    for i, (prompt, steer, system) in enumerate(jobs):
        hit = cache.get((*key, system, prompt)) if not any(v != 0 for v in steer.values()) else None
        if hit is not None:
            results[i] = replace(hit, steering={k: float(v) for k, v in steer.items()})
        else:
            todo.append(i)
    made = generate_answers(
        model, tokenizer, [jobs[i] for i in todo], max_new_tokens, batch_size, progress, desc, user_system
    )
    for i, gen in zip(todo, made):
        results[i] = gen
        if not any(v != 0 for v in jobs[i][1].values()):
            cache[(*key, jobs[i][2], jobs[i][0])] = gen
    return results  # type: ignore[return-value]


def versions() -> dict[str, str]:
    import transformers

    from .. import __version__

    return {
        "alignez_hf": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
