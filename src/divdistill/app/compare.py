"""The Compare tab's work: the same prompt and seeds through several variants, one grid per variant (seeds in
the same columns), and per variant its diversity, NFE and seconds per image.

Sampling is what `divdistill.jobs.run` does for one prompt (one `torch.Generator(device).manual_seed(seed)` per
image, the variant's `HybridPipeline` keyword arguments); diversity is the library's `Evaluator` on the cached
PNG files, so for the same (prompt, seeds, variant) the numbers equal `divdistill.evaluate`'s (bit for bit with
its batch size set to the seeds sampled in one call: batched kernels round differently, as `generate` notes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from divdistill.app.state import AppSampling, AppState, Sample, sample_key
from divdistill.evaluation import Evaluator, ImageGroup, ImageSet
from divdistill.images import labelled_grid
from divdistill.jobs import check_seed_range
from divdistill.variant import Variant, parse_variant, parse_variants

#: The named variants offered as checkboxes (any other string of the grammar goes in the free text box).
NAMED_VARIANTS = ("base", "distilled", "hybrid:1", "hybrid:2", "hybrid:1@own", "reverse:1")
MAX_SEEDS = 64
Progress = Callable[[float, str], None]


def selected_variants(named: Sequence[str], free: str = "") -> list[Variant]:
    """The ticked variants (in the checkboxes' order), then those of the free text (comma-separated, the
    library's grammar), each once; ValueError with the grammar's message for a bad string, or when none is given."""
    variants: dict[str, Variant] = {}
    ticked = sorted(named, key=lambda n: NAMED_VARIANTS.index(n) if n in NAMED_VARIANTS else len(NAMED_VARIANTS))
    for variant in [*(parse_variant(n) for n in ticked), *(parse_variants(free) if free.strip() else [])]:
        variants.setdefault(variant.text, variant)
    if not variants:
        raise ValueError("No variant chosen; tick one or write one (e.g. hybrid:1@cfg2) in the variant box.")
    return list(variants.values())


def seed_list(first: int, count: int) -> list[int]:
    """Seeds first .. first + count - 1; ValueError for a count outside 1..MAX_SEEDS or a seed torch refuses."""
    if int(count) != count or not 1 <= count <= MAX_SEEDS:
        raise ValueError(f"The number of seeds must be a whole number from 1 to {MAX_SEEDS}, got {count}.")
    if int(first) != first:
        raise ValueError(f"The first seed must be a whole number, got {first}.")
    check_seed_range(int(first), int(count), "first seed")
    return list(range(int(first), int(first) + int(count)))


@dataclass(frozen=True)
class VariantResult:
    """One variant of a comparison: its samples (one per seed), diversity and speed."""

    variant: Variant
    seeds: list[int]
    samples: list[Sample]
    diversity: Any  # divdistill.metrics.diversity.Estimate (None with fewer than two seeds)
    metric: str
    metric_label: str
    fallback: bool
    made: int  # images sampled for this result (the rest came from the cache)

    @property
    def nfe(self) -> float:
        return sum(s.nfe for s in self.samples) / len(self.samples)

    @property
    def seconds_per_image(self) -> float:
        return sum(s.seconds for s in self.samples) / len(self.samples)

    def caption(self) -> str:
        d = self.diversity
        value = f"{d.value:.3f}" if d is not None and math.isfinite(d.value) else "n/a"
        return f"{self.variant.text} | diversity {value} | NFE {self.nfe:g} | {self.seconds_per_image:.3f} s/image"

    def grid(self, cell: int = 96) -> Any:
        """The variant's images in one row, one column per seed (PIL)."""
        from PIL import Image

        images = [Image.open(s.path).convert("RGB") for s in self.samples]
        columns = [f"seed {s}" for s in self.seeds]  # the caption is the grid's title, inside the picture
        return labelled_grid([(self.variant.text, images)], columns, title=self.caption(), cell=cell)


def generate(state: AppState, prompt: str, seeds: Sequence[int], variant: Variant, sampling: AppSampling,
             extra: Any = None, pipe: Any = None) -> tuple[list[Sample], int]:  # fmt: skip
    """The samples of `variant` for `seeds`: cached ones as they are, the missing ones in one pipeline call.
    `pipe` (default: the state's pair) and `extra` (its adapters, part of the cache key) are the Control tab's."""
    prompt = prompt.strip()
    if not prompt:
        raise ValueError("Write a prompt first.")
    keys = [sample_key(state.name, prompt, s, variant.text, sampling, extra) for s in seeds]
    missing = [(key, seed) for key, seed in zip(keys, seeds) if key not in state.samples]
    if missing:
        with state.lock:
            model = pipe if pipe is not None else state.pipe
            generators = [torch.Generator(torch.device(model.device)).manual_seed(seed) for _, seed in missing]
            output = model([prompt] * len(missing), generator=generators, output_type="pil",
                           **sampling.trace_sampling().call_kwargs(variant))  # fmt: skip
            per_image = output.seconds / len(missing)
            for (key, _), image in zip(missing, output.images):
                state.store(key, image, output.nfe, per_image)
    return [state.samples[key] for key in keys], len(missing)


def evaluator(state: AppState) -> Evaluator:
    """The state's one Evaluator of `diversity-<best metric>` (its backend loads once)."""
    if "evaluator" not in state.views:
        state.views["evaluator"] = Evaluator(f"diversity-{state.metric_name}", device=state.pipe.device,
                                             log=lambda _: None)  # fmt: skip
    return state.views["evaluator"]


def score(state: AppState, prompt: str, variant: Variant, seeds: Sequence[int], samples: Sequence[Sample]):
    """(Estimate or None, metric name, label, fallback) of the samples, by the library's Evaluator."""
    judge = evaluator(state)
    metric = judge.metrics()[0]
    if len(samples) < 2:
        return None, metric.name, metric.label, metric.fallback
    group = ImageGroup("prompt", prompt, [s.path.name for s in samples], seeds=list(seeds))
    image_set = ImageSet(variant.text, state.images_dir, [group], spec=variant.text)
    result = judge.evaluate([image_set])
    return result.averages[(variant.text, metric.name)], metric.name, metric.label, metric.fallback


def compare_variant(state: AppState, prompt: str, seeds: Sequence[int], variant: Variant,
                    sampling: AppSampling) -> VariantResult:  # fmt: skip
    samples, made = generate(state, prompt, seeds, variant, sampling)
    estimate, metric, label, fallback = score(state, prompt.strip(), variant, seeds, samples)
    return VariantResult(variant, list(seeds), samples, estimate, metric, label, fallback, made)


def compare(state: AppState, prompt: str, seeds: Sequence[int], variants: Sequence[Variant], sampling: AppSampling,
            progress: Progress | None = None) -> Iterator[VariantResult]:  # fmt: skip
    """Each variant's result as soon as it is done (the page shows grids as they arrive)."""
    for index, variant in enumerate(variants):
        if progress is not None:
            progress(index / len(variants), f"{variant.text} ({index + 1} of {len(variants)})")
        yield compare_variant(state, prompt, seeds, variant, sampling)


TABLE_HEADERS = ("variant", "what it is", "diversity", "95% interval", "NFE / image", "s / image", "sampled now")


def table_rows(results: Sequence[VariantResult]) -> list[list[Any]]:
    """The numbers table, one row per variant."""
    rows = []
    for r in results:
        d = r.diversity
        have = d is not None and math.isfinite(d.value)
        rows.append([r.variant.text, r.variant.description, round(d.value, 4) if have else "n/a",
                     f"{d.low:.3f} – {d.high:.3f}" if have else "n/a", round(r.nfe, 2),
                     round(r.seconds_per_image, 4), r.made])  # fmt: skip
    return rows
