"""The demo's outputs: the printed headline, index.html, results.json, modes.csv and slider.csv."""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from divdistill.demo.config import FAILURE_COLUMNS, MODES, DemoResult
from divdistill.demo.measure import METRICS
from divdistill.htmlpage import CHECK_SCRIPT
from divdistill.images import atomic_write, finite_or_none, write_json_atomic
from divdistill.trajectory.report import PAGE_STYLE


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _ci(entry: dict[str, float], digits: int = 3) -> str:
    return f"{_fmt(entry['mean'], digits)} [{_fmt(entry['low'], 2)}, {_fmt(entry['high'], 2)}]"


TABLE_HEADER = ("mode", "attr div [95% CI]", "/base", "feat div [95% CI]", "pixel div [95% CI]",
                "adherence [95% CI]", "shape acc.", "failed", "NFE", "s/image")  # fmt: skip


def table_rows(result: DemoResult) -> list[list[str]]:
    return [
        [name, _ci(row["attr"]), _fmt(row["attr_vs_base"], 2), _ci(row["feat"]), _ci(row["pixel"]),
         _ci(row["adherence"]), _fmt(row["shape_accuracy"], 3), _fmt(row["failed"], 3), _fmt(row["nfe"]),
         _fmt(row["seconds_per_image"], 4)]
        for name, row in result.table.items()
    ]  # fmt: skip


def slider_rows(result: DemoResult) -> list[list[str]]:
    return [[r["model"], f"{r['scale']:+g}", _fmt(r["score"], 2), _fmt(r["change"], 2), _fmt(r["change_std"], 2),
             str(r["n"])] for r in result.slider["summary"]]  # fmt: skip


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def headline(result: DemoResult) -> str:
    """The text the CLI prints: the mode table, slider effects and the targets."""
    parts = [text_table(TABLE_HEADER, table_rows(result)), ""]
    effects = ", ".join(f"{m} {v:+.2f}" for m, v in result.slider["effect"].items())
    parts.append(f"size slider, {result.slider['effect_definition']}: {effects}")
    parts.append("")
    for name, entry in result.targets.items():
        parts.append(f"{'HOLDS' if entry['pass'] else 'FAILS'}  {name}: {_fmt(entry['value'])}")
    parts.append(f"\n{result.timings['total']:.0f} s in all")
    return "\n".join(parts)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(src: str, caption: str) -> str:
    e = html.escape
    return (f'<figure><a href="{e(src, quote=True)}"><img src="{e(src, quote=True)}" alt="{e(caption, quote=True)}">'
            f"</a><figcaption>{e(caption)}</figcaption></figure>")  # fmt: skip


NOTES = (
    "The pocket schedule is SDXL's own (not zero-terminal-SNR), its SNR shifted x16: pure noise at t=999 is "
    "nearly in distribution (per-pixel SNR 0.075), while an object's layout-scale SNR there is ~1.2, so the base's "
    "first x0-hat already reads the seed's layout and the paper's hybrid (k=1 on the distilled schedule, the "
    "pocket default) hands that layout to the student (docs/pocket.md). 'failed' counts empty, fragmented or "
    "smeared images, read from the pixels; commitment compares layouts (position, colour, background). The base "
    "commits early in this regime too, so the commitment target compares the student's first step with a base "
    "that has already fixed most of its layout by 25% of its steps."
)


_EXTRA_STYLE = " td { font-variant-numeric: tabular-nums; } th { border-bottom: 1px solid #ccc; }"


