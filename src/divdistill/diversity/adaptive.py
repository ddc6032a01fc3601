"""The adaptive switch point: the base hands each sample to the distilled model once its x0-hat has committed.

The paper fixes one switch step for every prompt and seed. Here the base runs its own fine grid, cut at the
distilled schedule's timesteps t_1 .. t_{N-1} (its hand-off points; `base:k@own` hands off at t_k). At each
point t_k a sample is committed when the relative change of its x0-hat over the last base step,

    r = |x0_j - x0_{j-1}| / |x0_j|          (latent space; the quantities the loop already has)

is at most the threshold; it then runs the distilled model on t_k .. t_{N-1}, while the others go on with the
base. Before any two base steps (k = 0) r is infinite, and at the last point every sample still on the base
hands off. So threshold inf is `distilled` and threshold 0 is `base:(N-1)@own`, exactly (same plan, scheduler
and draws). The hand-off is per sample: a sample's path depends on its own noise, generator and prompt only, so
with one generator per image it equals that image sampled alone (the networks run on sub-batches).

The base steps with a single-step scheduler (Euler, as `schedule_until` already does for DDIM and PNDM bases),
so a batch can shrink between steps. Where the base's own grid misses a hand-off timestep it is inserted (the
pocket's DDIM-40 grid holds 749/499/249; DDIM-50 misses 749).
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any

import torch

from divdistill.conventions import exact_sigma_scheduler
from divdistill.sampling import Stage, StepRecord, sample

#: Schedulers whose step keeps no per-batch history, so a batch may shrink between steps.
SINGLE_STEP = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "FlowMatchEulerDiscreteScheduler")


def base_grid(own: Any, shared: Any, convention: str, device: Any) -> Any:
    """The base's scheduler over its cut grid with every hand-off timestep of `shared` on it."""
    points = shared.timesteps[1:]
    if convention == "flow":
        kept = [float(s) for s in own.sigmas[:-1]]
        wanted = sorted(set(kept) | {float(shared.sigmas[k]) for k in range(1, len(points))}, reverse=True)
        return own if wanted == kept else exact_sigma_scheduler(own.config, wanted, device)
    kept = [int(t) for t in own.timesteps]
    wanted = sorted(set(kept) | {int(t) for t in points if int(t) > kept[-1]}, reverse=True)
    if wanted == kept and type(own).__name__ in SINGLE_STEP:
        return own
    from diffusers import EulerDiscreteScheduler

    scheduler = own if type(own).__name__ in SINGLE_STEP else EulerDiscreteScheduler.from_config(own.config)
    scheduler.set_timesteps(timesteps=wanted, device=device)
    scheduler.set_begin_index(0)
    return scheduler


def relative_change(x0: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """r per sample: |x0 - previous| / |x0| over each sample's latent."""
    dims = tuple(range(1, x0.ndim))
    diff = (x0.float() - previous.float()).pow(2).sum(dims).sqrt()
    return diff / x0.float().pow(2).sum(dims).sqrt().clamp(min=1e-12)


def _pick(generator: Any, index: torch.Tensor) -> Any:
    return [generator[i] for i in index.tolist()] if isinstance(generator, list) else generator


def sample_adaptive(session, noise, stages, raw, generator, progress=None, before_stage=None):
    """Run the adaptive switch (module doc) from unit noise; returns (latents, records, report).

    `stages` / `raw` are the pipeline's plan `base:(N-1)@own, distilled:1` and their unwrapped denoisers; the
    report holds each sample's hand-off index k and timestep and its network evaluations."""
    base_stage, distilled_stage = stages
    convention = base_stage.convention
    shared = copy.deepcopy(distilled_stage.scheduler)  # full shared schedule, never stepped
    shared_t = shared.timesteps
    n_steps = len(shared_t)
    grid_scheduler = base_grid(base_stage.scheduler, shared, convention.name, noise.device)
    grid = grid_scheduler.timesteps
    where = {int(t): i for i, t in enumerate(grid.tolist())} if convention.name != "flow" else None
    if where is None:
        sig = [float(s) for s in grid_scheduler.sigmas]
        positions = [0] + [sig.index(float(shared.sigmas[k])) for k in range(1, n_steps)]
    else:
        positions = [0] + [where[int(shared_t[k])] for k in range(1, n_steps)]

    batch = noise.shape[0]
    final = torch.empty_like(noise)
    switch = [-1] * batch
    nfe = torch.zeros(batch, dtype=torch.long)
    records: list[StepRecord] = []
    active = torch.arange(batch)
    latents = convention.initial_latents(grid_scheduler, noise, grid[0], skipped=False)
    last: torch.Tensor | None = None
    previous: torch.Tensor | None = None

    def run(stage: Stage, x: torch.Tensor, index: torch.Tensor, track: bool) -> torch.Tensor:
        nonlocal last, previous

        def seen(info) -> None:
            nonlocal last, previous
            previous, last = last, info.x0

        out, steps = sample(x, [stage], generator=_pick(generator, index), callback=seen if track else None,
                            progress=progress, before_stage=before_stage)  # fmt: skip
        nfe[index] += sum(r.nfe for r in steps)
        records.extend(replace(r, index=len(records) + i) for i, r in enumerate(steps))
        return out

    for k in range(n_steps):
        if k > 0:  # the base's steps from the previous point down to t_k, for the samples still on it
            denoiser = session.prepare(raw[0], grid_scheduler, convention.name, active)
            stage = Stage("base", denoiser, grid_scheduler, grid[positions[k - 1] : positions[k]], convention)
            latents = run(stage, latents, active, track=True)
        if k == n_steps - 1:
            committed = torch.ones(len(active), dtype=torch.bool)
        elif k == 0 or previous is None:
            committed = torch.full((len(active),), math.isinf(session.threshold), dtype=torch.bool)
        else:
            committed = relative_change(last, previous).cpu() <= session.threshold
        group = active[committed]
        if len(group):
            scheduler = copy.deepcopy(shared)
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(k)
            if k == 0:
                start = convention.initial_latents(scheduler, noise[group.to(noise.device)], shared_t[0], skipped=False)
            else:
                start = convention.handoff(
                    latents[committed.to(latents.device)], grid_scheduler, scheduler, shared_t[k]
                )
            denoiser = session.prepare(raw[1], scheduler, convention.name, group)
            stage = Stage("distilled", denoiser, scheduler, shared_t[k:], convention, eta=distilled_stage.eta)
            final[group.to(final.device)] = run(stage, start, group, track=False)
            for i in group.tolist():
                switch[i] = k
        keep = ~committed
        active = active[keep]
        latents = latents[keep.to(latents.device)]
        if last is not None:
            last, previous = last[keep.to(last.device)], None if previous is None else previous[keep.to(last.device)]
        if not len(active):
            break
    report = {
        "switch_steps": switch,
        "switch_timesteps": [float(shared_t[k]) for k in switch],
        "nfe_per_image": nfe.tolist(),
    }
    return final, records, report
