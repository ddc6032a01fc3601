"""Write an evaluation: metrics.csv, metrics.json, metrics.md, plots/ and an index.html with sample grids.

metrics.md follows the paper's two tables: per metric, prompts as rows and modes as columns with the prompt
average last (then the bootstrap intervals in the same layout); and one row per mode with steps, FID, KID, IS,
CLIP score, precision/recall, seconds per image, NFE per image and peak memory (columns only for what was
computed). Fallback metrics are marked in every file (a `fallback` column, a note, "(fallback)" in labels).

index.html is static (relative links, no network). Like the trajectory report it records on <body> whether every
<img> decoded (see divdistill.htmlpage) for a headless-browser check, and shows the same as a line of text.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from divdistill.evaluation.formatting import finite, fmt, metric_digits, short
from divdistill.evaluation.pareto import result_pareto_plots
from divdistill.evaluation.plots import write_plots
from divdistill.evaluation.results import EvalResult, Metric
from divdistill.htmlpage import escape, page_end, page_start
from divdistill.images import atomic_write, contact_sheet, finite_or_none, save_image_atomic, write_json_atomic
from divdistill.jobs import safe_id

CSV_COLUMNS = ("mode", "prompt_id", "prompt", "metric", "backend", "label", "fallback", "value", "ci_low", "ci_high",
               "std", "n")  # fmt: skip
GRID_IMAGES = 8
GRID_THUMB = 128


# ----------------------------------------------------------------------------------------------- tables
def prompt_table(result: EvalResult, m: Metric, intervals: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paper's diversity table for one per-prompt metric (average last)."""
    sets = result.sets
    header = ["prompt", *[s.name for s in sets]]
    digits = metric_digits(m.metric)

    def cell(est: Any) -> str:
        if est is None:
            return "–"
        if intervals:
            return f"[{fmt(est.low, digits)}, {fmt(est.high, digits)}]" if finite(est.low) else "–"
        return fmt(est.value, digits)

    rows = []
    for group_id, prompt in result.prompts():
        values = []
        for s in sets:
            found = dict(result.per_prompt.get((s.name, m.name), []))
            values.append(cell(found.get(group_id)))
        rows.append([short(prompt) or group_id, *values])
    rows.append(["average", *[cell(result.averages.get((s.name, m.name))) for s in sets]])
    return header, rows


def summary_table(result: EvalResult) -> tuple[list[str], list[list[str]]]:
    """The paper's FID table: one row per mode."""
    columns: list[tuple[str, Any]] = [("method", None), ("steps", None)]
    order = ("fid", "kid", "is", "clip-score", "precision", "recall", "density", "coverage")  # the paper's, then more
    quality = [m for m in result.metrics if m.kind in ("set", "reference") or m.metric == "clip-score"]
    columns += [(m.name, m) for m in sorted(quality, key=lambda m: order.index(m.metric))]
    prompt_metrics = [m for m in result.metrics if m.kind == "prompt" and m.metric != "clip-score"]
    columns += [(m.name, m) for m in prompt_metrics]
    unit = sample_unit(result)  # a video pair's sample is a clip: its speed is per clip
    speed_columns = [(f"time (s/{unit})", "seconds_per_image", 3), (f"NFE/{unit}", "nfe_per_image", 1),
                     ("peak memory (MB)", "peak_memory_mb", 0)]  # fmt: skip
    speeds = [result.speed.get(s.name) or {} for s in result.sets]
    speed_used = [c for c in speed_columns if any(finite(sp.get(c[1])) for sp in speeds)]
    header = [name if m is None else _column_title(m) for name, m in columns] + [c[0] for c in speed_used]
    rows = []
    for image_set, speed in zip(result.sets, speeds):
        sampling = result.sampling.get(image_set.name) or {}
        row = [image_set.name, str(sampling.get("steps") or "–")]
        for _, m in columns[2:]:
            if m.kind == "prompt":
                est = result.averages.get((image_set.name, m.name))
                row.append(fmt(est.value if est else None, metric_digits(m.metric)))
            else:
                values = result.set_values.get((image_set.name, m.name)) or {}
                text = fmt(values.get("value"), metric_digits(m.metric))
                if finite(values.get("std")):
                    text += f" ± {fmt(values['std'], metric_digits(m.metric))}"
                row.append(text)
        row += [fmt(speed.get(key), digits) for _, key, digits in speed_used]
        rows.append(row)
    return header, rows


