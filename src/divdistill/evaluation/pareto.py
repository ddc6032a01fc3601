"""Which methods are worth it: the Pareto front of diversity against quality and against seconds per image.

A variant is on the front when no other one is at least as diverse and at least as good on the other axis
(higher quality, or fewer seconds per image) and strictly better on one. `write_pareto_plots` draws both
planes with the front joined up, so a user picks a method for their pair from data (`benchmarks/
diversity_methods.py` feeds it the pocket pair's table; any rows with these keys work).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from divdistill.evaluation.plots import _plt, _save


def pareto_front(rows: Sequence[Mapping[str, Any]], x: str, y: str, x_lower: bool = False) -> list[str]:
    """Names of the rows not dominated on (x, y): y higher is better; x higher is better unless `x_lower`."""

    def better_or_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        ax, bx = (-a[x], -b[x]) if x_lower else (a[x], b[x])
        return ax >= bx and a[y] >= b[y]

    front = []
    for row in rows:
        dominated = any(better_or_equal(other, row) and (other[x], other[y]) != (row[x], row[y]) for other in rows)
        if not dominated:
            front.append(row["name"])
    return front


def write_pareto_plots(
    rows: Sequence[Mapping[str, Any]],
    folder: str | Path,
    diversity: str = "diversity",
    quality: str | None = "quality",
) -> dict[str, Path]:
    """`pareto_quality.png` (diversity vs quality; not without a quality key) and `pareto_speed.png` (diversity
    vs seconds per image)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    written = {}
    planes = [("quality", quality, False, quality)] if quality is not None else []
    for key, x, lower, label in [*planes, ("speed", "seconds_per_image", True, "seconds per image")]:
        front = pareto_front(rows, x, diversity, x_lower=lower)
        fig, ax = plt.subplots(figsize=(7, 5))
        for row in rows:
            on = row["name"] in front
            ax.scatter(row[x], row[diversity], c="tab:red" if on else "tab:gray", s=28)
            ax.annotate(row["name"], (row[x], row[diversity]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        line = sorted((r for r in rows if r["name"] in front), key=lambda r: r[x])
        ax.plot([r[x] for r in line], [r[diversity] for r in line], c="tab:red", lw=1)
        if lower:
            ax.set_xscale("log")
        ax.set_xlabel(label + (" (lower is better)" if lower else ""))
        ax.set_ylabel(diversity)
        ax.set_title(f"{diversity} against {label}: Pareto front in red")
        written[key] = _save(fig, folder / f"pareto_{key}.png")
    return written


def result_rows(result: Any) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """An `EvalResult`'s sets as Pareto rows: its first diversity metric, its first other higher-is-better prompt
    metric as quality (CLIP score, a pair's adherence; None when there is none) and seconds per image."""
    prompt_metrics = [m for m in result.metrics if m.kind == "prompt"]
    diversity = next((m.name for m in prompt_metrics if m.metric in ("diversity", "vendi")), None)
    quality = next(
        (m.name for m in prompt_metrics if m.metric not in ("diversity", "vendi") and m.better == "higher"), None
    )
    rows = []
    for image_set in result.sets:
        seconds = (result.speed.get(image_set.name) or {}).get("seconds_per_image")
        value = result.averages.get((image_set.name, diversity)) if diversity else None
        if seconds is None or value is None:
            continue
        row = {"name": image_set.name, diversity: value.value, "seconds_per_image": seconds}
        if quality and (image_set.name, quality) in result.averages:
            row[quality] = result.averages[(image_set.name, quality)].value
        rows.append(row)
    return rows, diversity, quality


def result_pareto_plots(result: Any, folder: str | Path) -> list[tuple[str, Path]]:
    """The eval report's Pareto plots (as `write_plots`' (caption, path) pairs); none for fewer than 2 sets."""
    rows, diversity, quality = result_rows(result)
    if len(rows) < 2 or diversity is None:
        return []
    if quality is not None and any(quality not in r for r in rows):
        quality = None
    written = write_pareto_plots(rows, folder, diversity=diversity, quality=quality)
    plots = [(f"{diversity} vs seconds per image: Pareto front", written["speed"])]
    if quality is not None:
        plots.insert(0, (f"{diversity} vs {quality}: Pareto front", written["quality"]))
    return plots
