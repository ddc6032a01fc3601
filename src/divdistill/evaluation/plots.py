"""The evaluation report's plots (matplotlib, Agg): metric vs seconds per image, per prompt, and ablations."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from divdistill.evaluation.formatting import finite, short
from divdistill.evaluation.results import EvalResult, Metric
from divdistill.images import atomic_write


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())
    return path


def _errors(estimates: Sequence[Any]) -> list[list[float]] | None:
    lows, highs = [], []
    for e in estimates:
        ok = finite(e.low) and finite(e.high)
        lows.append(max(e.value - e.low, 0) if ok else 0.0)
        highs.append(max(e.high - e.value, 0) if ok else 0.0)
    return [lows, highs] if any(lows) or any(highs) else None


def plot_vs_time(result: EvalResult, m: Metric, path: Path) -> Path | None:
    points = []
    for s in result.sets:
        seconds = (result.speed.get(s.name) or {}).get("seconds_per_image")
        est = result.averages.get((s.name, m.name))
        if finite(seconds) and est is not None and finite(est.value):
            points.append((s.name, seconds, est))
    if not points:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, seconds, est in points:
        ax.errorbar([seconds], [est.value], yerr=_errors([est]), fmt="o", capsize=3, label=name)
        ax.annotate(name, (seconds, est.value), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("seconds per image (whole pipeline)")
    ax.set_ylabel(m.name)
    ax.set_title(f"{m.name} vs time per image", fontsize=10)
    if len(points) > 1 and max(p[1] for p in points) / max(min(p[1] for p in points), 1e-9) > 20:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_per_prompt(result: EvalResult, m: Metric, path: Path) -> Path | None:
    prompts = result.prompts()
    sets = [s for s in result.sets if (s.name, m.name) in result.per_prompt]
    if not sets or not prompts:
        return None
    plt = _plt()
    width = 0.8 / len(sets)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * (len(prompts) + 1) * max(1, len(sets) / 3)), 4))
    labels = [short(p, 24) or i for i, p in prompts] + ["average"]
    for k, s in enumerate(sets):
        found = dict(result.per_prompt[(s.name, m.name)])
        estimates = [found.get(i) for i, _ in prompts] + [result.averages.get((s.name, m.name))]
        xs = [j + (k - (len(sets) - 1) / 2) * width for j in range(len(labels))]
        present = [(x, e) for x, e in zip(xs, estimates) if e is not None and finite(e.value)]
        if present:
            ax.bar([x for x, _ in present], [e.value for _, e in present], width, label=s.name,
                   yerr=_errors([e for _, e in present]), capsize=2)  # fmt: skip
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(m.name)
    ax.set_title(f"{m.name} per prompt", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_ablation(result: EvalResult, m: Metric, x_key: str, line_key: str, path: Path, xlabel: str) -> Path | None:
    """The metric against `x_key` (base_steps or base_guidance_scale), one line per value of `line_key`."""
    lines: dict[Any, list[tuple[float, Any, str]]] = {}
    for s in result.sets:
        sampling = result.sampling.get(s.name) or {}
        est = result.averages.get((s.name, m.name))
        x = sampling.get(x_key)
        if sampling.get("mode") not in ("hybrid", "distilled") or not finite(x) or est is None:
            continue
        if x_key == "base_guidance_scale" and not sampling.get("base_steps"):
            continue
        line = sampling.get(line_key)
        if x_key == "base_steps" and x == 0:  # distilled: no base guidance; it joins every line
            line = "*"
        lines.setdefault(line, []).append((float(x), est, s.name))
    if "*" in lines:
        shared = lines.pop("*")
        for points in lines.values():
            points.extend(shared)
        if not lines:
            lines[None] = shared
    lines = {k: sorted(v, key=lambda p: p[0]) for k, v in lines.items() if len({p[0] for p in v}) >= 2}
    if not lines:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for line, points in lines.items():
        label = f"{line_key.replace('_', ' ')} = {line:g}" if finite(line) else None
        ax.errorbar([p[0] for p in points], [p[1].value for p in points], yerr=_errors([p[1] for p in points]),
                    marker="o", capsize=3, label=label)  # fmt: skip
        for x, est, name in points:
            ax.annotate(name, (x, est.value), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(m.name)
    ax.set_title(f"{m.name} vs {xlabel}", fontsize=10)
    if any(finite(k) for k in lines):
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def write_plots(result: EvalResult, folder: Path) -> list[tuple[str, Path]]:
    """Every plot that applies, as (caption, path)."""
    plots: list[tuple[str, Path]] = []
    for m in result.metrics:
        if m.kind != "prompt":
            continue
        made = [
            (f"{m.name} vs seconds per image (one point per mode)",
             plot_vs_time(result, m, folder / f"{m.name}_vs_seconds.png")),
            (f"{m.name} per prompt", plot_per_prompt(result, m, folder / f"{m.name}_per_prompt.png")),
            (f"{m.name} vs base steps (distilled = 0)",
             plot_ablation(result, m, "base_steps", "base_guidance_scale", folder / f"{m.name}_vs_base_steps.png",
                           "base steps")),
            (f"{m.name} vs base guidance scale",
             plot_ablation(result, m, "base_guidance_scale", "base_steps", folder / f"{m.name}_vs_base_guidance.png",
                           "base guidance scale")),
        ]  # fmt: skip
        plots += [(caption, path) for caption, path in made if path is not None]
    return plots