def sample_unit(result: EvalResult) -> str:
    """"clip" when the evaluated sets hold clips (a video pair's samples), else "image"."""
    from divdistill.metrics.video import is_clip_file

    files = (rel for s in result.sets for g in s.groups for rel in g.files[:1])
    return "clip" if any(is_clip_file(rel) for rel in files) else "image"


def _column_title(m: Metric) -> str:
    title = {"fid": "FID", "kid": "KID", "is": "IS", "clip-score": "CLIP"}.get(m.metric, m.metric)
    return f"{title} ({m.backend}{', fallback' if m.fallback else ''})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], bold_last: bool = False) -> str:
    def esc(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    for index, row in enumerate(rows):
        cells = [esc(c) for c in row]
        if bold_last and index == len(rows) - 1:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(result: EvalResult, title: str = "divdistill evaluation") -> str:
    level = round(100 * float(result.config.get("level", 0.95)))
    parts = [f"# {title}", "", _overview(result), ""]
    parts += [f"> **Note:** {note}" + "\n" for note in result.notes]
    for m in result.metrics:
        if m.kind != "prompt":
            continue
        better = "higher is better" if m.better == "higher" else "lower is better"
        parts += [f"## {m.name}", "", f"{m.label}; {better}.", ""]
        parts += [markdown_table(*prompt_table(result, m), bold_last=True), ""]
        header, rows = prompt_table(result, m, intervals=True)
        if any(c != "–" for row in rows for c in row[1:]):
            boots = result.config.get("bootstrap")
            parts += [f"{level}% bootstrap intervals over seeds ({boots} resamples):", ""]
            parts += [markdown_table(header, rows, bold_last=True), ""]
    parts += ["## Quality and speed", "", markdown_table(*summary_table(result)), ""]
    parts += [_speed_note(result), ""]
    return "\n".join(parts)


def _overview(result: EvalResult) -> str:
    def count(n: int, what: str) -> str:
        return f"{n} {what}" + ("" if n == 1 else "s")

    sets = ", ".join(f"`{s.name}` ({count(len(s.groups), 'prompt')}, {count(len(s.files), 'image')})"
                     for s in result.sets)  # fmt: skip
    text = f"Modes: {sets}."
    if result.reference is not None:
        text += f" Reference: `{result.reference.root}` ({len(result.reference.files)} images)."
    return text


def _speed_note(result: EvalResult) -> str:
    kinds = {(result.speed.get(s.name) or {}).get("peak_memory_kind") for s in result.sets} - {None}
    text = (
        "Time is the whole pipeline per image (prompt encoding, every base and distilled step, decoding), the "
        "median over pipeline calls of call seconds / images; NFE counts network evaluations (a CFG step counts 2)."
    )
    if kinds:
        text += f" Peak memory: {', '.join(sorted(kinds))}."
    return text


# ----------------------------------------------------------------------------------------------- files
def write_csv(result: EvalResult, path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in result.rows():
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v)
                         for k, v in row.items()})  # fmt: skip
    with atomic_write(path, "w") as handle:
        handle.write(buffer.getvalue())
    return path


def write_json(result: EvalResult, path: Path, extra: dict[str, Any] | None = None) -> Path:
    return write_json_atomic(finite_or_none({**result.to_dict(), **(extra or {})}), path)


