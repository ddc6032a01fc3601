"""`divdistill.demo.run`: the whole demo, in order (modes, grids, trajectories, slider, targets, files)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import logging as diffusers_logging

from divdistill.demo.config import MODES, DemoConfig, DemoResult
from divdistill.demo.figures import control_transfer, sample_grids, trajectories
from divdistill.demo.measure import failure_row, generators, measure_prompt, summarise, targets
from divdistill.demo.report import write_outputs
from divdistill.pocket import PROMPTS, pocket_pipeline
from divdistill.pocket.evaluator import load_evaluator
from divdistill.pocket.world import sample_world


def run(out: str | Path, config: DemoConfig | None = None, log: Callable[[str], None] | None = print,
        pipe: Any = None, evaluator: Any = None) -> DemoResult:  # fmt: skip
    """Run every part of the demo into OUT, write its files and return its numbers (`divdistill.demo`'s doc).

    `pipe` and `evaluator` default to the shipped pocket pair and evaluator (pass others to run the demo on them).
    """
    config = config or DemoConfig.full()
    say = log or (lambda _text: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    previous_threads = torch.get_num_threads()
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # LCM warns on every call that 749/249 are not its training steps
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        pipe = pipe or pocket_pipeline()
        pipe.set_progress_bar_config(disable=True)
        evaluator = evaluator or load_evaluator()
        result = DemoResult(config=asdict(config))
        prompts = list(PROMPTS[: config.prompts])
        seeds = [config.seed_offset + s for s in range(config.seeds)]
        result.timings["load"] = time.perf_counter() - began

        # ---------------------------------------------------------------- every mode, same prompts and seeds
        stage = time.perf_counter()
        images: dict[str, list[torch.Tensor]] = {}
        measured: dict[str, list[dict[str, Any]]] = {}
        real_images = [sample_world(len(seeds), 1000 + i, caption=p).images for i, p in enumerate(prompts)]
        images["real"] = real_images
        measured["real"] = [measure_prompt(x, p, evaluator, config.replicates, i)
                            for i, (x, p) in enumerate(zip(real_images, prompts))]  # fmt: skip
        result.table["real"] = {"label": "real (world)", **summarise(measured["real"], config.replicates),
                                **failure_row(real_images, prompts, evaluator),
                                "nfe": None, "seconds_per_image": None}  # fmt: skip
        for name, mode in MODES.items():
            seconds, nfe, batch = 0.0, 0, []
            for prompt in prompts:
                start = time.perf_counter()
                output = pipe(prompt, num_images_per_prompt=len(seeds), generator=generators(seeds),
                              output_type="pt", **mode.pipeline_kwargs())  # fmt: skip
                seconds += time.perf_counter() - start
                nfe = int(output.nfe)
                batch.append(output.images.float().clamp(0, 1).cpu())
            images[name] = batch
            measured[name] = [measure_prompt(x, p, evaluator, config.replicates, i)
                              for i, (x, p) in enumerate(zip(batch, prompts))]  # fmt: skip
            row = summarise(measured[name], config.replicates)
            result.table[name] = {"label": mode.label, **row, **failure_row(batch, prompts, evaluator), "nfe": nfe,
                                  "seconds_per_image": seconds / (len(prompts) * len(seeds))}  # fmt: skip
            say(f"  {name:10s} attr div {row['attr']['mean']:.3f}  adherence {row['adherence']['mean']:.3f}  "
                f"NFE {nfe}  {seconds:.1f} s")  # fmt: skip
        base_attr = result.table["base"]["attr"]["mean"]
        for row in result.table.values():
            row["attr_vs_base"] = row["attr"]["mean"] / base_attr if base_attr else math.nan
        result.timings["modes"] = time.perf_counter() - stage

        # ---------------------------------------------------------------- sample grids
        grids = sample_grids(images, prompts, seeds, min(config.grid_seeds, len(seeds)), out)

        # ---------------------------------------------------------------- trajectories and curves
        stage = time.perf_counter()
        figures = trajectories(pipe, evaluator, prompts[: config.trajectory_prompts],
                               seeds[: config.trajectory_seeds], out, result)  # fmt: skip
        result.timings["trajectories"] = time.perf_counter() - stage

        # ---------------------------------------------------------------- control transfer
        stage = time.perf_counter()
        slider_grid = control_transfer(pipe, evaluator, config, seeds, out, result)
        result.timings["slider"] = time.perf_counter() - stage

        result.targets = targets(result)
        result.timings["total"] = time.perf_counter() - began
        write_outputs(out, result, grids, figures, slider_grid)
        return result
    finally:
        torch.set_num_threads(previous_threads)
        diffusers_logging.set_verbosity(verbosity)
