"""`divdistill demo`: the paper's story on the shipped pocket pair, offline on a CPU in a few minutes.

    from divdistill.demo import DemoConfig, run_demo
    result = run_demo("demo-out", DemoConfig.full())      # or DemoConfig.quick() (seconds; tests)

Writes into OUT: `index.html` (every figure and table), `results.json`, `modes.csv`, `slider.csv`, `curves.csv`,
`curves.json` and PNGs:

- sample grids of every mode for several prompts (seed s is the same initial noise in every mode);
- x0-hat trajectories of one seed across base, distilled and the hybrids (side by side), and the commitment and
  diversity curves (`divdistill.trajectory`);
- per mode: diversity (evaluator attributes, evaluator features, pixels; bootstrap 95% intervals over seeds,
  averaged over prompts as in `divdistill.metrics.diversity`), adherence, NFE and seconds per image;
- control transfer: the shipped size slider (`pocket/weights/sliders/size.safetensors`, trained on the base)
  applied at several scales to base, distilled and hybrid, scored with the evaluator's size read-out;
- the paper's targets, each with this run's number and whether it holds.

Modes: base (its own 50-step DDIM, CFG 4), distilled (4 LCM steps), hybrid k=1 / k=2 on the distilled schedule
(the paper's 1-1 replacement; `base_schedule="shared"`, the pocket default), own-1 (the base on its own 50-step
grid down to t=749, then the distilled model), and reverse-1 (the base replaces the final step: the causal
control). Diversity spaces as `benchmarks/pocket.py`: "attr" is the mean pairwise L2 distance of the evaluator's
standardised size/x/y/background read-out, "feat" 1 - cosine of its 128-d features, "pixel" RMS pixel distance.
Failure modes per mode come from the pixels, not the evaluator (`divdistill.pocket.pixels`: empty, fragmented or
smeared images), with the evaluator's shape accuracy; commitment compares layouts (object position and colour,
background), which a blurry x0-hat shares with the sharp image it becomes.
"""

from __future__ import annotations

import csv
import html
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from divdistill.metrics.distance import ImageDistance

#: name -> (label, pipeline keyword arguments). Every mode samples the same prompts with the same seeds.
MODES: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("base (DDIM 50, CFG 4)", {"mode": "base"}),
    "distilled": ("distilled (4 LCM steps)", {"mode": "distilled"}),
    "hybrid-1": ("hybrid k=1, shared schedule (paper's 1-1; pocket default)", {"mode": "hybrid", "base_steps": 1,
                                                               "base_schedule": "shared"}),
    "hybrid-2": ("hybrid k=2, shared schedule", {"mode": "hybrid", "base_steps": 2, "base_schedule": "shared"}),
    "own-1": ("hybrid, base own DDIM to t=749", {"mode": "hybrid", "base_steps": 1,
                                                                  "base_schedule": "own"}),
    "reverse-1": ("reverse: base replaces the final step", {"mode": "reverse", "base_steps": 1,
                                                            "base_schedule": "shared"}),
}  # fmt: skip
#: Modes whose x0-hat trajectories are recorded (side-by-side figure, commitment and diversity curves).
TRAJECTORY_MODES = ("base", "distilled", "hybrid-1", "own-1")
METRICS = ("attr", "feat", "pixel")
METRIC_LABELS = {
    "attr": "attribute div. (evaluator size/x/y/bg, L2)",
    "feat": "feature div. (evaluator, 1 - cos)",
    "pixel": "pixel div. (RMS)",
}
FAILURE_COLUMNS = ("failed", "empty", "fragmented", "smeared")
SLIDER_NAME = "size"
SLIDER_PROMPTS = ("a circle", "a red circle", "a blue square", "a green triangle")


def slider_path(name: str = SLIDER_NAME) -> Path:
    """The shipped slider file (`divdistill/pocket/weights/sliders/<name>.safetensors`)."""
    return Path(__file__).parent / "pocket" / "weights" / "sliders" / f"{name}.safetensors"


