"""`divdistill.trajectory.trace`: x0-hat trajectories of several variants for prompts x seeds, their figures,
commitment and diversity curves and the switch-point suggestion, written to a folder (what `divdistill trace`
runs).

Output layout
-------------
    OUT/index.html                      every figure below, the curves and the switch-point suggestion
    OUT/curves.json, OUT/curves.csv     commitment and diversity curves per variant (means, spread, raw values)
    OUT/commitment.png, OUT/diversity.png
    OUT/trace.json                      the request, prompts and files (written last)
    OUT/prompts/<id>/grid-<folder>.png  x0-hat trajectory grid: rows = seeds, columns = steps
    OUT/prompts/<id>/side-by-side.png   first seed across variants, x_t and x0-hat rows (the paper's figure 4)
    OUT/prompts/<id>/x0-<folder>.gif    x0-hat over the steps, all seeds side by side
    OUT/prompts/<id>/latents/<folder>/  the recorded trajectory (safetensors + JSON; save_latents=False skips it)
    OUT/prompts/<id>/prompt.json        per-variant distances of this prompt (written last: the prompt is done)

<folder> is the variant's `folder` name (`hybrid:2` -> `hybrid-2`, `base@steps25` -> `base_steps25`).

Resume: rerunning skips prompts whose prompt.json matches the request; saved latents of the same sampling
settings are reused, so changing only the metric, threshold or decoder redoes the analysis without sampling
again. Folders of other settings are refused (see `trajectory.records`). While a trace writes OUT it holds
OUT/.divdistill.lock (`divdistill.outlock`): a second run into OUT is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from divdistill.fingerprint import fingerprint
from divdistill.images import write_json_atomic
from divdistill.metrics import get_distance
from divdistill.outlock import acquire
from divdistill.trajectory.aggregate import TraceSummary, summarize, write_summary
from divdistill.trajectory.index import write_index_page
from divdistill.trajectory.plan import PromptJob, TraceSampling, prompt_jobs
from divdistill.trajectory.prompt import TraceContext, trace_prompt
from divdistill.trajectory.records import TRACE_RECORD, PromptRecord, check_folder, finished_record, images_settings
from divdistill.variant import Variant, parse_variants

if TYPE_CHECKING:
    from divdistill.jobs import Job
    from divdistill.metrics.distance import ImageDistance
    from divdistill.trajectory.decode import Decoder


@dataclass
class DeferredPipeline:
    """A pipeline that `trace` loads (by calling `load()`) only once something must be sampled: a trace that
    its folder checks refuse, or whose prompts are all finished, never loads the model (the CLI passes one)."""

    load: Callable[[], Any]


@dataclass
class TraceResult:
    """What `trace` did and wrote: the request, every prompt's record (traced now or found finished), the
    summary (curves, switch point), the top-level files, and how many prompts were traced and reused."""

    out: Path
    request: dict[str, Any]
    prompts: list[PromptRecord]
    summary: TraceSummary
    index: Path
    files: list[Path]
    traced: int
    reused: int

    @property
    def switch_point(self) -> Any:
        return self.summary.switch_point

    def report_lines(self) -> list[str]:
        """What the CLI prints when the trace is done."""
        metric = self.request["metric"]
        lines = [
            f"{self.index}: {len(self.prompts)} prompts ({self.traced} traced, {self.reused} already done), "
            f"metric {metric.get('label', metric['name'])}"
        ]
        if self.switch_point is not None:
            lines.append(f"switch point: base {self.switch_point.describe()}")
        return lines


def trace(
    pipe: Any,
    prompts: str | Sequence[str] | Sequence[Job],
    seeds: str | Sequence[int],
    variants: str | Sequence[str | Variant],
    out: str | Path,
    *,
    sampling: TraceSampling | None = None,
    metric: str | ImageDistance = "auto",
    threshold: float = 0.5,
    absolute_threshold: bool = False,
    decoder: Decoder | None = None,
    decode_batch_size: int = 16,
    max_columns: int = 12,
    batch_size: int | None = None,
    save_latents: bool = True,
    overwrite: bool = False,
    max_index_prompts: int = 50,
    device: str | torch.device | None = None,
    model: Mapping[str, Any] | None = None,
    dtype: str | None = None,
    model_name: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TraceResult:
    """Trace `variants` (e.g. "base,distilled,hybrid:2", see `divdistill.variant`) of `pipe` (a HybridPipeline,
    or a `DeferredPipeline`) for every prompt (texts, or `divdistill.jobs.Job`s whose seed offsets `seeds`)
    and seed, into `out` (layout: the module doc); resumes what `out` already holds.

    `metric`: a distance name ("auto", "dreamsim", "lpips", "pixel") or an ImageDistance; `threshold` (relative
    to the base's first step, or with `absolute_threshold` in the metric's units) sets the switch point;
    `decoder` decodes the x0-hats (default: the pair's VAE; e.g. `decode.PreviewDecoder("madebyollin/taesdxl")`).
    `model` and `dtype` describe the pair in the request (default: the pipeline's name and dtype; a deferred
    pipeline needs them, and `device`). ValueError for bad input or a folder of other settings;
    `divdistill.outlock.OutputLocked` when another run writes `out`.
    """
    out = Path(out)
    variants = parse_variants(variants)
    jobs = prompt_jobs(prompts, seeds)
    sampling = sampling or TraceSampling()
    context = _context(pipe, device, metric, sampling, decoder)
    context.batch_size, context.decode_batch_size, context.max_columns = batch_size, decode_batch_size, max_columns
    context.save_latents, context.overwrite = save_latents, overwrite
    if model is None or dtype is None:
        if isinstance(pipe, DeferredPipeline):
            raise ValueError("a DeferredPipeline needs model= and dtype= (what the request records)")
        model = {"name": pipe.name} if model is None else model
        dtype = dtype or str(pipe.family.network(pipe.distilled).dtype).removeprefix("torch.")
    metric_info = context.distance.describe()
    request = {
        "model": dict(model),
        "dtype": dtype,
        "sampling": sampling.to_json(),
        "modes": [v.text for v in variants],
        "metric": metric_info,
        "decoder": decoder_name(decoder),
        "max_columns": max_columns,
    }
    with acquire(out, fingerprint(images_settings(request)), what="--out"):  # one writer per out
        check_folder(out, jobs, request, overwrite)
        records, traced = _trace_prompts(context, jobs, variants, request, out, progress, log)
        summary = summarize(records, variants, metric_info, threshold, absolute_threshold)
        files = write_summary(summary, records, metric_info, out)
        name = model_name or _model_name(model)
        index = write_index_page(out, records, summary, variants, metric_info, name, max_index_prompts)
        write_json_atomic(
            {
                "request": request,
                "prompts": [{"id": r.id, "prompt": r.prompt, "seeds": r.seeds} for r in records],
                "files": ["index.html", "curves.json", "curves.csv", "commitment.png", "diversity.png"],
                "switch_point": summary.switch_point.to_dict() if summary.switch_point else None,
            },
            out / TRACE_RECORD,
        )
    return TraceResult(out, request, records, summary, index, [index, *files, out / TRACE_RECORD], traced,
                       len(jobs) - traced)  # fmt: skip


def decoder_name(decoder: Decoder | None) -> str:
    """How the request records the decoder: "vae" (the pair's), a preview decoder's source, or a callable's name."""
    if decoder is None:
        return "vae"
    return str(getattr(decoder, "name", None) or getattr(decoder, "__name__", None) or type(decoder).__name__)


def _model_name(model: Mapping[str, Any]) -> str:
    """The pair's name on index.html: the preset, the pipeline's name, or "base + distilled"."""
    return str(model.get("preset") or model.get("name") or f"{model.get('base')} + {model.get('distilled')}")


def _context(pipe: Any, device: Any, metric: Any, sampling: TraceSampling, decoder: Decoder | None) -> TraceContext:
    """The shared run state: the pipeline source, the device seeds are drawn on, and the distance."""
    if isinstance(pipe, DeferredPipeline):
        if device is None:
            raise ValueError("a DeferredPipeline needs device= (where seeds are drawn and the metric runs)")
        load = pipe.load
    else:
        device = pipe.device if device is None else device

        def load() -> Any:
            return pipe

    device = torch.device(device)
    if isinstance(metric, str):
        metric = get_distance(metric, device=device)
    return TraceContext(load=load, device=device, distance=metric, sampling=sampling, decoder=decoder)


def _trace_prompts(
    context: TraceContext,
    jobs: list[PromptJob],
    variants: list[Variant],
    request: dict[str, Any],
    out: Path,
    progress: bool,
    log: Callable[[str], None] | None,
) -> tuple[list[PromptRecord], int]:
    """Trace what is not finished (in order); returns every prompt's record and how many were traced now."""
    records: list[PromptRecord] = []
    traced = 0
    with tqdm(total=len(jobs), unit="prompt", desc="trace", disable=not progress) as bar:
        for job in jobs:
            record = None if context.overwrite else finished_record(job, out, request)
            if record is None:
                bar.set_postfix_str(job.id)
                record = trace_prompt(context, job, variants, request, out)
                traced += 1
                if log is not None:
                    log(f"{job.id}: traced")
            records.append(record)
            bar.update()
    return records, traced
