"""A video pair's trace figures, from decoded x0-hat clips (`DecodedTrajectory.video`): a few frames per step and
animations that play the clips (`divdistill.videos`).

Per variant (the names the image figures have, so prompt.json and index.html list them alike):
    grid-<folder>.png    frames per step: one row per step (at most `max_columns` steps, spread evenly; a last
                         "final" row where the run does not end on its last x0-hat), SHEET_FRAMES frames each,
                         of the first seed
    x0-<folder>.gif      the x0-hat clips playing: rows = seeds, columns = steps
Per prompt:
    side-by-side.png     frames per step of every variant, first seed: rows = (variant, step)
    side-by-side.gif     the final clips playing side by side: rows = variants (base / distilled / hybrid ...),
                         columns = seeds (at most SIDE_BY_SIDE_SEEDS)

Commitment and diversity on clips use `divdistill.metrics.video.ClipDistance`: the trace's image distance on
EVAL_FRAMES frames spread over each clip, averaged.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from divdistill.images import save_image_atomic
from divdistill.trajectory.render import pick_columns
from divdistill.videos import DEFAULT_FPS, animated_grid, frames_sheet, save_animation

if TYPE_CHECKING:
    from divdistill.metrics.distance import ImageDistance
    from divdistill.trajectory.decode import DecodedTrajectory
    from divdistill.variant import Variant

#: Seeds the animated side-by-side shows per variant.
SIDE_BY_SIDE_SEEDS = 4


def clip_distance(distance: ImageDistance) -> ImageDistance:
    """The trace's image distance applied to clips (mean over sampled frames)."""
    from divdistill.metrics.video import ClipDistance

    return ClipDistance(distance)


def _step_label(decoded: DecodedTrajectory, step: int, prefix: str = "") -> str:
    """'step 2/4', the timestep and the model, one per line (after `prefix`, e.g. the variant, on its own line)."""
    record = decoded.trajectory.steps[step]
    return f"{prefix}step {step + 1}/{decoded.num_steps}\nt={record.timestep:g}\n{record.model}"


def _shows_final(decoded: DecodedTrajectory) -> bool:
    return not torch.equal(decoded.final, decoded.x0[-1])


def _seed_label(decoded: DecodedTrajectory, index: int) -> str:
    seed = decoded.trajectory.seeds[index]
    return f"seed {seed}" if seed is not None else f"clip {index}"


def step_rows(decoded: DecodedTrajectory, max_columns: int | None, image: int = 0,
              prefix: str = "") -> list[tuple[str, Any]]:  # fmt: skip
    """(label, x0-hat clip) of clip `image` at the shown steps, and its final clip when that differs."""
    steps = pick_columns(decoded.num_steps, max_columns)
    rows = [(_step_label(decoded, s, prefix), decoded.x0[s, image]) for s in steps]
    if _shows_final(decoded):
        rows.append((f"{prefix}final", decoded.final[image]))
    return rows


def variant_figures(decoded: DecodedTrajectory, folder: Path, variant: Variant, prompt: str,
                    max_columns: int | None) -> tuple[str, str]:  # fmt: skip
    """Write one variant's frames-per-step sheet and x0-hat animation; return their file names."""
    grid, gif = f"grid-{variant.folder}.png", f"x0-{variant.folder}.gif"
    title = f"{variant.text}: x0-hat per step, {_seed_label(decoded, 0)} | {prompt}"
    save_image_atomic(frames_sheet(step_rows(decoded, max_columns), title=title), folder / grid)
    steps = pick_columns(decoded.num_steps, max_columns)
    columns = [_step_label(decoded, s) for s in steps]
    rows = [(_seed_label(decoded, i), [decoded.x0[s, i] for s in steps]) for i in range(decoded.batch_size)]
    frames = animated_grid(rows, columns, title=f"{variant.text}: x0-hat clips per step | {prompt}")
    save_animation(frames, folder / gif, fps=DEFAULT_FPS)
    return grid, gif


def side_by_side_figures(decoded: Mapping[str, DecodedTrajectory], folder: Path, prompt: str, still: str,
                         max_columns: int | None) -> list[str]:  # fmt: skip
    """Write the prompt's side-by-side still (`still`, frames per step of every variant) and animation (final
    clips, variants by seeds); return their file names."""
    if not decoded:
        raise ValueError("side-by-side figures need at least one decoded trajectory")
    rows = [row for label, run in decoded.items() for row in step_rows(run, max_columns, prefix=f"{label}\n")]
    first = next(iter(decoded.values()))
    sheet = frames_sheet(rows, title=f"{_seed_label(first, 0)}: x0-hat per step per variant | {prompt}")
    save_image_atomic(sheet, folder / still)
    seeds = min(SIDE_BY_SIDE_SEEDS, min(run.batch_size for run in decoded.values()))
    animation = [(label, [run.final[i] for i in range(seeds)]) for label, run in decoded.items()]
    name = Path(still).with_suffix(".gif").name
    frames = animated_grid(animation, [_seed_label(first, i) for i in range(seeds)], title=f"final clips | {prompt}")
    save_animation(frames, folder / name, fps=DEFAULT_FPS)
    return [still, name]
