"""`divdistill trace`: x0-hat trajectories of base, distilled and hybrid runs, their figures and curves.

    divdistill trace --preset sdxl-dmd2 --prompt "a photo of a dog" --seeds 0-7 --modes base,distilled,hybrid --out DIR

Modes (comma-separated): `base` (the base alone on its own scheduler, --base-num-inference-steps steps),
`base:N` (N own steps), `distilled`, `hybrid` (the pair's base_steps), `hybrid:K` (base for the first K steps),
`reverse:K` (base for the last K steps). Seeds: `0-7`, `0,3,9`, `0-3,10`; with a CSV whose rows have an
`evaluation_seed`, image seeds are that seed plus each --seeds value.

Output layout
-------------
    OUT/index.html                      every figure below, the curves and the switch-point suggestion
    OUT/curves.json, OUT/curves.csv     commitment and diversity curves per mode (means, spread, raw values)
    OUT/commitment.png, OUT/diversity.png
    OUT/trace.json                      the request, prompts and files (written last)
    OUT/prompts/<id>/grid-<mode>.png    x0-hat trajectory grid: rows = seeds, columns = steps
    OUT/prompts/<id>/side-by-side.png   first seed across modes, x_t and x0-hat rows (the paper's figure 4)
    OUT/prompts/<id>/x0-<mode>.gif      x0-hat over the steps, all seeds side by side
    OUT/prompts/<id>/latents/<mode>/    the recorded trajectory (safetensors + JSON; --no-latents skips it)
    OUT/prompts/<id>/prompt.json        per-mode distances of this prompt (written last: the prompt is done)

Resume: every file is written atomically and each prompt's prompt.json last. Rerunning skips prompts whose
prompt.json matches the request; saved latents of the same sampling settings are reused, so changing only
--metric, --threshold or the decoder redoes the analysis without sampling again. A folder traced with other
sampling settings (pair, dtype, steps, guidance, sizes; recorded in OUT/.divdistill-trace.json from the start),
prompts or seeds, or a folder of other files, is refused unless --overwrite (which traces everything again).
While a trace writes OUT it holds OUT/.divdistill.lock (divdistill.outlock): a second run into OUT is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from divdistill.cli import CLIError
from divdistill.cli.common import (
    add_device_arguments,
    add_model_arguments,
    add_sampling_arguments,
    check_model_arguments,
    check_output_folder,
    check_timesteps,
    model_request,
    positive_int,
)

if TYPE_CHECKING:
    import torch

    from divdistill.pipeline import HybridPipeline

MODE_KINDS = ("base", "distilled", "hybrid", "reverse")
PROMPT_RECORD = "prompt.json"
TRACE_RECORD = "trace.json"


# ----------------------------------------------------------------------------------------------- parsing
def parse_seeds(text: str) -> list[int]:
    """'0-7' -> [0..7]; '0,3,5-6' -> [0, 3, 5, 6] (order kept; repeats allowed)."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                cut = part.index("-", 1)
                start, end = int(part[:cut]), int(part[cut + 1 :])
                if end < start:
                    raise argparse.ArgumentTypeError(f"seed range {part!r} runs backwards")
                seeds.extend(range(start, end + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad seeds {text!r}: use e.g. 0-7 or 0,3,5-6") from None
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given")
    from divdistill.jobs import MAX_SEED

    outside = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if outside:  # what torch.Generator.manual_seed takes
        raise argparse.ArgumentTypeError(
            f"seed {outside[0]} is out of range (seeds run from 0 to 2**64 - 1 = {MAX_SEED}); give seeds in that range"
        )
    return seeds


@dataclass(frozen=True)
class ModeSpec:
    """One traced mode: its label (as typed), and the pipeline call arguments it sets."""

    label: str
    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.label.replace(":", "-")


def parse_modes(text: str) -> list[ModeSpec]:
    """'base,distilled,hybrid,hybrid:2' -> mode specs (see the module doc)."""
    specs: list[ModeSpec] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        kind, _, number = part.partition(":")
        if kind not in MODE_KINDS:
            raise argparse.ArgumentTypeError(f"unknown mode {kind!r}; use {', '.join(MODE_KINDS)} (e.g. hybrid:2)")
        count = None
        if number:
            try:
                count = int(number)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"bad mode {part!r}: the number after ':' must be an integer"
                ) from None
            if kind == "distilled":
                raise argparse.ArgumentTypeError("'distilled' takes no number (set the step count with --steps)")
            if count < (1 if kind == "base" else 0):
                raise argparse.ArgumentTypeError(f"bad mode {part!r}: the number is too small")
        kwargs: dict[str, Any] = {"mode": kind}
        if count is not None:
            kwargs["base_num_inference_steps" if kind == "base" else "base_steps"] = count
        spec = ModeSpec(part, kind, kwargs)
        if spec.label in {s.label for s in specs}:
            raise argparse.ArgumentTypeError(f"mode {part!r} is given twice")
        specs.append(spec)
    if not specs:
        raise argparse.ArgumentTypeError("no modes given")
    return specs


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "trace",
        help="x0-hat trajectories of base/distilled/hybrid runs: figures, commitment and diversity curves",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)

    prompts = parser.add_argument_group("prompts, seeds and modes")
    prompts.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    prompts.add_argument(
        "--prompts", metavar="FILE.csv", help="CSV with a 'prompt' column (optional 'case_number', 'evaluation_seed')"
    )
    prompts.add_argument("--negative-prompt", help="negative prompt (used where guidance runs)")
    prompts.add_argument(
        "--seeds", type=parse_seeds, default=parse_seeds("0-3"), help="e.g. 0-7 or 0,3,5 (default 0-3)"
    )
    prompts.add_argument(
        "--modes",
        type=parse_modes,
        default=parse_modes("base,distilled,hybrid"),
        help="e.g. base,distilled,hybrid,hybrid:2 (default base,distilled,hybrid)",
    )

    sampling = parser.add_argument_group("sampling (unset: the pair's defaults)")
    sampling.add_argument("--base-num-inference-steps", type=positive_int, help="steps of the 'base' mode")
    sampling.add_argument(
        "--base-schedule", choices=("shared", "own"), help="hybrid base on the distilled schedule (shared) or its own"
    )
    add_sampling_arguments(sampling)

    analysis = parser.add_argument_group("analysis")
    analysis.add_argument("--metric", default="auto", help="distance: auto (default), dreamsim, lpips or pixel")
    analysis.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="switch point: base committed when its distance is <= THRESHOLD x the first step's "
        "(default 0.5; with --absolute-threshold, in the metric's units)",
    )
    analysis.add_argument("--absolute-threshold", action="store_true", help="read --threshold in the metric's units")
    analysis.add_argument(
        "--preview-decoder",
        metavar="PATH_OR_REPO",
        help="decode x0-hats with this diffusers AutoencoderTiny (e.g. madebyollin/taesdxl)",
    )
    analysis.add_argument("--decode-batch-size", type=positive_int, default=16, help="latents per decode call")
    analysis.add_argument(
        "--max-columns", type=positive_int, default=12, help="steps shown per grid row (spread evenly; default 12)"
    )

    run = parser.add_argument_group("run")
    run.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_device_arguments(run, "cuda, else mps, else cpu")
    run.add_argument("--batch-size", type=positive_int, help="images per pipeline call (default: all seeds)")
    run.add_argument("--no-latents", action="store_true", help="do not keep the recorded latents")
    run.add_argument("--overwrite", action="store_true",
                     help="trace every prompt again, replacing what --out holds (without it, a folder traced with "
                     "other sampling settings, prompts or seeds is refused)")  # fmt: skip
    run.add_argument("--max-index-prompts", type=positive_int, default=50, help="prompts shown on index.html")
    parser.set_defaults(func=run_trace)
    return parser


