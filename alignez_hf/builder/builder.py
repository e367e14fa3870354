"""AlignEZBuilder: from a base model, axes and unlabeled queries to a steering pack (AlignEZForCausalLM)."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..chat import chat_prompt, encode
from ..runtime import AlignEZForCausalLM
from ..runtime.adapters import adapter_fields
from ..runtime.atomic import writer_lock
from . import prompts
from .axes import Axis, parse_axis
from .config import BuildConfig, gate_kind
from .embeddings import embed_ids
from .gate import fit_gate, fit_prefill_gate
from .generation import GenerationStats, RecordStore, SamplingSettings, generate_texts, self_generate
from .orientation import flip_axis, measure_orientation, spread
from .output import RECORDS_FILE, check_output_dir
from .quality import SelfCheck, self_check
from .queries import load_queries, truncate_queries
from .report import AxisReport, ranges, render_summary
from .strategies import Strategy, band_layers, get_strategy
from .subspace import LayerSubspace, SubspaceError, fit_subspace, subspace_cosine

CHECK_TOKENS = 16  # continuation length of the self-check: long enough to carry a tone, short enough to be cheap


class AlignEZBuilder:
    """Build a steering pack for ``base_model`` from unlabeled queries, one subspace per axis (no labels, no training).

    Build options come from ``config`` (a :class:`BuildConfig`, by default ``BuildConfig()``); keyword ``options``
    override its fields, e.g. ``AlignEZBuilder(base, tok, ["cheerful"], batch_size=4, gate=False)``.
    """

    def __init__(
        self,
        base_model,
        tokenizer,
        axes: Sequence[str | Axis] = ("harmless",),
        strategy: str | Strategy | None = None,
        config: BuildConfig | None = None,
        *,
        progress: bool = True,
        verbose: bool = True,
        base_model_name_or_path: str | None = None,
        base_model_revision: str | None = None,
        **options,
    ):
        if config is not None and not isinstance(config, BuildConfig):
            raise TypeError(f"config must be a BuildConfig, got {type(config).__name__}.")
        c = (config or BuildConfig()).replace(**options)
        if strategy is not None:
            c = c.replace(strategy=strategy)
        self.config = c
        if not axes:
            raise ValueError("Give at least one axis, e.g. axes=['harmless'] or axes=['cheerful=cheerful,gloomy'].")
        self.model = base_model
        self.tokenizer = tokenizer
        self.axes = [parse_axis(a) for a in axes]
        if len({a.name for a in self.axes}) != len(self.axes):
            raise ValueError("Axis names must be unique.")
        overrides = dict(
            answer_tokens=c.max_new_tokens,
            characteristics_tokens=c.characteristics_tokens,
            layer_band=tuple(c.layer_band) if c.layer_band is not None else None,
            scale_fraction=c.scale_fraction,
            energy=c.energy,
            max_rank=c.max_rank,
            n_directions=c.n_directions,
        )
        self.strategy = get_strategy(c.strategy).with_overrides(**overrides)
        if c.cos_threshold is not None:  # infinity ('off') keeps every pair: recorded as no filter
            self.strategy = replace(
                self.strategy, cos_threshold=None if math.isinf(c.cos_threshold) else c.cos_threshold
            )
        self.sampling = SamplingSettings(do_sample=c.do_sample, temperature=c.temperature, top_p=c.top_p, seed=c.seed)
        self.batch_size = max(1, int(c.batch_size))
        self.max_query_tokens = c.max_query_tokens
        self.check_queries = c.check_queries
        self.orient = c.orient
        self.orient_queries = c.orient_queries
        self.orient_strength = c.orient_strength
        gate, gate_queries, gate_answered_fire = gate_kind(c.gate), c.gate_queries, c.gate_answered_fire
        if gate and not any(a.behaviour == "refusal" for a in self.axes):
            raise ValueError(
                f"gate={c.gate!r} adds a harm gate to refusal axes, and none of the axes is one: use the "
                "'harmless' preset or name an axis's behaviour, e.g. 'safe=careful,reckless@refusal'."
            )
        if gate and gate_queries < 8:
            raise ValueError(f"gate_queries must be at least 8 (refused and answered queries), got {gate_queries}.")
        if gate_answered_fire is not None and not 0.0 <= gate_answered_fire < 1.0:
            raise ValueError(f"gate_answered_fire must be in [0, 1) or None (Youden's J), got {gate_answered_fire!r}.")
        self.gate = gate  # the gate kind: "prefill", "self_judge" or None
        self.gate_queries = gate_queries
        self.gate_answered_fire = gate_answered_fire
        self.progress = progress
        self.verbose = verbose
        self.base_model_name_or_path = (
            base_model_name_or_path or getattr(base_model.config, "name_or_path", None) or None
        )
        self.base_model_revision = base_model_revision
        self.reports: list[AxisReport] = []

    # ------------------------------------------------------------------ public
    def build(
        self, queries: Sequence[str] | str | Path, output_dir: str | Path | None = None, overwrite: bool = False
    ) -> AlignEZForCausalLM:
        """Build (and, with ``output_dir``, save) the pack; a rerun into the same folder resumes its generation."""
        if isinstance(queries, (str, Path)):
            queries = load_queries(queries)
        queries = [q.strip() for q in queries if q and q.strip()]
        if not queries:
            raise ValueError("No queries to build from: give a non-empty list or query file.")
        out = Path(output_dir) if output_dir is not None else None
        # One build per folder at a time: a second is refused at once rather than mixing its records in.
        with writer_lock(out) if out is not None else contextlib.nullcontext():
            return self._build(queries, out, overwrite)

    def _build(self, queries: list[str], out: Path | None, overwrite: bool) -> AlignEZForCausalLM:
        if out is not None:
            check_output_dir(out, self.identity(), overwrite)
        store = RecordStore(out / RECORDS_FILE if out is not None else None)
        queries = truncate_queries(queries, self.tokenizer, self._query_token_limit())
        aligned = AlignEZForCausalLM.from_base(
            self.model,
            self.tokenizer,
            hook_point=self.strategy.hook_point,
            layer_policy=self.strategy.layer_policy,
            base_model_name_or_path=self.base_model_name_or_path,
            base_model_revision=self.base_model_revision,
        )
        aligned.eval()
        self.reports = [self._build_axis(aligned, axis, queries, store) for axis in self.axes]
        self._measure_overlap(aligned)
        for report in self.reports:
            aligned.update_axis_metadata(report.axis, build=report.as_metadata())
        if self.verbose:
            print(self.summary())
        if out is not None:
            began = time.perf_counter()
            aligned.save_pretrained(out)
            if self.verbose:
                print(f"Saved the pack to {out} in {time.perf_counter() - began:.1f} s.")
        return aligned

    def identity(self) -> dict:
        """What makes two builds the same pack: base model (and its PEFT adapter, if any), strategy and axes."""
        return {
            "base_model_name_or_path": self.base_model_name_or_path,
            "base_adapter_fingerprint": adapter_fields(self.model).get("base_adapter_fingerprint"),
            "axes": [[a.name, a.positive, a.negative, self.strategy.name] for a in self.axes],
        }

    def summary(self) -> str:
        """A readable summary of the last build."""
        return render_summary(self.strategy, self.reports)

    # ------------------------------------------------------------------ stages
    def _build_axis(
        self, aligned: AlignEZForCausalLM, axis: Axis, queries: list[str], store: RecordStore
    ) -> AxisReport:
        s = self.strategy
        report = AxisReport(axis.name, axis.positive, axis.negative, queries=len(queries))
        stats = GenerationStats()
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

        began = time.perf_counter()
        records = None
        if s.generation is not None:
            records = self_generate(
                s.generation,
                aligned.base,
                tok,
                axis,
                queries,
                store,
                self.sampling,
                answer_tokens=s.answer_tokens,
                characteristics_tokens=s.characteristics_tokens,
                batch_size=self.batch_size,
                model_name=self.base_model_name_or_path or "",
                stats=stats,
                progress=self.progress,
            )
            report.seconds["generation"] = time.perf_counter() - began
            if stats.new_tokens:
                report.generation = {
                    "prompts": stats.prompts,  # generated by this run (a resumed build reads the others back)
                    "new_tokens": stats.new_tokens,
                    "tokens_per_second": stats.tokens_per_second,
                }
        sequences, last_k, valid = self._sequences(axis, queries, records)
        report.pairs_generated = len(queries)
        if not bool(valid.any()):
            raise SubspaceError(
                f"Axis {axis.name!r}: the model gave an empty answer on at least one side of every query, so no pair "
                "is usable. Check the model generates text for these prompts (chat template, max_new_tokens), or use "
                "strategy='persona', which needs no generated answers."
            )

        began = time.perf_counter()
        n = len(queries)
        embedded = embed_ids(
            aligned, sequences, pad, self.batch_size * 2, last_k, desc=f"{axis.name}: embedding", progress=self.progress
        )
        report.seconds["embedding"] = time.perf_counter() - began

        began = time.perf_counter()
        num_layers = len(embedded)
        wanted = band_layers(num_layers, s.layer_band)
        fitted: dict[int, LayerSubspace] = {}
        errors: dict[int, SubspaceError] = {}
        norms = torch.zeros(num_layers)
        for layer in range(num_layers):
            pos, neg = embedded[layer][:n], embedded[layer][n:]
            norms[layer] = torch.cat([pos[valid], neg[valid]]).norm(dim=-1).median()
            try:
                fitted[layer] = fit_subspace(
                    pos,
                    neg,
                    layer,
                    method=s.method,
                    energy=s.energy,
                    max_rank=s.max_rank,
                    n_directions=s.n_directions,
                    cos_threshold=s.cos_threshold,
                    valid=valid,
                )
            except SubspaceError as err:
                errors[layer] = err
            report.pairs_kept[layer] = fitted[layer].pairs_kept if layer in fitted else 0
            report.rank[layer] = fitted[layer].rank if layer in fitted else 0
            report.separation[layer] = fitted[layer].separation if layer in fitted else math.nan
        layers = [layer for layer in wanted if layer in fitted]
        missing = [layer for layer in wanted if layer not in fitted]
        if not layers or (missing and s.layer_band is not None):
            raise errors[missing[0]]
        if missing:
            report.warnings.append(f"layers {ranges(missing)} kept no pairs and are not edited")
        report.layers = layers
        directions = {layer: fitted[layer].directions for layer in layers}
        scales = None
        if s.scale == "norm":
            # strength 1.0 pushes by scale_fraction of the layer's typical norm, whatever the model's scale.
            scales = {}
            for layer in layers:
                sub = fitted[layer]
                weights = sub.mean_pos_proj - sub.mean_neg_proj
                weights = weights / weights.norm().clamp_min(1e-12)
                scales[layer] = s.scale_fraction * float(norms[layer]) * weights.clamp_min(0)
                if not bool(scales[layer].any()):
                    scales[layer] = torch.full_like(weights, s.scale_fraction * float(norms[layer]))
        stat_tensors = {
            "norms": norms,
            "separation": torch.tensor([report.separation[i] for i in range(num_layers)]),
            "pairs_kept": torch.tensor([float(report.pairs_kept[i]) for i in range(num_layers)]),
        }
        for layer in layers:
            stat_tensors[f"mean_pos_proj.{layer}"] = fitted[layer].mean_pos_proj
            stat_tensors[f"mean_neg_proj.{layer}"] = fitted[layer].mean_neg_proj
            stat_tensors[f"singular_values.{layer}"] = fitted[layer].singular_values
        report.seconds["subspace"] = time.perf_counter() - began
        sep = [report.separation[i] for i in layers if not math.isnan(report.separation[i])]

        metadata = {
            "strategy": s.name,
            "strategy_settings": {k: v for k, v in asdict(s).items()},
            "sampling": asdict(self.sampling) if s.generation else None,
            "hook_point": s.hook_point,
            "layer_band": [layers[0], layers[-1]],
            "scale": {"kind": s.scale, "fraction_of_norm_per_unit_strength": s.scale_fraction or None},
            "persona_system": [prompts.persona_system(axis, "positive"), prompts.persona_system(axis, "negative")]
            if s.read == "prompt_last" or s.generation == "persona"
            else None,
        }
        aligned.add_axis(
            axis.name,
            directions,
            rule=s.rule,
            strength=1.0,
            scales=scales,
            positive=axis.positive,
            negative=axis.negative,
            stats=stat_tensors,
            replace=True,
            **metadata,
        )

        began = time.perf_counter()
        check = self._self_check(aligned, axis, queries, records, valid)
        report.seconds["self_check"] = time.perf_counter() - began
        if check is not None:
            report.quality = check.as_dict()
            if not check.effective:
                mean_sep = f"{sum(sep) / len(sep):.2f}" if sep else "n/a"
                tips = ("strategy='persona', " if s.name != "persona" else "") + "other keywords, more queries, "
                report.warnings.append(
                    f"the pack is likely to do nothing: steering along {axis.name!r} shifted the model's preference "
                    f"between its own {axis.positive!r} and {axis.negative!r} answers by {check.shift:+.3f} nats/token "
                    f"(reverse {check.reverse_shift:+.3f}), not clearly more than a random direction of the same size "
                    f"({check.random_shift:.3f}). The model may not follow the persona prompts (mean separation "
                    f"{mean_sep}, 0.5 = chance). Try {tips}a higher strength, or a larger model."
                )
        if self.orient and axis.behaviour and s.rule == "additive" and self.orient_queries > 0:
            # After the self-check, which measures the persona contrast as built, whatever its sign.
            # (tanh and relu rules follow the sign of x . theta: flipping theta would change nothing)
            began = time.perf_counter()
            orientation = measure_orientation(
                aligned,
                self.tokenizer,
                axis.name,
                axis.behaviour,
                spread(queries, self.orient_queries),
                strength=self.orient_strength,
                batch_size=self.batch_size * 2,
            )
            report.seconds["orientation"] = time.perf_counter() - began
            if orientation is None:
                report.warnings.append(
                    f"the sign check against {axis.behaviour} was skipped: its scorer needs vaderSentiment "
                    "(pip install 'alignez-hf[eval]'); the sign follows the keyword order, unverified."
                )
            else:
                if orientation.points_backwards:
                    flip_axis(aligned, axis.name)
                    orientation.flipped = True
                report.orientation = orientation.as_dict()
                if orientation.flipped:
                    report.warnings.append(
                        f"the {axis.positive!r} - {axis.negative!r} contrast LOWERED {axis.behaviour} on this model "
                        f"({orientation.measured()}, as built); the builder flipped the axis so that +strength raises "
                        f"{axis.behaviour}. The model likely reads the persona words rather than playing the roles."
                    )

        if self.gate and axis.behaviour == "refusal":
            began = time.perf_counter()
            fit = (fit_prefill_gate if self.gate == "prefill" else fit_gate)(
                aligned,
                self.tokenizer,
                axis.name,
                queries,
                max_queries=self.gate_queries,
                answered_fire=self.gate_answered_fire,
                batch_size=self.batch_size * 2,
            )
            report.seconds["gate"] = time.perf_counter() - began
            report.gate = fit.as_dict()
            if not fit.added:
                report.warnings.append(f"no harm gate was added: {fit.reason}; the axis steers every prompt.")

        if sep and sum(sep) / len(sep) < 0.6:
            report.warnings.append(
                f"the pairs separate barely better than chance on the edited layers (mean {sum(sep) / len(sep):.2f}, "
                "0.5 = chance): the two sides of the axis look alike to the model."
            )
        for text in report.warnings:
            warnings.warn(f"Axis {axis.name!r}: {text}", stacklevel=3)
        return report

    def _measure_overlap(self, aligned: AlignEZForCausalLM) -> None:
        """Record, for every pair of axes, the cosine between their subspaces on each layer both edit."""
        directions = {r.axis: aligned.axis_tensors(r.axis)["directions"] for r in self.reports}
        for i, r in enumerate(self.reports):
            for other in self.reports[i + 1 :]:
                mine, theirs = directions[r.axis], directions[other.axis]
                by_layer = {
                    layer: subspace_cosine(mine[layer], theirs[layer]) for layer in sorted(set(mine) & set(theirs))
                }
                r.subspace_cosine[other.axis] = by_layer
                other.subspace_cosine[r.axis] = dict(by_layer)

    def _sequences(
        self, axis: Axis, queries: list[str], records: list[dict] | None
    ) -> tuple[list[list[int]], list[int] | None, torch.Tensor]:
        """Token ids to embed (positive side of every query, then negative), per-row window sizes, usable pairs."""
        tok, s = self.tokenizer, self.strategy
        if s.read == "prompt_last":
            seqs = [
                encode(tok, chat_prompt(tok, q, system=prompts.persona_system(axis, side)))
                for side in ("positive", "negative")
                for q in queries
            ]
            return seqs, None, torch.ones(len(queries), dtype=torch.bool)
        seqs, last_k = [], []
        valid = torch.tensor(
            [bool(r["answers"]["positive"].strip() and r["answers"]["negative"].strip()) for r in records]
        )
        for side in ("positive", "negative"):
            for record in records:
                # The answer follows the plain query (no persona) so the contrast is in what was written, not asked.
                head = encode(tok, chat_prompt(tok, record["query"]))
                tail = tok(record["answers"][side], add_special_tokens=False)["input_ids"]
                if s.read == "answer_mean":
                    tail = tail[: s.answer_tokens]
                seqs.append(head + tail)
                last_k.append(max(1, len(tail)) if s.read == "answer_mean" else 1)
        return seqs, (last_k if s.read == "answer_mean" else None), valid

    def _self_check(self, aligned, axis: Axis, queries, records, valid) -> SelfCheck | None:
        """Run the quality self-check on a few build queries (persona continuations, generated if needed)."""
        if self.check_queries <= 0:
            return None
        if records is not None:
            rows = [
                (r["query"], *(_first_tokens(self.tokenizer, r["answers"][side]) for side in ("positive", "negative")))
                for r, ok in zip(records, valid.tolist())
                if ok
            ][: self.check_queries]
        else:
            chosen = queries[: self.check_queries]
            texts = [
                chat_prompt(self.tokenizer, q, system=prompts.persona_system(axis, side))
                for side in ("positive", "negative")
                for q in chosen
            ]
            greedy = SamplingSettings(do_sample=False, seed=self.sampling.seed)
            made = generate_texts(aligned.base, self.tokenizer, texts, CHECK_TOKENS, greedy, self.batch_size * 2)
            rows = [(q, made[i], made[i + len(chosen)]) for i, q in enumerate(chosen)]
        rows = [r for r in rows if r[1].strip() and r[2].strip()]
        if not rows:
            return None
        return self_check(aligned, self.tokenizer, axis.name, rows, strength=1.0, seed=self.sampling.seed)

    def _query_token_limit(self) -> int:
        if self.max_query_tokens:
            return self.max_query_tokens
        context = getattr(self.model.config, "max_position_embeddings", None) or 2048
        # Leave room for the template, the persona or step-A/B instructions, and the generated tokens.
        reserve = 96 + self.strategy.answer_tokens + self.strategy.characteristics_tokens
        return max(16, min(1024, context - reserve))


def _first_tokens(tokenizer, text: str, n: int = CHECK_TOKENS) -> str:
    return tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:n])
