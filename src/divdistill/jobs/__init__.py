"""Prompt jobs and the job engine: what `divdistill generate` (and eval, per variant) runs, as a Python API.

    from divdistill.jobs import GenerationSettings, Job, RunOptions, read_prompts_csv, run

    settings = GenerationSettings(num_images=4, seed=0)                    # the pair's default variant
    result = run(pipe, Job("prompt", "a red cube"), "out", settings)       # out/000_seed0.png ... run.json
    result = run(pipe, read_prompts_csv("p.csv"), "out", settings.with_variant(parse_variant("hybrid:1")),
                 RunOptions(batch_size=4))                                 # out/<job>/..., out/manifest.json

Modules, one job each: `prompts` (jobs from a CSV, seeds, sharding), `layout` (file names), `settings` (the
frozen settings and their recorded JSON), `status` (what a folder holds), `jobrun` (one job's start and end),
`output` (the folder's refusals and manifest), `process` (launch state, environment, peak memory), `samples`
(an image or a video pair's clip on disk), `runner` (the generation loop and `run`). Nothing here imports torch
at module level.
"""

from divdistill.jobs.layout import CONTACT_SHEET, MANIFEST, SIDECAR, image_name
from divdistill.jobs.process import SingleProcess
from divdistill.jobs.prompts import (
    MAX_SEED,
    Job,
    JobError,
    check_seed_range,
    prompt_jobs,
    read_prompts_csv,
    safe_id,
    shard,
)
from divdistill.jobs.runner import JobResult, JobsResult, LazyPipeline, ManifestSummary, run
from divdistill.jobs.settings import (
    AdapterFile,
    AdapterSettings,
    GenerationSettings,
    ModelSettings,
    RunOptions,
    SamplingSettings,
)
from divdistill.jobs.status import is_done, job_differences, job_status, read_sidecar

__all__ = [
    "CONTACT_SHEET",
    "MANIFEST",
    "MAX_SEED",
    "SIDECAR",
    "AdapterFile",
    "AdapterSettings",
    "GenerationSettings",
    "Job",
    "JobError",
    "JobResult",
    "JobsResult",
    "LazyPipeline",
    "ManifestSummary",
    "ModelSettings",
    "RunOptions",
    "SamplingSettings",
    "SingleProcess",
    "check_seed_range",
    "image_name",
    "is_done",
    "job_differences",
    "job_status",
    "prompt_jobs",
    "read_prompts_csv",
    "read_sidecar",
    "run",
    "safe_id",
    "shard",
]