def check_args(args: argparse.Namespace) -> None:
    if (args.prompt is None) == (args.prompts is None):
        raise CLIError(
            "give --prompt TEXT (one or more) or --prompts FILE.csv" + (" (not both)" if args.prompt else "")
        )
    if args.prompt is not None and not all(p.strip() for p in args.prompt):
        raise CLIError("--prompt is empty")
    check_model_arguments(args, known_preset=True)
    check_timesteps(args)
    check_output_folder(args.out)


# ----------------------------------------------------------------------------------------------- the model
def build_pipeline(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> HybridPipeline:
    """The pair the arguments name, loaded as `divdistill generate` loads it. Tests replace this function."""
    from divdistill.cli.generate import build_pipeline as generate_build

    return generate_build(args, device, dtype)


def resolve_device(name: str | None) -> torch.device:
    """--device, checked before anything loads (see `divdistill.devices`); unset: cuda, else mps, else cpu."""
    from divdistill import devices

    return devices.resolve_device(name)


def load_preview_decoder(source: str, device: torch.device, dtype: torch.dtype, cache_dir: str | None):
    from diffusers import AutoencoderTiny

    from divdistill.loading import diffusers_dtype
    from divdistill.trajectory.decode import autoencoder_decoder

    vae = AutoencoderTiny.from_pretrained(source, cache_dir=cache_dir, **diffusers_dtype(dtype)).to(device)
    return autoencoder_decoder(vae.eval())


def call_kwargs(args: argparse.Namespace, spec: ModeSpec) -> dict[str, Any]:
    kwargs = {
        "num_inference_steps": args.steps,
        "timesteps": args.timesteps,
        "base_num_inference_steps": args.base_num_inference_steps,
        "base_schedule": args.base_schedule if spec.kind == "hybrid" else None,
        "guidance_scale": args.guidance_scale,
        "base_guidance_scale": args.base_guidance_scale,
        "guidance_rescale": args.guidance_rescale,
        "resolution_binning": args.resolution_binning,
        "negative_prompt": args.negative_prompt,
        "height": args.height,
        "width": args.width,
        **spec.kwargs,
    }
    return {k: v for k, v in kwargs.items() if v is not None}


def distilled_timesteps(pipe: Any, args: argparse.Namespace) -> list[float]:
    """The distilled schedule's timesteps for these arguments (what `hybrid:K` splits)."""
    from divdistill.pipeline import fresh_scheduler

    settings = pipe.defaults.updated(num_inference_steps=args.steps)
    timesteps = args.timesteps
    if timesteps is None and settings.timesteps and len(settings.timesteps) == settings.num_inference_steps:
        timesteps = list(settings.timesteps)
    steps = len(timesteps) if timesteps is not None else settings.num_inference_steps
    size = pipe.family.default_size(pipe.distilled)
    shape = pipe.family.latent_shape(pipe.distilled, 1, settings.height or size, settings.width or size)
    scheduler = fresh_scheduler(pipe.distilled.scheduler)
    schedule = pipe.family.set_schedule(pipe.distilled, scheduler, steps, timesteps, "cpu", shape)
    return [float(t) for t in schedule]


# ----------------------------------------------------------------------------------------------- requests
def sampling_request(args: argparse.Namespace, dtype_name: str) -> dict[str, Any]:
    request = {
        "model": model_request(args),
        "dtype": dtype_name,
        "sampling": {k: v for k, v in vars(args).items() if k in _SAMPLING_ARGS},
    }
    return json.loads(json.dumps(request))


_SAMPLING_ARGS = (
    "steps",
    "timesteps",
    "base_num_inference_steps",
    "base_schedule",
    "guidance_scale",
    "base_guidance_scale",
    "guidance_rescale",
    "resolution_binning",
    "negative_prompt",
    "height",
    "width",
)


@dataclass
class PromptJob:
    id: str
    prompt: str
    seeds: list[int]

    def folder(self, out: Path) -> Path:
        return out / "prompts" / self.id


def prompt_jobs(args: argparse.Namespace) -> list[PromptJob]:
    if args.prompts is None:
        width = max(3, len(str(len(args.prompt) - 1)))
        return [PromptJob(f"{i:0{width}d}", p.strip(), list(args.seeds)) for i, p in enumerate(args.prompt)]
    from divdistill.jobs import JobError, check_seed_range, read_prompts_csv

    try:
        jobs = read_prompts_csv(args.prompts)
    except JobError as error:
        raise CLIError(str(error)) from None
    for job in jobs:  # a row's seed plus each --seeds value must stay a seed torch takes
        check_seed_range((job.seed or 0) + max(args.seeds), 1, f"evaluation_seed of job {job.id!r} + --seeds")
    return [PromptJob(j.id, j.prompt, [(j.seed or 0) + s for s in args.seeds]) for j in jobs]


# ----------------------------------------------------------------------------------------------- one prompt
class Context:
    """What a run shares across prompts: the pipeline (loaded on first need), decoder and metric."""

    def __init__(self, args: argparse.Namespace, device: torch.device, dtype: torch.dtype, distance: Any):
        self.args, self.device, self.dtype, self.distance = args, device, dtype, distance
        self._pipe: Any = None
        self._decoder: Any = None

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            self._pipe = build_pipeline(self.args, self.device, self.dtype)
            self._pipe.set_progress_bar_config(disable=True)
        return self._pipe

    @property
    def decoder(self) -> Any:
        if self._decoder is None:
            if self.args.preview_decoder:
                self._decoder = load_preview_decoder(
                    self.args.preview_decoder, self.device, self.dtype, self.args.cache_dir
                )
            else:
                from divdistill.trajectory.decode import pipeline_decoder

                self._decoder = pipeline_decoder(self.pipe)
        return self._decoder


def sample_trajectory(context: Context, job: PromptJob, spec: ModeSpec) -> Any:
    """Run one mode for all seeds of a prompt (in --batch-size chunks) and return its trajectory."""
    import torch

    from divdistill.trajectory.recorder import Trajectory

    args = context.args
    size = args.batch_size or len(job.seeds)
    parts = []
    for start in range(0, len(job.seeds), size):
        seeds = job.seeds[start : start + size]
        generators = [torch.Generator(context.device).manual_seed(s) for s in seeds]  # as `generate` draws them
        output = context.pipe(
            [job.prompt] * len(seeds),
            generator=generators,
            output_type="latent",
            return_trajectory=True,
            **call_kwargs(args, spec),
        )
        part = output.trajectory
        part.seeds = list(seeds)
        parts.append(part)
    trajectory = Trajectory.concat(parts, label=spec.label)
    trajectory.extra["nfe_per_image"] = sum(r.nfe for r in trajectory.steps)
    return trajectory


def trace_prompt(context: Context, job: PromptJob, request: dict[str, Any], out: Path) -> dict[str, Any]:
    """Sample (or reload), decode, measure and draw one prompt; write its prompt.json last and return it."""
    from divdistill.images import remove_stale_temps, write_json_atomic
    from divdistill.trajectory import render
    from divdistill.trajectory.curves import commitment_distances, diversity_distances, final_diversity
    from divdistill.trajectory.recorder import META_FILE, Trajectory

    args = context.args
    folder = job.folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)
    (folder / PROMPT_RECORD).unlink(missing_ok=True)
    sample_key = {**request["sampling"], "prompt": job.prompt, "seeds": job.seeds}
    modes: dict[str, Any] = {}
    decoded_first: dict[str, Any] = {}
    files: list[str] = []
    for spec in args.modes:
        latents = folder / "latents" / spec.slug
        trajectory = None
        if not getattr(args, "overwrite", False) and (latents / META_FILE).is_file():  # --overwrite samples again
            try:
                saved = Trajectory.load(latents)
            except (OSError, ValueError, KeyError):
                saved = None
            if saved is not None and saved.extra.get("request") == {**sample_key, "mode": spec.label}:
                trajectory = saved
        if trajectory is None:
            trajectory = sample_trajectory(context, job, spec)
            trajectory.extra["request"] = json.loads(json.dumps({**sample_key, "mode": spec.label}))
            if not args.no_latents:
                trajectory.save(latents)
        decoded = trajectory.decode(context.decoder, chunk_size=args.decode_batch_size)
        grid, gif = f"grid-{spec.slug}.png", f"x0-{spec.slug}.gif"
        render.trajectory_grid(
            decoded, folder / grid, max_columns=args.max_columns, title=f"{spec.label}: x0-hat per step | {job.prompt}"
        )
        render.animation(decoded, folder / gif)
        files += [grid, gif]
        first = trajectory.select([0]).decode(context.decoder, chunk_size=args.decode_batch_size, x_t=True)
        decoded_first[spec.label] = first
        commitment = commitment_distances(decoded, context.distance)
        diversity = diversity_distances(decoded, context.distance)
        modes[spec.label] = {
            "kind": spec.kind,
            "steps": [r.to_dict() for r in trajectory.steps],
            "settings": trajectory.settings,
            "nfe_per_image": trajectory.extra.get("nfe_per_image"),
            "commitment": commitment.tolist(),  # [steps][seeds]
            "diversity": diversity[:, 0].tolist(),  # [steps]
            "final_diversity": final_diversity(decoded, context.distance)[0],
            "grid": grid,
            "animation": gif,
            "latents": None if args.no_latents else (latents.relative_to(folder).as_posix()),
        }
    render.side_by_side(
        decoded_first,
        folder / "side-by-side.png",
        max_columns=args.max_columns,
        title=f"seed {job.seeds[0]}: x_t and x0-hat per mode | {job.prompt}",
    )
    files.append("side-by-side.png")
    record = {
        "id": job.id,
        "prompt": job.prompt,
        "seeds": job.seeds,
        "request": request,
        "metric": context.distance.describe(),
        "distilled_timesteps": _distilled_timesteps_of(context, modes),
        "modes": modes,
        "side_by_side": "side-by-side.png",
        "files": files,
    }
    write_json_atomic(record, folder / PROMPT_RECORD)
    return json.loads(json.dumps(record))