@dataclass(frozen=True)
class DemoConfig:
    prompts: int = 8
    seeds: int = 32
    grid_seeds: int = 8
    trajectory_prompts: int = 4
    trajectory_seeds: int = 8
    slider_prompts: int = 4
    slider_seeds: int = 12
    scales: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)
    replicates: int = 1000
    threads: int = 1
    seed_offset: int = 0

    @classmethod
    def full(cls, **changes: Any) -> DemoConfig:
        return replace(cls(), **changes)

    @classmethod
    def quick(cls, **changes: Any) -> DemoConfig:
        quick = cls(prompts=2, seeds=4, grid_seeds=4, trajectory_prompts=1, trajectory_seeds=3, slider_prompts=1,
                    slider_seeds=2, scales=(-2.0, 0.0, 2.0), replicates=100)  # fmt: skip
        return replace(quick, **changes)


# ----------------------------------------------------------------------------------------------- measuring
class AttributeDistance(ImageDistance):
    """L2 distance of the pocket evaluator's standardised size/x/y/background read-out (the "attr" space)."""

    name = "pocket-attr"
    label = "evaluator attributes (L2)"

    def __init__(self, evaluator: Any):
        self.evaluator = evaluator

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.evaluator.attribute_vector(a) - self.evaluator.attribute_vector(b)).norm(dim=1)

    def pairwise(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.evaluator.attribute_vector(images).double()
        return torch.cdist(x[None], x[None])[0].float()


class LayoutDistance(ImageDistance):
    """Distance of pixel layouts: object position and colour, background grey (`divdistill.pocket.pixels`)."""

    name = "pocket-layout"
    label = "layout (object position, colour, background)"

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        from divdistill.pocket.pixels import layout_distance

        return layout_distance(a, b)


def failure_row(images: Sequence[torch.Tensor], prompts: Sequence[str], evaluator: Any) -> dict[str, float]:
    """Share of failed images (empty, fragmented, smeared; from pixels) and the evaluator's shape accuracy."""
    from divdistill.pocket.pixels import failure_rates
    from divdistill.pocket.world import SHAPES, parse_caption

    row = failure_rates(torch.cat(list(images)))
    right = [(evaluator.read(x).shape == SHAPES.index(parse_caption(p).shape)).float() for x, p in zip(images, prompts)]
    row["shape_accuracy"] = float(torch.cat(right).mean())
    return row


def measure_prompt(images: torch.Tensor, prompt: str, evaluator: Any, replicates: int, seed: int) -> dict[str, Any]:
    """Per prompt: diversity Estimates (with bootstrap replicates) in the three spaces, and per-image adherence."""
    from divdistill.metrics.diversity import matrix_estimate, pairwise_estimate

    attr = evaluator.attribute_vector(images).double()
    return {
        "attr": matrix_estimate(torch.cdist(attr[None], attr[None])[0], replicates, seed),
        "feat": pairwise_estimate(evaluator.features(images), "cosine", replicates, seed),
        "pixel": pairwise_estimate(images.flatten(1), "rms", replicates, seed),
        "adherence": evaluator.adherence(images, prompt),
    }


def summarise(per_prompt: Sequence[dict[str, Any]], replicates: int) -> dict[str, dict[str, float]]:
    """Average the prompts' estimates (intervals from replicate-wise averages) and pool adherence."""
    from divdistill.metrics.diversity import average, mean_estimate

    row: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        est = average([p[metric] for p in per_prompt])
        row[metric] = {"mean": est.value, "low": est.low, "high": est.high}
    est = mean_estimate(torch.cat([p["adherence"] for p in per_prompt]), replicates)
    row["adherence"] = {"mean": est.value, "low": est.low, "high": est.high}
    return row


def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


# ----------------------------------------------------------------------------------------------- figures
def image_grid(rows: Sequence[tuple[str, Sequence[torch.Tensor]]], columns: Sequence[str], path: Path,
               title: str = "", cell: int = 64) -> Path:  # fmt: skip
    """A labelled grid (`divdistill.images.labelled_grid`) written to `path`."""
    from divdistill.images import labelled_grid, save_image_atomic

    return save_image_atomic(labelled_grid(rows, columns, title=title, cell=cell), path)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-")


# ----------------------------------------------------------------------------------------------- the run
@dataclass
class DemoResult:
    config: dict[str, Any]
    table: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    commitment: dict[str, Any] = field(default_factory=dict)
    slider: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def run_demo(out: str | Path, config: DemoConfig | None = None, log: Callable[[str], None] | None = print,
             pipe: Any = None, evaluator: Any = None) -> DemoResult:  # fmt: skip
    """Run every part of the demo into OUT and return its numbers (see the module doc)."""
    from divdistill.pocket import PROMPTS, pocket_pipeline
    from divdistill.pocket.evaluator import load_evaluator
    from divdistill.pocket.world import sample_world

    config = config or DemoConfig.full()
    say = log or (lambda _text: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    previous_threads = torch.get_num_threads()
    from diffusers.utils import logging as diffusers_logging

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
        for name, (label, kwargs) in MODES.items():
            seconds, nfe, batch = 0.0, 0, []
            for prompt in prompts:
                start = time.perf_counter()
                output = pipe(prompt, num_images_per_prompt=len(seeds), generator=_generators(seeds),
                              output_type="pt", **kwargs)  # fmt: skip
                seconds += time.perf_counter() - start
                nfe = int(output.nfe)
                batch.append(output.images.float().clamp(0, 1).cpu())
            images[name] = batch
            measured[name] = [measure_prompt(x, p, evaluator, config.replicates, i)
                              for i, (x, p) in enumerate(zip(batch, prompts))]  # fmt: skip
            row = summarise(measured[name], config.replicates)
            result.table[name] = {"label": label, **row, **failure_row(batch, prompts, evaluator), "nfe": nfe,
                                  "seconds_per_image": seconds / (len(prompts) * len(seeds))}  # fmt: skip
            say(f"  {name:10s} attr div {row['attr']['mean']:.3f}  adherence {row['adherence']['mean']:.3f}  "
                f"NFE {nfe}  {seconds:.1f} s")  # fmt: skip
        base_attr = result.table["base"]["attr"]["mean"]
        for row in result.table.values():
            row["attr_vs_base"] = row["attr"]["mean"] / base_attr if base_attr else math.nan
        result.timings["modes"] = time.perf_counter() - stage

        # ---------------------------------------------------------------- sample grids
        grid_seeds = min(config.grid_seeds, len(seeds))
        grids = []
        for i, prompt in enumerate(prompts):
            rows = [(name, images[name][i][:grid_seeds]) for name in ("real", *MODES)]
            path = out / f"samples-{i:02d}-{_slug(prompt)}.png"
            image_grid(rows, [f"seed {s}" for s in seeds[:grid_seeds]], path, title=f'"{prompt}"')
            grids.append((prompt, path.name))

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


def trajectories(pipe: Any, evaluator: Any, prompts: Sequence[str], seeds: Sequence[int], out: Path,
                 result: DemoResult) -> list[tuple[str, str]]:  # fmt: skip
    """Record x0-hat trajectories per mode, draw the side-by-side figure and the curves, measure commitment."""
    from divdistill.metrics.distance import FeatureDistance
    from divdistill.trajectory import commitment_curve, decode_trajectory, diversity_curve, pipeline_decoder
    from divdistill.trajectory import suggest_switch_point
    from divdistill.trajectory.render import plot_curves, side_by_side
    from divdistill.trajectory.report import write_curves_csv, write_curves_json

    decoder = pipeline_decoder(pipe)
    features = FeatureDistance(evaluator.features, name="pocket", label="evaluator features (1 - cos)")
    distances = {"layout": LayoutDistance(), "attr": AttributeDistance(evaluator), "feat": features}
    decoded: dict[str, list[Any]] = {}
    for name in TRAJECTORY_MODES:
        runs = []
        for i, prompt in enumerate(prompts):
            output = pipe(prompt, num_images_per_prompt=len(seeds), generator=_generators(seeds), output_type="pt",
                          return_trajectory=True, **MODES[name][1])  # fmt: skip
            trajectory = output.trajectory
            trajectory.label = name
            runs.append(decode_trajectory(trajectory, decoder, x_t=(i == 0)))
        decoded[name] = runs
    figures: list[tuple[str, str]] = []
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
    from divdistill.control.evaluate import FunctionScorer, evaluate_control

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


def targets(result: DemoResult) -> dict[str, dict[str, Any]]:
    """The paper's targets on this run's numbers (see /docs/pocket.md for the reasons behind each miss)."""
    t = result.table

    def ratio(mode: str) -> float:
        return t[mode]["attr_vs_base"]

    adherence_gap = t["hybrid-1"]["adherence"]["mean"] - t["base"]["adherence"]["mean"]
    base_effect = result.slider["effect"].get("base", math.nan)
    transfer = result.slider["effect"].get("distilled", math.nan) / base_effect if base_effect else math.nan
    commit = result.commitment
    commit_delta = commit["distilled_first_step"]["distance"] - commit["base_at_25pct"]["distance"]
    worst_failed = max(t[mode]["failed"] for mode in MODES)
    base_adherence, base_shape = t["base"]["adherence"]["mean"], t["base"]["shape_accuracy"]
    checks = {
        "distilled diversity <= 0.85 x base": (ratio("distilled"), ratio("distilled") <= 0.85),
        "hybrid k=1 (shared) >= 0.95 x base at NFE <= distilled + 1": (
            ratio("hybrid-1"), ratio("hybrid-1") >= 0.95 and t["hybrid-1"]["nfe"] <= t["distilled"]["nfe"] + 1),
        "replacing the final step (reverse-1) does not restore (< 0.95 x base)": (
            ratio("reverse-1"), ratio("reverse-1") < 0.95),
        "own-1 (base's own grid to t=749) >= 0.95 x base": (ratio("own-1"), ratio("own-1") >= 0.95),
        "base adherence >= 0.85": (base_adherence, base_adherence >= 0.85),
        "base shape accuracy >= 0.9": (base_shape, base_shape >= 0.9),
        "hybrid k=1 adherence >= base - 0.05": (adherence_gap, adherence_gap >= -0.05),
        "empty/fragmented/smeared images <= 2% in every mode": (worst_failed, worst_failed <= 0.02),
        "slider transfer: distilled effect same sign and >= 0.5 x base": (transfer, transfer >= 0.5),
        "commitment: distilled step-1 layout distance <= base's after 25%": (commit_delta, commit_delta <= 0),
    }  # fmt: skip
    return {name: {"value": value, "pass": bool(ok)} for name, (value, ok) in checks.items()}


# ----------------------------------------------------------------------------------------------- outputs
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
    from divdistill.htmlpage import CHECK_SCRIPT
    from divdistill.trajectory.report import _STYLE

    e = html.escape
    cfg = result.config
    target_rows = [[("holds" if v["pass"] else "FAILS"), name, _fmt(v["value"])] for name, v in result.targets.items()]
    effects = result.slider["effect"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>divdistill demo: the pocket pair</title>',
        f"<style>{_STYLE}{_EXTRA_STYLE}</style>",
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
        + "; ".join(f"<b>{e(k)}</b>: {e(v[0])}" for k, v in MODES.items())
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
    from divdistill.images import atomic_write, write_json_atomic
    from divdistill.trajectory.report import _clean

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
    write_json_atomic(_clean(asdict(result)), out / "results.json")
    with atomic_write(out / "index.html", "w") as handle:
        handle.write(page)