# ----------------------------------------------------------------------------------------------- grids + html
def write_grids(result: EvalResult, folder: Path, max_prompts: int = 12) -> dict[tuple[str, str], Path]:
    """A small contact sheet per (set, prompt) for the first `max_prompts` prompts (a clip shows its middle frame)."""
    from PIL import Image

    from divdistill.metrics.video import is_clip_file
    from divdistill.videos import read_clip

    grids = {}
    wanted = [group_id for group_id, _ in result.prompts()[:max_prompts]]
    for s in result.sets:
        by_id = {g.id: g for g in s.groups}
        for group_id in wanted:
            group = by_id.get(group_id)
            if group is None:
                continue
            images = []
            for rel in group.files[:GRID_IMAGES]:
                if is_clip_file(rel):  # a video pair's clip: its middle frame
                    frames = read_clip(s.root / rel).frames
                    image = Image.fromarray(frames[len(frames) // 2])
                else:
                    with Image.open(s.root / rel) as opened:
                        image = opened.convert("RGB")
                image.thumbnail((GRID_THUMB, GRID_THUMB))
                images.append(image)
            sheet = contact_sheet(images, columns=4)
            path = folder / safe_id(s.name) / f"{safe_id(group_id)}.png"
            save_image_atomic(sheet, path)
            grids[(s.name, group_id)] = path
    return grids


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1500px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: .9em; margin: .5em 0 1em; }
td, th { padding: .2em .7em; text-align: left; border-bottom: 1px solid #eee; vertical-align: top; }
tr.average td { font-weight: bold; } .note { background: #fff4d6; border-left: 4px solid #e0a800; padding: .4em .8em; }
figure { display: inline-block; margin: .4em 1em .8em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; } figcaption { font-size: .85em; color: #555; }
table.grids img { image-rendering: pixelated; max-width: 300px; } code { background: #f2f2f2; padding: 0 .2em; }
#image-status { font-size: .8em; color: #777; }
"""


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], average_last: bool = False) -> str:
    e = escape
    parts = ["<table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"]
    for index, row in enumerate(rows):
        cls = ' class="average"' if average_last and index == len(rows) - 1 else ""
        parts.append(f"<tr{cls}>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def render_html(
    result: EvalResult,
    out: Path,
    plots: Sequence[tuple[str, Path]],
    grids: dict[tuple[str, str], Path],
    title: str = "divdistill evaluation",
) -> str:
    e = escape

    def rel(path: Path) -> str:
        return e(path.relative_to(out).as_posix(), quote=True)

    parts = [
        *page_start(title, _STYLE),
        f"<p>{e(_overview(result).replace('`', ''))}</p>",
        '<p>Files: <a href="metrics.md">metrics.md</a>, <a href="metrics.csv">metrics.csv</a>, '
        '<a href="metrics.json">metrics.json</a>.</p>',
    ]
    parts += [f'<p class="note">{e(note.replace("`", ""))}</p>' for note in result.notes]
    for m in result.metrics:
        if m.kind != "prompt":
            continue
        parts.append(f"<h2>{e(m.name)}</h2><p>{e(m.label)}; {'higher' if m.better == 'higher' else 'lower'} "
                     "is better. Intervals: bootstrap over seeds.</p>")  # fmt: skip
        header, values = prompt_table(result, m)
        _, intervals = prompt_table(result, m, intervals=True)
        merged = [[v[0]] + [f"{a} {b}" if b != "–" else a for a, b in zip(v[1:], i[1:])]
                  for v, i in zip(values, intervals)]  # fmt: skip
        parts.append(_html_table(header, merged, average_last=True))
    parts.append("<h2>Quality and speed</h2>")
    parts.append(_html_table(*summary_table(result)))
    parts.append(f"<p>{e(_speed_note(result))}</p>")
    if plots:
        parts.append("<h2>Plots</h2>")
        for caption, path in plots:
            parts.append(f'<figure><a href="{rel(path)}"><img src="{rel(path)}" alt="{e(caption, quote=True)}">'
                         f"</a><figcaption>{e(caption)}</figcaption></figure>")  # fmt: skip
    if grids:
        parts.append("<h2>Samples</h2>")
        parts.append(f"<p>Up to {GRID_IMAGES} images per prompt and mode (seeds in order).</p>")
        parts.append('<table class="grids"><tr><th>prompt</th>'
                     + "".join(f"<th>{e(s.name)}</th>" for s in result.sets) + "</tr>")  # fmt: skip
        for group_id, prompt in result.prompts():
            cells = [grids.get((s.name, group_id)) for s in result.sets]
            if not any(cells):
                continue
            row = [f"<td>{e(short(prompt, 80) or group_id)}</td>"]
            for s, path in zip(result.sets, cells):
                row.append(f'<td><img src="{rel(path)}" alt="{e(s.name, quote=True)}: {e(group_id, quote=True)}">'
                           "</td>" if path else "<td>–</td>")  # fmt: skip
            parts.append("<tr>" + "".join(row) + "</tr>")
        parts.append("</table>")
    return page_end(parts)


def write_reports(
    result: EvalResult,
    out: str | Path,
    title: str = "divdistill evaluation",
    html_prompts: int = 12,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write every output file into `out`; return them by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "csv": write_csv(result, out / "metrics.csv"),
        "json": write_json(result, out / "metrics.json", extra),
    }
    markdown = render_markdown(result, title)
    with atomic_write(out / "metrics.md", "w") as handle:
        handle.write(markdown)
    files["markdown"] = out / "metrics.md"
    plots = write_plots(result, out / "plots") + result_pareto_plots(result, out / "plots")
    grids = write_grids(result, out / "grids", html_prompts) if html_prompts > 0 else {}
    page = render_html(result, out, plots, grids, title)
    with atomic_write(out / "index.html", "w") as handle:
        handle.write(page)
    files["html"] = out / "index.html"
    for _, path in plots:
        files[f"plot:{path.stem}"] = path
    return files