def render_html(result: DemoResult, grids: Sequence[tuple[str, str]], figures: Sequence[tuple[str, str]],
                slider_grid: str) -> str:  # fmt: skip
    e = html.escape
    cfg = result.config
    target_rows = [[("holds" if v["pass"] else "FAILS"), name, _fmt(v["value"])] for name, v in result.targets.items()]
    effects = result.slider["effect"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>divdistill demo: the pocket pair</title>',
        f"<style>{PAGE_STYLE}{_EXTRA_STYLE}</style>",
        f"<script>{CHECK_SCRIPT}</script></head><body>",
        "<h1>divdistill demo: diversity distillation on the pocket pair</h1>",
        f"<p>{cfg['prompts']} prompts x {cfg['seeds']} seeds per mode (seed s is the same initial noise in every "
        f"mode); bootstrap 95% intervals over seeds ({cfg['replicates']} resamples), averaged over prompts; "
        f"{cfg['threads']} torch thread(s); {result.timings['total']:.0f} s in all.</p>",
        "<h2>Which of the paper's targets hold for the shipped pair (this run)</h2>",
        _html_table(("", "target", "value"), target_rows),
        f"<p>{e(NOTES)}</p>",
        "<h2>Diversity, adherence and cost per mode</h2>",
        _html_table(TABLE_HEADER, table_rows(result)),
        "<p>"
        + "; ".join(f"<b>{e(k)}</b>: {e(mode.label)}" for k, mode in MODES.items())
        + ". "
        + e(
            "attr: mean pairwise L2 distance of the evaluator's standardised size/x/y/background read-out; feat: "
            "1 - cosine of its 128-d features; pixel: RMS pixel distance; adherence: every attribute the prompt "
            "names is read back; /base: attr diversity relative to the base."
        )
        + "</p>",
        "<h2>Samples (same seeds across modes)</h2>",
        *[_figure(src, f'"{prompt}": rows are modes, columns seeds') for prompt, src in grids],
        "<h2>Trajectories, commitment and diversity curves</h2>",
        *[_figure(src, caption) for src, caption in figures],
        "<h2>Control transfer: a size slider trained on the base</h2>",
        f'<p>{e(result.slider["file"])}, target "a circle", positive "a large circle", negative "a small '
        f"circle\". Scored with the evaluator's size read-out (px); change is against scale 0 for the same prompt "
        f"and seed. Effect ({e(result.slider['effect_definition'])}): "
        + ", ".join(f"{e(m)} {v:+.2f}" for m, v in effects.items())
        + ".</p>",
        _html_table(("model", "scale", "size (px)", "change", "change sd", "n"), slider_rows(result)),
        _figure(slider_grid, "rows: model and prompt; columns: slider scale"),
        '<h2>Files</h2><p><a href="results.json">results.json</a> · <a href="modes.csv">modes.csv</a> · '
        '<a href="slider.csv">slider.csv</a> · <a href="curves.csv">curves.csv</a> · '
        '<a href="curves.json">curves.json</a></p>',
        '<p id="image-status">checking images...</p>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_outputs(out: Path, result: DemoResult, grids: Sequence[tuple[str, str]],
                  figures: Sequence[tuple[str, str]], slider_grid: str) -> None:  # fmt: skip
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["mode", "label", *[f"{m}_{k}" for m in (*METRICS, "adherence") for k in ("mean", "low", "high")],
                     "attr_vs_base", "shape_accuracy", *FAILURE_COLUMNS, "nfe", "seconds_per_image"])  # fmt: skip
    for name, row in result.table.items():
        values = [row[m][k] for m in (*METRICS, "adherence") for k in ("mean", "low", "high")]
        failures = [row["shape_accuracy"], *[row[k] for k in FAILURE_COLUMNS]]
        writer.writerow([name, row["label"], *values, row["attr_vs_base"], *failures,
                         row["nfe"] if row["nfe"] is not None else "",
                         row["seconds_per_image"] if row["seconds_per_image"] is not None else ""])  # fmt: skip
    with atomic_write(out / "modes.csv", "w") as handle:
        handle.write(buffer.getvalue())

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["model", "scale", "score", "score_std", "change", "change_std", "n"],
                            lineterminator="\n")  # fmt: skip
    writer.writeheader()
    writer.writerows(result.slider["summary"])
    with atomic_write(out / "slider.csv", "w") as handle:
        handle.write(buffer.getvalue())

    page = render_html(result, grids, figures, slider_grid)
    missing = [src for src in [g for _, g in grids] + [f for f, _ in figures] + [slider_grid]
               if not (out / src).is_file()]  # fmt: skip
    if missing:
        raise FileNotFoundError(f"index.html would link missing files: {', '.join(missing)}")
    result.files = sorted(["index.html", "results.json", "modes.csv", "slider.csv", "curves.csv", "curves.json",
                           *[g for _, g in grids], *[f for f, _ in figures], slider_grid])  # fmt: skip
    write_json_atomic(finite_or_none(asdict(result)), out / "results.json")
    with atomic_write(out / "index.html", "w") as handle:
        handle.write(page)
