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
    rows: Sequence[Mapping[str, Any]], folder: str | Path, diversity: str = "diversity", quality: str = "quality"
) -> dict[str, Path]:
    """`pareto_quality.png` (diversity vs quality) and `pareto_speed.png` (diversity vs seconds per image)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    written = {}
    for key, x, lower, label in (
        ("quality", quality, False, quality),
        ("speed", "seconds_per_image", True, "seconds per image"),
    ):
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
