"""The demo's figures: sample grids, the trajectories side by side with their commitment and diversity curves,
and the size slider's control-transfer grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from divdistill.control.evaluate import FunctionScorer, evaluate_control
from divdistill.demo.config import MODES, SLIDER_PROMPTS, TRAJECTORY_MODES, DemoConfig, DemoResult, slider_path
from divdistill.demo.measure import generators
from divdistill.images import labelled_grid, save_image_atomic
from divdistill.pocket.spaces import AttributeDistance, LayoutDistance, feature_distance
from divdistill.trajectory import (
    commitment_curve,
    decode_trajectory,
    diversity_curve,
    pipeline_decoder,
    suggest_switch_point,
)
from divdistill.trajectory.render import plot_curves, side_by_side
from divdistill.trajectory.report import write_curves_csv, write_curves_json

#: A figure in the report: (file name in OUT, caption).
Figure = tuple[str, str]


def image_grid(rows: Sequence[tuple[str, Sequence[torch.Tensor]]], columns: Sequence[str], path: Path,
               title: str = "", cell: int = 64) -> Path:  # fmt: skip
    """A labelled grid (`divdistill.images.labelled_grid`) written to `path`."""
    return save_image_atomic(labelled_grid(rows, columns, title=title, cell=cell), path)


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-")


def sample_grids(images: dict[str, list[torch.Tensor]], prompts: Sequence[str], seeds: Sequence[int],
                 count: int, out: Path) -> list[tuple[str, str]]:  # fmt: skip
    """Per prompt: rows are the real images and every mode, columns the first `count` seeds; (prompt, file)."""
    grids = []
    for i, prompt in enumerate(prompts):
        rows = [(name, images[name][i][:count]) for name in ("real", *MODES)]
        path = out / f"samples-{i:02d}-{slug(prompt)}.png"
        image_grid(rows, [f"seed {s}" for s in seeds[:count]], path, title=f'"{prompt}"')
        grids.append((prompt, path.name))
    return grids


def trajectories(pipe: Any, evaluator: Any, prompts: Sequence[str], seeds: Sequence[int], out: Path,
                 result: DemoResult) -> list[Figure]:  # fmt: skip
    """Record x0-hat trajectories per mode, draw the side-by-side figure and the curves, measure commitment."""
    decoder = pipeline_decoder(pipe)
    distances = {"layout": LayoutDistance(), "attr": AttributeDistance(evaluator), "feat": feature_distance(evaluator)}
    decoded: dict[str, list[Any]] = {}
    for name in TRAJECTORY_MODES:
        runs = []
        for i, prompt in enumerate(prompts):
            output = pipe(prompt, num_images_per_prompt=len(seeds), generator=generators(seeds), output_type="pt",
                          return_trajectory=True, **MODES[name].pipeline_kwargs())  # fmt: skip
            trajectory = output.trajectory
            trajectory.label = name
            runs.append(decode_trajectory(trajectory, decoder, x_t=(i == 0)))
        decoded[name] = runs
    figures: list[Figure] = []
    side_by_side({name: runs[0] for name, runs in decoded.items()}, out / "trajectories.png", image=0,
                 max_columns=10, title=f'x0-hat and x_t of seed {seeds[0]}, "{prompts[0]}"')  # fmt: skip
    figures.append(("trajectories.png", f'One seed ({seeds[0]}) of "{prompts[0]}" across the modes: x_t and x0-hat '
                    "at each step (at most 10 steps shown per mode)."))  # fmt: skip
    curves = []
    distilled_timesteps = list(pipe.defaults.timesteps or ())
    for metric, distance in distances.items():
        commit = [commitment_curve(runs, distance) for runs in decoded.values()]
        spread = [diversity_curve(runs, distance) for runs in decoded.values()]
        switch = suggest_switch_point(commit[0], distilled_timesteps)
        plot_curves(commit, out / f"commitment-{metric}.png", switch_point=switch)
        plot_curves(spread, out / f"diversity-{metric}.png")
        figures.append((f"commitment-{metric}.png", f"Commitment curve ({distance.label}); dashed: the base's "
                        f"switch point, {switch.describe()}"))  # fmt: skip
        figures.append((f"diversity-{metric}.png", f"Diversity of x0-hat among seeds per step ({distance.label})."))
        curves += commit + spread
        if metric == "layout":
            base, distilled = commit[0], commit[1]
            quarter = max(0, len(base.mean) // 4 - 1)
            result.commitment = {
                "metric": distance.label,
                "base_at_25pct": {"step": quarter + 1, "timestep": base.timesteps[quarter],
                                  "distance": base.mean[quarter]},
                "distilled_first_step": {"timestep": distilled.timesteps[0], "distance": distilled.mean[0]},
                "curves": {c.label: c.mean for c in commit},
                "switch_point": switch.to_dict(),
            }  # fmt: skip
    write_curves_csv(curves, out / "curves.csv")
    write_curves_json(curves, out / "curves.json", {"name": "pocket-attr / pocket", "label": "evaluator"},
                      prompts=list(prompts), seeds=list(seeds))  # fmt: skip
    return figures


def control_transfer(pipe: Any, evaluator: Any, config: DemoConfig, seeds: Sequence[int], out: Path,
                     result: DemoResult) -> str:  # fmt: skip
    """The shipped size slider at several scales on base, distilled and hybrid; the evaluator's size read-out."""

    def size(images: torch.Tensor, _texts: list[str]) -> torch.Tensor:
        return evaluator.read(images).size

    prompts = list(SLIDER_PROMPTS[: config.slider_prompts])
    slider_seeds = list(seeds[: config.slider_seeds])
    scorer = FunctionScorer(size, name="size", label="evaluator size read-out (px)", relative=False)
    control = evaluate_control(pipe, slider_path(), config.scales, prompts, slider_seeds, scorer,
                               concept="size", progress=False)  # fmt: skip
    summary = control.summary()
    scales = control.scales
    effect = {}
    for model in control.models:
        rows = {r["scale"]: r for r in summary if r["model"] == model}
        effect[model] = rows[max(scales)]["score"] - rows[min(scales)]["score"]
    result.slider = {
        "file": f"pocket/weights/sliders/{slider_path().name}",
        "prompts": prompts,
        "seeds": slider_seeds,
        "scales": scales,
        "summary": summary,
        "effect": effect,
        "effect_definition": f"mean size read-out at scale {max(scales):g} minus at {min(scales):g} (px)",
    }
    rows = []
    for model in control.models:
        for index, prompt in enumerate(prompts):
            seed = slider_seeds[0]
            rows.append((f"{model}: {prompt}", [control.images[(model, s, index, seed)] for s in scales]))
    image_grid(rows, [f"scale {s:+g}" for s in scales], out / "slider.png",
               title=f"size slider (trained on the base), seed {slider_seeds[0]}")  # fmt: skip
    return "slider.png"
