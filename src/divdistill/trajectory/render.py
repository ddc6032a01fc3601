"""Figures of trajectories: grids, the paper's figure-4 side-by-side, animations (PIL), and curves (matplotlib).

Every function returns the figure (a PIL image, a list of frames, or a matplotlib Figure) and, given a path,
also writes it atomically (format from the suffix).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image, ImageDraw

from divdistill.images import Grid, atomic_write, fit, font, text_size, to_pil

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from divdistill.trajectory.curves import Curve, SwitchPoint
    from divdistill.trajectory.decode import DecodedTrajectory

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
MIN_CELL, MAX_CELL = 96, 256


# ----------------------------------------------------------------------------------------------- helpers
def cell_size(height: int, width: int, cell: int | None = None) -> tuple[int, int]:
    """Display size of one image: small ones enlarged by an integer factor, big ones shrunk to `MAX_CELL`."""
    if cell is not None:
        scale = cell / max(height, width)
    elif max(height, width) < MIN_CELL:
        scale = math.ceil(MIN_CELL / max(height, width))
    else:
        scale = min(1.0, MAX_CELL / max(height, width))
    return max(1, round(width * scale)), max(1, round(height * scale))


def pick_columns(count: int, max_columns: int | None) -> list[int]:
    """Step indices to show: all, or `max_columns` spread evenly, always with the first and the last."""
    if max_columns is None or count <= max_columns:
        return list(range(count))
    if max_columns < 2:
        return [count - 1]
    return sorted({round(i * (count - 1) / (max_columns - 1)) for i in range(max_columns)})


def save_image(image: Image.Image, path: str | Path, **options: Any) -> Path:
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"Cannot tell the image format of {str(path)!r} from its suffix.")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())
    return path


def _step_caption(decoded: DecodedTrajectory, step: int) -> str:
    record = decoded.trajectory.steps[step]
    return f"{step + 1}/{decoded.num_steps} t={record.timestep:g}\n{record.model}"


def _image_caption(decoded: DecodedTrajectory, index: int) -> str:
    seed = decoded.trajectory.seeds[index]
    return f"seed {seed}" if seed is not None else f"image {index}"


# ----------------------------------------------------------------------------------------------- figures
def trajectory_grid(
    decoded: DecodedTrajectory,
    path: str | Path | None = None,
    images: Sequence[int] | None = None,
    max_columns: int | None = None,
    cell: int | None = None,
    title: str | None = None,
) -> Image.Image:
    """x0-hat of every step: rows = images (seeds), columns = steps labelled with step, timestep and model.

    A last "final" column is added when some final image differs from its last x0-hat (e.g. DDIM).
    """
    rows = list(range(decoded.batch_size)) if images is None else list(images)
    steps = pick_columns(decoded.num_steps, max_columns)
    final = decoded.final_float()
    show_final = not torch.equal(final, decoded.x0_float(decoded.num_steps - 1))
    size = cell_size(decoded.x0.shape[-2], decoded.x0.shape[-1], cell)
    face = font(max(10, min(14, size[0] // 8)))
    captions = [_step_caption(decoded, s) for s in steps]
    header = max(text_size(c, face)[1] for c in captions) + 8
    labels = [_image_caption(decoded, i) for i in rows]
    label_width = max(text_size(text, face)[0] for text in labels) + 10
    title_height = (text_size(title, face)[1] + 6) if title else 0
    grid = Grid(len(rows), len(steps) + show_final, size, header=header + title_height, label=label_width, ink=INK)
    if title:
        grid.draw.text((4, 2), title, fill=INK, font=face)
    for column, caption in enumerate(captions):
        grid.column_title(column, caption, face, top=title_height + 2)
    if show_final:
        grid.draw.text((grid.origin(0, len(steps))[0], title_height + 2), "final", fill=INK, font=face)
    for row, index in enumerate(rows):
        grid.row_title(row, labels[row], face)
        for column, step in enumerate(steps):
            grid.paste(row, column, decoded.x0[step, index])
        if show_final:
            grid.paste(row, len(steps), decoded.final[index])
    if path is not None:
        save_image(grid.image, path)
    return grid.image


def side_by_side(
    decoded: Mapping[str, DecodedTrajectory],
    path: str | Path | None = None,
    image: int = 0,
    max_columns: int | None = 10,
    cell: int | None = None,
    title: str | None = None,
) -> Image.Image:
    """One image (seed) across modes, the paper's figure-4 layout: per mode an x_t row and an x0-hat row.

    Each decoded trajectory needs its x_t images (`Trajectory.decode(..., x_t=True)`); columns are the steps
    of each mode (at most `max_columns`, spread evenly), each cell captioned with its step, timestep and model.
    """
    modes = list(decoded.items())
    if not modes:
        raise ValueError("side_by_side needs at least one decoded trajectory.")
    for label, run in modes:
        if run.x_t is None:
            raise ValueError(f"The {label!r} trajectory was decoded without x_t; decode it with x_t=True.")
    first = modes[0][1]
    size = cell_size(first.x0.shape[-2], first.x0.shape[-1], cell)
    face = font(max(10, min(13, size[0] // 9)))
    picks = {label: pick_columns(run.num_steps, max_columns) for label, run in modes}
    columns = max(len(p) for p in picks.values())
    row_labels = [f"{label}\n{kind}" for label, _ in modes for kind in ("x_t", "x0-hat")]
    label_width = max(text_size(text, face)[0] for text in row_labels) + 10
    caption_height = text_size("t=999 base", face)[1] + 4
    header = (text_size(title, face)[1] + 8) if title else 4
    grid = Grid(2 * len(modes), columns, size, header=header, label=label_width, caption=caption_height, ink=INK)
    if title:
        grid.draw.text((4, 2), title, fill=INK, font=face)
    for m, (label, run) in enumerate(modes):
        grid.row_title(2 * m, row_labels[2 * m], face)
        grid.row_title(2 * m + 1, row_labels[2 * m + 1], face)
        for column, step in enumerate(picks[label]):
            record = run.trajectory.steps[step]
            caption = f"t={record.timestep:g} {record.model}"
            grid.paste(2 * m, column, run.x_t[step, image], caption, face)
            grid.paste(2 * m + 1, column, run.x0[step, image], caption, face)
    if path is not None:
        save_image(grid.image, path)
    return grid.image


def animation(
    decoded: DecodedTrajectory,
    path: str | Path | None = None,
    images: Sequence[int] | None = None,
    duration_ms: int = 500,
    cell: int | None = None,
    columns: int | None = None,
) -> list[Image.Image]:
    """x0-hat over the steps as an animation (GIF, or WebP by suffix): each frame tiles the chosen images
    (default: all) and is headed with the step, timestep and model. The last frame is held three times longer."""
    indices = list(range(decoded.batch_size)) if images is None else list(images)
    size = cell_size(decoded.x0.shape[-2], decoded.x0.shape[-1], cell)
    face = font(max(10, min(14, size[0] // 8)))
    columns = min(columns or len(indices), len(indices))
    rows = math.ceil(len(indices) / columns)
    header = 20
    frames = []
    for step in range(decoded.num_steps):
        record = decoded.trajectory.steps[step]
        frame = Image.new("RGB", (columns * (size[0] + 2) + 2, header + rows * (size[1] + 2) + 2), BACKGROUND)
        draw = ImageDraw.Draw(frame)
        text = f"{decoded.label}  x0-hat  step {step + 1}/{decoded.num_steps}  t={record.timestep:g}  {record.model}"
        draw.text((4, 3), text, fill=INK, font=face)
        for k, index in enumerate(indices):
            row, column = divmod(k, columns)
            origin = (2 + column * (size[0] + 2), header + 2 + row * (size[1] + 2))
            frame.paste(fit(to_pil(decoded.x0[step, index]), size), origin)
        frames.append(frame)
    if path is not None:
        durations = [duration_ms] * (len(frames) - 1) + [3 * duration_ms]
        options: dict[str, Any] = {"save_all": True, "append_images": frames[1:], "duration": durations, "loop": 0}
        save_image(frames[0], path, **options)
    return frames


# ----------------------------------------------------------------------------------------------- curves
_TEXT = {
    "commitment": (
        "Commitment curve",
        "distance of x0-hat to the final image",
        "fraction of steps done",
    ),
    "diversity": (
        "Diversity curve",
        "mean pairwise distance among seeds (x0-hat)",
        "fraction of steps done",
    ),
}


def plot_curves(
    curves: Sequence[Curve],
    path: str | Path | None = None,
    switch_point: SwitchPoint | None = None,
    title: str | None = None,
    band: str = "std",
) -> Figure:
    """Mean curve per mode with a spread band (mean +/- std, or `band="range"` for min..max).

    Title and y axis name the distance metric the curves used; all curves must share one metric and kind.
    """
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("plot_curves needs at least one curve.")
    kinds = {c.kind for c in curves}
    metrics = {c.metric_label for c in curves}
    if len(kinds) != 1 or len(metrics) != 1:
        raise ValueError(f"Curves of one kind and one metric only; got kinds {kinds} and metrics {metrics}.")
    kind, metric = kinds.pop(), metrics.pop()
    name, ylabel, xlabel = _TEXT[kind]
    figure = Figure(figsize=(6.4, 4.2), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    for k, curve in enumerate(curves):
        color = COLORS[k % len(COLORS)]
        x = curve.fraction
        mean = torch.tensor(curve.mean, dtype=torch.float64)
        if band == "range":
            low, high = torch.tensor(curve.low), torch.tensor(curve.high)
        else:
            spread = torch.tensor(curve.std, dtype=torch.float64)
            low, high = (mean - spread).clamp_min(0), mean + spread
        axes.plot(
            x,
            mean.tolist(),
            marker="o",
            markersize=3 if len(x) > 12 else 5,
            color=color,
            label=f"{curve.label} ({len(x)} steps, n={curve.n})",
        )
        axes.fill_between(x, low.tolist(), high.tolist(), color=color, alpha=0.18, linewidth=0)
    if switch_point is not None and switch_point.fraction is not None:
        axes.axvline(switch_point.fraction, color="0.35", linestyle="--", linewidth=1)
        text = f"base committed: step {switch_point.steps_done} (t={switch_point.timestep:g})"
        if switch_point.base_steps is not None:
            text += f"\n→ base_steps={switch_point.base_steps}"
        axes.annotate(
            text,
            (switch_point.fraction, 0.98),
            xycoords=("data", "axes fraction"),
            xytext=(4, -4),
            textcoords="offset points",
            va="top",
            fontsize=8,
            color="0.25",
        )
    tops: list[float] = []
    for curve in curves:
        tops += [m + s for m, s in zip(curve.mean, curve.std)] if band == "std" else list(curve.high)
    tops = [v for v in tops if math.isfinite(v)]
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.12 * max(tops) if tops and max(tops) > 0 else 1.0)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(f"{ylabel}\n[{metric}]")
    spread_name = "min–max" if band == "range" else "±1 std"
    axes.set_title(title or f"{name} — metric: {metric} (band: {spread_name})", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    if path is not None:
        buffer = io.BytesIO()
        figure.savefig(buffer, format=Path(path).suffix.lstrip(".").lower() or "png")
        with atomic_write(path) as handle:
            handle.write(buffer.getvalue())
    return figure
