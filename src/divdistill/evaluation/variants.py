"""Generate-then-score: a pair's sampling variants as job sets, then their diversity, quality and speed.

    from divdistill.evaluation import Evaluator, evaluate_variants
    from divdistill.jobs import GenerationSettings, read_prompts_csv

    done = evaluate_variants(pipe, read_prompts_csv("p.csv"), "base,distilled,hybrid:1", "out",
                             GenerationSettings(num_images=16), Evaluator("diversity,vendi"))
    done.result.rows                     # the metric rows; out/hybrid-1/<job>/000_seed0.png, ...

Each variant's images are an ordinary `divdistill.jobs.run` job set into `OUT/<variant.folder>` (resumable and
sharded like `divdistill generate`, the same files), generated on one pipeline; the image sets are then read back
(`scan_image_set`) and scored by the evaluator. This is what `divdistill eval` calls; no argv is built or parsed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from divdistill.evaluation.imagesets import ImageSet, scan_image_set
from divdistill.evaluation.results import DEFAULT_METRICS
from divdistill.evaluation.runner import Evaluator
from divdistill.jobs import GenerationSettings, Job, JobsResult, RunOptions, prompt_jobs, run
from divdistill.variant import Variant, parse_variants


@dataclass(frozen=True)
class VariantRun:
    """One variant's job set: where its images are, and what generating them did (None: not generated now)."""

    variant: Variant
    folder: Path
    jobs: JobsResult | None


@dataclass(frozen=True)
class VariantsEvaluation:
    """What `evaluate_variants` did: each variant's job set, the image sets scored, the evaluator's result (None
    on the other processes of a launch) and the seconds generation took."""

    runs: tuple[VariantRun, ...]
    sets: tuple[ImageSet, ...]
    result: Any
    generate_s: float | None


def generate_variants(
    pipe: Any,
    jobs: Job | Sequence[Job],
    variants: str | Sequence[str | Variant],
    out: str | Path,
    settings: GenerationSettings,
    options: RunOptions | None = None,
    *,
    device: Any = None,
    state: Any = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> tuple[VariantRun, ...]:
    """`jobs.run` once per variant into `out/<variant.folder>`, all on `pipe` (a LazyPipeline loads once, when
    the first variant has images to make). `settings` are shared; each variant replaces their sampling variant
    (its @cfgX, when given, the base guidance)."""
    out = Path(out)
    done = []
    for variant in parse_variants(variants):
        folder = out / variant.folder
        if log is not None:
            log(f"variant {variant.text}: {folder}")
        result = run(pipe, jobs, folder, settings.with_variant(variant), options, device=device, state=state,
                     log=log, progress=progress, what=f"variant {variant.text}'s folder")  # fmt: skip
        done.append(VariantRun(variant, folder, result))
    return tuple(done)


def evaluate_variants(
    pipe: Any,
    jobs: Job | Sequence[Job],
    variants: str | Sequence[str | Variant],
    out: str | Path,
    settings: GenerationSettings,
    evaluator: Any,
    options: RunOptions | None = None,
    *,
    reference: str | Path | ImageSet | None = None,
    generate: bool = True,
    device: Any = None,
    state: Any = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> VariantsEvaluation:
    """Generate what is missing of each variant (`generate_variants`; `generate=False` scores only what is
    there), then score the variants' image sets with `evaluator` (`divdistill.evaluation.Evaluator`, or anything
    with its `evaluate(sets, reference)`) against `reference` (a folder or ImageSet, for FID/KID/...).

    Sets are named by the variant's text and read from `out/<variant.folder>`; FileNotFoundError names a variant
    folder without images (e.g. `generate=False` before anything was generated).
    """
    out = Path(out)
    parsed = parse_variants(variants)
    generate_s = None
    if generate:
        started = time.perf_counter()
        runs = generate_variants(pipe, jobs, parsed, out, settings, options, device=device, state=state, log=log,
                                 progress=progress)  # fmt: skip
        generate_s = time.perf_counter() - started
    else:
        runs = tuple(VariantRun(v, out / v.folder, None) for v in parsed)
    sets = tuple(scan_image_set(r.folder, name=r.variant.text, spec=r.variant.text) for r in runs)
    if reference is not None and not isinstance(reference, ImageSet):
        reference = scan_image_set(reference, name="reference")
    result = evaluator.evaluate(list(sets), reference)
    return VariantsEvaluation(runs=runs, sets=sets, result=result, generate_s=generate_s)


def evaluate_prompts(
    pipe: Any,
    prompts: str | Sequence[str] | Sequence[Job],
    variants: str | Sequence[str | Variant],
    out: str | Path,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    *,
    num_images: int | None = None,
    seed: int | None = None,
    settings: GenerationSettings | None = None,
    options: RunOptions | None = None,
    reference: str | Path | ImageSet | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    **evaluator_options: Any,
) -> VariantsEvaluation:
    """`divdistill.evaluate`: a notebook's one call for "compare these variants on these prompts".

        done = divdistill.evaluate(pipe, ["a red cube", "a blue ball"], "distilled,hybrid:1", "out",
                                   metrics="diversity:pixel", num_images=8)
        done.result.rows

    `prompts` are texts (job ids 000000, ...) or `divdistill.jobs.Job`s; `num_images` (default 4) images per
    prompt from `seed` (default 0) on, or `settings`, which then decides all of it; `evaluator_options` go to
    `Evaluator` (bootstrap, level, backends, device, ...). Resumable like `divdistill eval`: a rerun scores the
    images already there.
    """
    if settings is None:
        settings = GenerationSettings(num_images=4 if num_images is None else num_images, seed=seed or 0)
    elif num_images is not None or seed is not None:
        raise ValueError("Give num_images/seed or settings, not both (settings carries its own num_images and seed).")
    evaluator = Evaluator(metrics, log=log, **evaluator_options)
    return evaluate_variants(pipe, prompt_jobs(prompts), variants, out, settings, evaluator, options,
                             reference=reference, log=log, progress=progress)  # fmt: skip


#: The package root's `divdistill.evaluate` (`divdistill.evaluation.evaluate` scores image sets already made).
evaluate = evaluate_prompts
