"""Writing evaluation results: atomic JSON, a markdown table, matplotlib plots, and a summary a pack can carry."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..runtime.atomic import write_text_atomically

# Metrics shown in tables and plots, with how they are printed and titled.
SHOWN = {
    "refusal": ("refusal rate", "{:.0%}"),
    "sentiment": ("sentiment (VADER compound)", "{:+.2f}"),
    "readability": ("readability (Flesch)", "{:.0f}"),
    "words": ("answer length (words)", "{:.0f}"),
    "nll": ("NLL under base (nats/token)", "{:.2f}"),
    "context": ("prompt tokens vs plain", "{:+.0f}"),
}
# Plot line style of each condition (strength 0, the base, starts every line).
STYLES = {"axis": "-", "random": "--", "prompt": ":", "prompt+axis": "-."}
SUMMARY_KEY = "evaluation"


def _clean(value: Any) -> Any:
    """Replace NaN/Inf by None so the JSON is standard (json.dumps would write NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON next to ``path`` and move it into place, so readers never see half a file."""
    write_text_atomically(Path(path), json.dumps(_clean(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def _cell(summary: dict | None, fmt: str) -> str:
    if not summary or summary.get("value") is None or not math.isfinite(summary["value"]):
        return "n/a"
    text = fmt.format(summary["value"])
    if summary.get("low") is not None and math.isfinite(summary.get("low", math.nan)):
        text += f" [{fmt.format(summary['low'])}, {fmt.format(summary['high'])}]"
    return text


def results_markdown(results: dict) -> str:
    """A markdown report: one table per prompt set (rows = setting x condition x strength), then KL and caveats."""
    meta = results["meta"]
    lines = ["# Evaluation results", ""]
    lines.append(
        f"Greedy decoding, {meta['max_new_tokens']} new tokens, seed {meta['seed']}; {meta['intervals']}. "
        "Strength 0 is the unsteered base model; `random` is a random-direction axis of the same size; `prompt` is "
        "the axis's persona words as a system message (strength +1 / -1: which pole; other strengths: rungs of the "
        "wording dial, listed below), `prompt+axis` both at once. "
        "NLL is always that of the answer after the plain prompt, under the base."
    )
    lines.append("")
    for s in results["settings"]:
        lines.append(
            f"- **{s['label']}**: axis `{s['axis']}` of {s['pack'] or 'an in-memory pack'} on {s['base_model']}; "
            f"rule {s['rule']}, hook {s['hook_point']}, policy {s['layer_policy']}, layers {s['layers']}"
        )
        for strength, message in s.get("prompt_messages", {}).items():
            lines.append(f"  - `prompt` {strength}: {json.dumps(message)}")
    agreement = meta.get("refusal_detector")
    if agreement:
        lines += [
            "",
            f"Refusal detector agreement with pyrit's hand-labelled refusal.csv: {agreement['accuracy']:.1%} "
            f"(n={agreement['n']}; TP {agreement['true_positive']}, FP {agreement['false_positive']}, "
            f"TN {agreement['true_negative']}, FN {agreement['false_negative']}).",
        ]
    for set_name, info in meta["prompt_sets"].items():
        lines += ["", f"## Prompt set `{set_name}` (n = {info['n']})", ""]
        header = ["setting", "condition", "strength"] + [SHOWN[m][0] for m in SHOWN] + ["NLL / base"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in results["rows"]:
            if row["prompt_set"] != set_name:
                continue
            cells = [row["setting"], row["condition"], f"{row['strength']:g}"]
            cells += [_cell(row["metrics"].get(m), fmt) for m, (_, fmt) in SHOWN.items()]
            cells.append(_cell(row["metrics"].get("nll_ratio"), "{:.2f}"))
            lines.append("| " + " | ".join(cells) + " |")
    if results.get("kl"):
        kl_meta = meta.get("kl_prompt_set") or {}
        lines += ["", f"## Next-token KL(steered || base) on neutral prompts (n = {kl_meta.get('n')})", ""]
        lines += ["| setting | condition | strength | KL (nats) |", "|---|---|---|---|"]
        for row in results["kl"]:
            lines.append(
                f"| {row['setting']} | {row['condition']} | {row['strength']:g} | {_cell(row['kl'], '{:.4f}')} |"
            )
    lines += ["", "## Not measured", "", meta["not_measured"], ""]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    return plt


def _errorbar(ax, xs, summaries, **style) -> None:
    ys = [s["value"] if s["value"] is not None else math.nan for s in summaries]
    low = [max(0.0, y - (s.get("low") if s.get("low") is not None else y)) for y, s in zip(ys, summaries)]
    high = [max(0.0, (s.get("high") if s.get("high") is not None else y) - y) for y, s in zip(ys, summaries)]
    ax.errorbar(xs, ys, yerr=[low, high], capsize=3, marker="o", markersize=4, **style)


def plot_metrics(results: dict, out_dir: str | os.PathLike) -> list[Path]:
    """One PNG per prompt set: each metric against strength, a line per setting, random control dashed."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    paths = []
    for set_name in results["meta"]["prompt_sets"]:
        panels = list(SHOWN) + (["kl"] if results.get("kl") else [])
        cols = 3
        rows_n = math.ceil(len(panels) / cols)
        fig, grid = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.3 * rows_n), squeeze=False)
        flat = list(grid.flat)
        for ax in flat[len(panels) :]:
            ax.set_visible(False)
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for k, setting in enumerate(results["settings"]):
            colour = colours[k % len(colours)]
            rows = [r for r in results["rows"] if r["setting"] == setting["label"] and r["prompt_set"] == set_name]
            base = [r for r in rows if r["strength"] == 0]
            for condition, style in STYLES.items():
                picked = sorted(
                    base + [r for r in rows if r["condition"] == condition and r["strength"] != 0],
                    key=lambda r: r["strength"],
                )
                if condition != "axis" and len(picked) <= len(base):
                    continue
                label = setting["label"] if condition == "axis" else f"{setting['label']} ({condition})"
                xs = [r["strength"] for r in picked]
                for ax, metric in zip(flat, SHOWN):
                    _errorbar(
                        ax, xs, [r["metrics"][metric] for r in picked], color=colour, linestyle=style, label=label
                    )
                if "kl" in panels:
                    kl = [
                        r
                        for r in results["kl"]
                        if r["setting"] == setting["label"] and (r["condition"] == condition or r["strength"] == 0)
                    ]
                    kl.sort(key=lambda r: r["strength"])
                    if kl:
                        _errorbar(
                            flat[len(SHOWN)],
                            [r["strength"] for r in kl],
                            [r["kl"] for r in kl],
                            color=colour,
                            linestyle=style,
                            label=label,
                        )
        for ax, metric in zip(flat, panels):
            ax.set_title(SHOWN[metric][0] if metric in SHOWN else "KL(steered || base), neutral", fontsize=9)
            ax.set_xlabel("strength")
            ax.grid(alpha=0.3)
        flat[0].legend(fontsize=7)
        n = results["meta"]["prompt_sets"][set_name]["n"]
        fig.suptitle(f"prompt set '{set_name}' (n = {n}, 95% intervals)", fontsize=10)
        fig.tight_layout()
        # A prompt set given as a file path is named by its file's stem (a path would name folders that do not exist).
        stem = Path(set_name).stem if ("/" in set_name or os.sep in set_name) else set_name
        path = out_dir / f"metrics_{stem}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_results(
    results: dict, out_dir: str | os.PathLike, answers: list[dict] | None = None, plots: bool = True
) -> dict[str, Path]:
    """Write ``results.json``, ``results.md``, ``answers.json`` and (with ``plots``) ``metrics_<set>.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    write_json_atomic(written["json"], {k: v for k, v in results.items() if k != "answers"})
    write_text_atomically(written["markdown"], results_markdown(results))
    if answers is not None:
        written["answers"] = out_dir / "answers.json"
        write_json_atomic(written["answers"], answers)
    if plots:
        for path in plot_metrics(results, out_dir):
            written[path.stem] = path
    return written


def plot_heatmaps(sweep: dict, path: str | os.PathLike) -> Path:
    """Both scores of a two-axis sweep as side-by-side heatmaps (rows: axis a strength, columns: axis b)."""
    plt = _pyplot()
    from matplotlib import patheffects

    outline = [patheffects.withStroke(linewidth=2, foreground="black")]  # readable on light and dark cells
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key, scorer in ((axes[0], "score_a", sweep["scorer_a"]), (axes[1], "score_b", sweep["scorer_b"])):
        grid = [[math.nan if v is None else v for v in row] for row in sweep[key]]
        image = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(
                    j,
                    i,
                    "n/a" if math.isnan(v) else f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white",
                    path_effects=outline,
                )
        ax.set_xticks(range(len(sweep["strengths_b"])), [f"{s:g}" for s in sweep["strengths_b"]])
        ax.set_yticks(range(len(sweep["strengths_a"])), [f"{s:g}" for s in sweep["strengths_a"]])
        ax.set_xlabel(f"strength of {sweep['axis_b']}")
        ax.set_ylabel(f"strength of {sweep['axis_a']}")
        ax.set_title(f"{scorer} (n = {sweep['meta']['n']})", fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.85)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep_markdown(sweep: dict) -> str:
    """Markdown grids of both scores of a two-axis sweep, with own-axis and cross-axis movement."""
    lines = [f"# Two-axis sweep: {sweep['axis_a']} x {sweep['axis_b']}", ""]
    lines.append(f"n = {sweep['meta']['n']} prompts from `{sweep['meta']['prompt_set']}`, greedy decoding.")
    for key, scorer in (("score_a", sweep["scorer_a"]), ("score_b", sweep["scorer_b"])):
        lines += ["", f"## {scorer} (rows: {sweep['axis_a']}, columns: {sweep['axis_b']})", ""]
        lines.append("| | " + " | ".join(f"{s:g}" for s in sweep["strengths_b"]) + " |")
        lines.append("|---|" + "---|" * len(sweep["strengths_b"]))
        for s, row in zip(sweep["strengths_a"], sweep[key]):
            lines.append(
                f"| {s:g} | " + " | ".join("n/a" if v is None or math.isnan(v) else f"{v:.2f}" for v in row) + " |"
            )
    lines += [
        "",
        f"Mean movement of {sweep['scorer_a']}: along {sweep['axis_a']} {sweep['own']['a']:.3f}, "
        f"along {sweep['axis_b']} {sweep['cross']['a']:.3f}. Mean movement of {sweep['scorer_b']}: along "
        f"{sweep['axis_b']} {sweep['own']['b']:.3f}, along {sweep['axis_a']} {sweep['cross']['b']:.3f}.",
        "",
    ]
    return "\n".join(lines)


def write_sweep(sweep: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``sweep.json``, ``sweep.md`` and ``heatmap_<a>_<b>.png`` for a two-axis sweep."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"json": out_dir / "sweep.json", "markdown": out_dir / "sweep.md"}
    write_json_atomic(written["json"], sweep)
    write_text_atomically(written["markdown"], sweep_markdown(sweep))
    written["heatmap"] = plot_heatmaps(sweep, out_dir / f"heatmap_{sweep['axis_a']}_{sweep['axis_b']}.png")
    return written


def evaluation_summary(results: dict) -> dict:
    """A compact, JSON-ready summary of a harness run for a pack's config and model card."""
    meta = results["meta"]
    summary = {
        "seed": meta["seed"],
        "decoding": meta["decoding"],
        "max_new_tokens": meta["max_new_tokens"],
        "prompt_sets": meta["prompt_sets"],
        "intervals": meta["intervals"],
        "refusal_detector_accuracy": (meta.get("refusal_detector") or {}).get("accuracy"),
        "settings": [
            {k: s[k] for k in ("label", "axis", "rule", "hook_point", "layer_policy")} for s in results["settings"]
        ],
        "rows": [],
        "not_measured": meta["not_measured"],
    }
    for row in results["rows"]:
        entry = {k: row[k] for k in ("setting", "prompt_set", "condition", "strength", "n")}
        for metric in SHOWN:
            m = row["metrics"][metric]
            entry[metric] = [m.get("value"), m.get("low"), m.get("high")]
        summary["rows"].append(entry)
    kl = {(r["setting"], r["condition"], r["strength"]): r["kl"] for r in results.get("kl", [])}
    for entry in summary["rows"]:
        k = kl.get((entry["setting"], entry["condition"], entry["strength"]))
        if k is not None and entry["prompt_set"] == "neutral":
            entry["kl"] = [k.get("value"), k.get("low"), k.get("high")]
    return _clean(summary)


def attach_evaluation(target: Any, results: dict) -> dict:
    """Store a run's summary as ``config.evaluation`` of a model, or in the ``config.json`` of a pack folder."""
    summary = evaluation_summary(results)
    if isinstance(target, (str, os.PathLike)):
        path = Path(target) / "config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        config[SUMMARY_KEY] = summary
        write_json_atomic(path, config)
    else:
        setattr(target.config, SUMMARY_KEY, summary)  # PretrainedConfig keeps extra attributes in config.json
    return summary
