"""A trace's index.html: the summary table, the curves, and each prompt's side-by-side, grids and animations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from divdistill.trajectory.aggregate import RULE_TEXT, TraceSummary
from divdistill.trajectory.report import Item, Section, write_index

if TYPE_CHECKING:
    from divdistill.trajectory.records import PromptRecord
    from divdistill.variant import Variant


#: Captions of a prompt's side-by-side, its grids and its animations (images; a video pair's clips).
IMAGE_CAPTIONS = ("x_t and x0-hat rows per mode", "rows = seeds, columns = steps", "x0-hat over the steps")
VIDEO_CAPTIONS = ("x0-hat frames per step of every mode", "frames per step, first seed",
                  "x0-hat clips, rows = seeds, columns = steps")  # fmt: skip


def write_index_page(
    out: Path,
    records: Sequence[PromptRecord],
    summary: TraceSummary,
    variants: Sequence[Variant],
    metric: dict[str, Any],
    model_name: str,
    max_prompts: int = 50,
) -> Path:
    """OUT/index.html showing every figure of the first `max_prompts` prompts (all links checked to exist)."""
    switch = summary.switch_point
    rows = [
        ("model", model_name),
        ("metric", metric.get("label", metric["name"])),
        ("modes", ", ".join(v.text for v in variants)),
        ("prompts", str(len(records))),
        ("seeds per prompt", ", ".join(map(str, records[0].seeds))),
    ]
    if switch is not None:
        rows.append(("switch point (base)", switch.describe()))
    for label, value in summary.final_diversity.items():
        rows.append((f"final-image diversity: {label}", "n/a" if value is None else f"{value:.4f}"))
    sections = [
        Section(
            "Curves",
            [
                Item(
                    "commitment.png",
                    "distance of each step's x0-hat to the final image; band: ±1 std over prompts × seeds",
                ),
                Item(
                    "diversity.png", "mean pairwise distance among seeds of x0-hat per step; band: ±1 std over prompts"
                ),
            ],
            text="Data: curves.json, curves.csv. Switch-point rule: " + RULE_TEXT + ".",
        )
    ]
    shown = records[:max_prompts]
    for record in shown:
        base = f"prompts/{record.id}/"
        animated = str(Path(record.side_by_side).with_suffix(".gif"))
        clips = animated in record.files  # a video pair's trace (divdistill.trajectory.video)
        texts = VIDEO_CAPTIONS if clips else IMAGE_CAPTIONS
        items = [Item(base + record.side_by_side, f"seed {record.seeds[0]}: {texts[0]}")]
        if clips:
            items.append(Item(base + animated, "final clips: rows = modes, columns = seeds"))
        modes = record.modes.items()
        items += [Item(base + mode.grid, f"{label}: {texts[1]}") for label, mode in modes]
        items += [Item(base + mode.animation, f"{label}: {texts[2]}") for label, mode in modes]
        sections.append(Section(f"{record.id}: {record.prompt}", items))
    if len(records) > len(shown):
        sections.append(Section(f"... and {len(records) - len(shown)} more prompts (see prompts/)"))
    return write_index(out / "index.html", f"divdistill trace: {model_name}", rows, sections)
