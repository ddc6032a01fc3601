"""Write the analysis: `curves.json` / `curves.csv` and an `index.html` that shows every figure.

The page is static (relative links, no network) and, like every report page, records on <body> whether each
<img> decoded (see divdistill.htmlpage).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divdistill.htmlpage import escape, page_end, page_start
from divdistill.images import atomic_write, finite_or_none, write_json_atomic
from divdistill.trajectory.curves import Curve

CSV_COLUMNS = ("curve", "mode", "metric", "step", "fraction", "timestep", "model", "mean", "std", "min", "max", "n")


PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1em; margin-bottom: .3em; }
figure { display: inline-block; margin: .4em 1em .8em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; image-rendering: pixelated; }
figcaption { font-size: .85em; color: #555; }
table { border-collapse: collapse; font-size: .9em; } td, th { padding: .2em .8em; text-align: left; }
tr:nth-child(even) { background: #f6f6f6; } code { background: #f2f2f2; padding: 0 .2em; }
#image-status { font-size: .8em; color: #777; }
"""


@dataclass
class Item:
    """One figure on the page: `src` relative to the page."""

    src: str
    caption: str = ""
    link: bool = True


@dataclass
class Section:
    heading: str
    items: list[Item] = field(default_factory=list)
    text: str = ""


def _number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


def write_curves_csv(curves: Sequence[Curve], path: str | Path) -> Path:
    """One row per curve and step: curve, mode, metric, step, fraction, timestep, model, mean, std, min, max, n."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for curve in curves:
        for row in curve.rows():
            writer.writerow({k: _number(v) for k, v in row.items()})
    with atomic_write(path, "w") as handle:
        handle.write(buffer.getvalue())
    return Path(path)


def write_curves_json(curves: Sequence[Curve], path: str | Path, metric: Mapping[str, Any], **extra: Any) -> Path:
    """`{"metric": ..., "curves": [...], **extra}` (NaN written as null)."""
    data = {"metric": dict(metric), "curves": [curve.to_dict() for curve in curves], **extra}
    return write_json_atomic(finite_or_none(data), path)


def render_index(title: str, summary: Sequence[tuple[str, str]], sections: Sequence[Section]) -> str:
    """The HTML text of the page."""
    e = escape
    parts = page_start(title, PAGE_STYLE)
    if summary:
        parts.append("<table>")
        parts.extend(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in summary)
        parts.append("</table>")
    for section in sections:
        parts.append(f"<h2>{e(section.heading)}</h2>")
        if section.text:
            parts.append(f"<p>{e(section.text)}</p>")
        for item in section.items:
            image = f'<img src="{e(item.src, quote=True)}" alt="{e(item.caption or item.src, quote=True)}">'
            if item.link:
                image = f'<a href="{e(item.src, quote=True)}">{image}</a>'
            caption = f"<figcaption>{e(item.caption)}</figcaption>" if item.caption else ""
            parts.append(f"<figure>{image}{caption}</figure>")
    return page_end(parts)


def write_index(path: str | Path, title: str, summary: Sequence[tuple[str, str]], sections: Sequence[Section]) -> Path:
    """Write `index.html` atomically; every `Item.src` must exist next to it (checked)."""
    path = Path(path)
    missing = [item.src for s in sections for item in s.items if not (path.parent / item.src).is_file()]
    if missing:
        raise FileNotFoundError(f"index.html would link missing files: {', '.join(missing[:5])}")
    with atomic_write(path, "w") as handle:
        handle.write(render_index(title, summary, sections))
    return path