def _distilled_timesteps_of(context: Context, modes: dict[str, Any]) -> list[float]:
    """From a traced distilled run when there is one, else from the pair's scheduler."""
    for data in modes.values():
        if data["kind"] == "distilled":
            return [s["timestep"] for s in data["steps"]]
    return distilled_timesteps(context.pipe, context.args)


def finished_record(job: PromptJob, out: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """The prompt's record when it is finished with this request (and all its files exist)."""
    folder = job.folder(out)
    try:
        record = json.loads((folder / PROMPT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("request") != request or record.get("prompt") != job.prompt or record.get("seeds") != job.seeds:
        return None
    if not all((folder / name).is_file() for name in record.get("files", [])):
        return None
    return record


# ----------------------------------------------------------------------------------------------- summary
def aggregate(records: list[dict[str, Any]], args: argparse.Namespace, metric: dict[str, Any], out: Path) -> dict:
    """Curves over all prompts, switch point, plots, curves.json/csv; returns what index.html summarises."""
    import torch

    from divdistill.trajectory.curves import Curve, per_prompt_switch_points, suggest_switch_point
    from divdistill.trajectory.render import plot_curves
    from divdistill.trajectory.report import write_curves_csv, write_curves_json

    curves: dict[str, list[Curve]] = {"commitment": [], "diversity": []}
    for spec in args.modes:
        runs = [r["modes"][spec.label] for r in records]
        steps = runs[0]["steps"]
        common = {
            "label": spec.label,
            "metric": metric["name"],
            "metric_label": metric.get("label", metric["name"]),
            "fraction": [(i + 1) / len(steps) for i in range(len(steps))],
            "timesteps": [s["timestep"] for s in steps],
            "models": [s["model"] for s in steps],
        }
        commitment = torch.cat([torch.tensor(r["commitment"], dtype=torch.float64) for r in runs], dim=1)
        diversity = torch.tensor([r["diversity"] for r in runs], dtype=torch.float64).T
        curves["commitment"].append(Curve(kind="commitment", values=commitment, **common))
        curves["diversity"].append(Curve(kind="diversity", values=diversity, **common))

    rule = "absolute" if args.absolute_threshold else "relative"
    base_index = next((i for i, s in enumerate(args.modes) if s.kind == "base"), None)
    switch, per_prompt = None, []
    if base_index is not None:
        base_curve = curves["commitment"][base_index]
        distilled = records[0].get("distilled_timesteps")
        switch = suggest_switch_point(base_curve, distilled, threshold=args.threshold, rule=rule)
        seeds = len(records[0]["seeds"])
        columns = [list(range(i * seeds, (i + 1) * seeds)) for i in range(len(records))]
        points = per_prompt_switch_points(
            base_curve.values, columns, base_curve.timesteps, distilled, args.threshold, rule
        )
        per_prompt = [{"id": r["id"], "prompt": r["prompt"], **p.to_dict()} for r, p in zip(records, points)]

    plot_curves(curves["commitment"], out / "commitment.png", switch_point=switch)
    plot_curves(curves["diversity"], out / "diversity.png")
    all_curves = curves["commitment"] + curves["diversity"]
    final_diversity = {s.label: _mean([r["modes"][s.label]["final_diversity"] for r in records]) for s in args.modes}
    write_curves_csv(all_curves, out / "curves.csv")
    write_curves_json(
        all_curves,
        out / "curves.json",
        metric,
        switch_point=switch.to_dict() if switch else None,
        switch_point_rule=_RULE_TEXT,
        per_prompt_switch_points=per_prompt,
        final_diversity=final_diversity,
        prompts=[{"id": r["id"], "prompt": r["prompt"], "seeds": r["seeds"]} for r in records],
    )
    return {"curves": curves, "switch": switch, "final_diversity": final_diversity}


_RULE_TEXT = (
    "relative: the first step i of the base run with mean distance(x0-hat_i, final) <= threshold * that of "
    "step 0 (absolute: <= threshold); base_steps = number of distilled timesteps above t_i, clamped to "
    "[1, steps - 1]"
)


def _mean(values: list[Any]) -> float | None:
    import math

    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def write_index_page(
    out: Path,
    records: list[dict[str, Any]],
    summary: dict,
    args: argparse.Namespace,
    metric: dict[str, Any],
    model_name: str,
) -> Path:
    from divdistill.trajectory.report import Item, Section, write_index

    switch = summary["switch"]
    rows = [
        ("model", model_name),
        ("metric", metric.get("label", metric["name"])),
        ("modes", ", ".join(s.label for s in args.modes)),
        ("prompts", str(len(records))),
        ("seeds per prompt", ", ".join(map(str, records[0]["seeds"]))),
    ]
    if switch is not None:
        rows.append(("switch point (base)", switch.describe()))
    for label, value in summary["final_diversity"].items():
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
            text="Data: curves.json, curves.csv. Switch-point rule: " + _RULE_TEXT + ".",
        )
    ]
    shown = records[: args.max_index_prompts]
    for record in shown:
        base = f"prompts/{record['id']}/"
        items = [Item(base + record["side_by_side"], f"seed {record['seeds'][0]}: x_t and x0-hat rows per mode")]
        for label, data in record["modes"].items():
            items.append(Item(base + data["grid"], f"{label}: rows = seeds, columns = steps"))
        for label, data in record["modes"].items():
            items.append(Item(base + data["animation"], f"{label}: x0-hat over the steps"))
        sections.append(Section(f"{record['id']}: {record['prompt']}", items))
    if len(records) > len(shown):
        sections.append(Section(f"... and {len(records) - len(shown)} more prompts (see prompts/)"))
    return write_index(out / "index.html", f"divdistill trace: {model_name}", rows, sections)


# ----------------------------------------------------------------------------------------------- command
# ----------------------------------------------------------------------------------------------- the folder
START_RECORD = ".divdistill-trace.json"


def images_settings(request: dict[str, Any]) -> dict[str, Any]:
    """The part of a trace request that decides the sampled trajectories (pair, dtype, sampling settings); the
    rest (modes, metric, decoder, columns) only changes the analysis, which a rerun may redo."""
    return {key: request.get(key) for key in ("model", "dtype", "sampling")}


def check_folder(out: Path, jobs: list[PromptJob], request: dict[str, Any], overwrite: bool) -> None:
    """Refuse an --out this run would mix its trajectories into: a folder of other files, or one traced with other
    sampling settings, or whose prompts had other texts or seeds (the message says what differs); --overwrite
    retraces instead. Then records this run's settings in OUT/.divdistill-trace.json (kept from the first
    trajectory on, so an interrupted trace is checked too)."""
    from divdistill.fingerprint import describe_differences, fingerprint
    from divdistill.images import write_json_atomic

    current = images_settings(request)
    if not overwrite:
        entries = [p.name for p in sorted(out.iterdir()) if not p.name.startswith(".")] if out.is_dir() else []
        ours = (out / START_RECORD).is_file() or (out / TRACE_RECORD).is_file() or (out / "prompts").is_dir()
        if entries and not ours:
            raise CLIError(
                f"--out {str(out)!r} is not empty and holds no divdistill trace output ({', '.join(entries[:3])}"
                f"{', ...' if len(entries) > 3 else ''}); pick an empty or new folder, or pass --overwrite"
            )
        stored = [_read_json(out / START_RECORD).get("settings"), _read_json(out / TRACE_RECORD).get("request")]
        for settings in stored:
            if isinstance(settings, dict) and (settings := images_settings(settings)) != current:
                raise CLIError(
                    f"--out {str(out)!r} was traced with other settings ({describe_differences(settings, current)});"
                    " use another --out, or --overwrite to trace again"
                )
        for job in jobs:
            record = _read_json(job.folder(out) / PROMPT_RECORD)
            if not record:
                continue
            now = {**current, "prompt": job.prompt, "seeds": job.seeds}
            then = {**images_settings(record.get("request") or {}), "prompt": record.get("prompt"),
                    "seeds": record.get("seeds")}  # fmt: skip
            if then != now:
                raise CLIError(
                    f"{job.folder(out)} was traced with other settings ({describe_differences(then, now)}); use "
                    "another --out, or --overwrite to trace again"
                )
    write_json_atomic({"settings": current, "fingerprint": fingerprint(current)}, out / START_RECORD)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_trace(args: argparse.Namespace) -> int:
    from divdistill.cli.common import resolve_dtype
    from divdistill.metrics import get_distance

    check_args(args)
    jobs = prompt_jobs(args)
    out = Path(args.out)
    device = resolve_device(args.device)
    dtype_name, dtype = resolve_dtype(args.dtype, device, preset=args.preset)
    try:
        distance = get_distance(args.metric, device=device)
    except ImportError as error:
        raise CLIError(str(error)) from None
    metric = distance.describe()
    request = {
        **sampling_request(args, dtype_name),
        "modes": [s.label for s in args.modes],
        "metric": metric,
        "decoder": args.preview_decoder or "vae",
        "max_columns": args.max_columns,
    }
    request = json.loads(json.dumps(request))
    context = Context(args, device, dtype, distance)
    from divdistill.fingerprint import fingerprint
    from divdistill.outlock import OutputLocked, acquire

    try:  # one writer per --out
        lock = acquire(out, fingerprint(images_settings(request)), what="--out")
    except OutputLocked as error:
        raise CLIError(str(error)) from None
    with lock:
        check_folder(out, jobs, request, bool(args.overwrite))
        return _trace_locked(args, jobs, out, request, context, metric)


def _trace_locked(
    args: argparse.Namespace,
    jobs: list[PromptJob],
    out: Path,
    request: dict[str, Any],
    context: Context,
    metric: dict[str, Any],
) -> int:
    """run_trace once --out is this run's and its checks passed: trace what is not finished, then the summary."""
    from tqdm.auto import tqdm

    from divdistill.images import write_json_atomic

    records: list[dict[str, Any]] = []
    todo = 0
    with tqdm(total=len(jobs), unit="prompt", desc="trace") as bar:
        for job in jobs:
            record = None if args.overwrite else finished_record(job, out, request)
            if record is None:
                bar.set_postfix_str(job.id)
                record = trace_prompt(context, job, request, out)
                todo += 1
            records.append(record)
            bar.update()
    summary = aggregate(records, args, metric, out)
    model_name = args.preset or f"{args.base} + {args.distilled}"
    index = write_index_page(out, records, summary, args, metric, model_name)
    write_json_atomic(
        {
            "request": request,
            "prompts": [{"id": r["id"], "prompt": r["prompt"], "seeds": r["seeds"]} for r in records],
            "files": ["index.html", "curves.json", "curves.csv", "commitment.png", "diversity.png"],
            "switch_point": summary["switch"].to_dict() if summary["switch"] else None,
        },
        out / TRACE_RECORD,
    )
    done = len(jobs) - todo
    print(
        f"{index}: {len(jobs)} prompts ({todo} traced, {done} already done), metric {metric['label']}", file=sys.stderr
    )
    if summary["switch"] is not None:
        print(f"switch point: base {summary['switch'].describe()}", file=sys.stderr)
    return 0
