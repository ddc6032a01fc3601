"""Compute the metrics of image sets: embed every image once per backend (cached), then the statistics.

Metric specs are `NAME` or `NAME-BACKEND` (e.g. `diversity-dreamsim`, `vendi-pixel`, `fid-inception`):

    diversity    per prompt: mean pairwise distance among its seeds (the paper's metric; DreamSim and CLIP:
                 1 - cosine, LPIPS: LPIPS, pixel: RMS difference, pocket-attr: L2), with a bootstrap interval
                 over seeds
    vendi        per prompt: Vendi score of the embeddings (cosine kernel), with a bootstrap interval
    clip-score   per prompt: mean CLIP score of its images against its prompt
    is           per set: Inception Score (needs a backend with logits: inception)
    fid, kid     per set, against --reference: Frechet / kernel distance of the embeddings
    precision, recall, density, coverage
                 per set, against --reference: k-NN manifold metrics of the embeddings

Without a backend, `diversity` takes the first of dreamsim, lpips, pixel that loads, `vendi` the first of
dreamsim, clip, pixel; `clip-score` needs clip, and `is`, `fid`, `kid`, precision/recall need inception. The
pixel backend is the fallback that always works (no weights); its outputs say "(fallback)".

Per-prompt values average over prompts (the prompt average's interval comes from averaging the prompts'
bootstrap replicates). Prompts with more than `max_group_size` images use a fixed random subset of that size.
Under `accelerate launch` every process embeds its share of the images (the caches are merged afterwards) and
the main process computes the statistics; the others get None.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from divdistill.evaluation.imagesets import ImageSet
from divdistill.evaluation.results import (
    DEFAULT_METRICS,
    METRICS,
    SPEED_METRICS,
    EvalResult,
    Metric,
    MetricInfo,
    MetricSpec,
    parse_metric,
    parse_metrics,
)
from divdistill.metrics import distribution as dist
from divdistill.metrics import diversity as div
from divdistill.metrics.cache import EmbeddingCache, embed_missing, pair_matrix, pairwise_missing
from divdistill.metrics.embedders import Backend, BackendUnavailable, Embedder, PairwiseBackend, as_backend
from divdistill.metrics.registry import first_available, get_embedder, installed


def _label(metric: str, backend: Backend) -> str:
    if metric == "diversity":
        how = {"cosine": "1 - cosine of", "rms": "RMS difference of", "l2": "L2 distance of", "pairwise": ""}.get(
            backend.distance, ""
        )
        return f"diversity: mean pairwise {how} {backend.label}".replace("  ", " ")
    if metric == "vendi":
        return f"Vendi score (cosine kernel) of {backend.label}"
    return f"{METRICS[metric].title} ({backend.label})"


# ----------------------------------------------------------------------------------------------- evaluator
class Evaluator:
    """Evaluate image sets with the metrics `metrics` (specs or strings; see the module doc).

    backends: name -> `Embedder` / `PairwiseBackend` / feature-extractor callable, used before the registry
    (how tests and the pocket pair plug their networks in). backend_options: name -> keyword arguments for a
    registered backend's factory (e.g. {"clip": {"model": "ViT-B-32", "pretrained": "openai"}}).
    state: accelerate's PartialState (or anything with process_index, num_processes, is_main_process and
    wait_for_everyone()); None: one process.
    """

    def __init__(
        self,
        metrics: str | Sequence[str | MetricSpec] = DEFAULT_METRICS,
        *,
        backends: dict[str, Any] | None = None,
        backend_options: dict[str, dict[str, Any]] | None = None,
        device: str | torch.device | None = None,
        bootstrap: int = 1000,
        level: float = 0.95,
        seed: int = 0,
        max_group_size: int = 1000,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        pr_k: int = 3,
        is_splits: int = 10,
        cache: bool = True,
        cache_fallback: str | Path | None = None,
        state: Any = None,
        log: Callable[[str], None] | None = None,
    ):
        self.specs = [m if isinstance(m, MetricSpec) else parse_metric(m) for m in _split(metrics)]
        self.overrides = {name: as_backend(obj, name) for name, obj in (backends or {}).items()}
        self.backend_options = backend_options or {}
        self.device = device
        self.bootstrap, self.level, self.seed = bootstrap, level, seed
        self.max_group_size = max_group_size
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.pr_k, self.is_splits = pr_k, is_splits
        self.persist = cache
        self.cache_fallback = Path(cache_fallback) if cache_fallback is not None else None
        self.state = state
        self.log = log or (lambda message: print(f"divdistill eval: {message}", file=sys.stderr, flush=True))
        self._backends: dict[str, Backend] = {}
        #: With cache=False the embeddings live only in memory: `fill` and `evaluate` must share them.
        self._memory: dict[tuple[str, str], EmbeddingCache] = {}
        self.resolved: dict[MetricSpec, Backend] | None = None
        self.counts: dict[str, int] = {}
        self._pr: dict[tuple[str, str], dict[str, float]] = {}

    # ------------------------------------------------------------------------------------------- backends
    @property
    def needs_reference(self) -> bool:
        return any(spec.info.kind == "reference" for spec in self.specs)

    def check(self) -> None:
        """Fail early (before any generation) on a backend whose package is missing or that is unknown."""
        for spec in self.specs:
            if spec.backend is None:
                if not any(installed(name) or name in self.overrides for name in spec.info.auto):
                    first_available(spec.info.auto)  # raises BackendUnavailable naming the extra
            elif spec.backend not in self.overrides and not installed(spec.backend):
                get_embedder(spec.backend)  # raises BackendUnavailable or ValueError (unknown)

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            if name in self.overrides:
                self._backends[name] = self.overrides[name]
            else:
                self._backends[name] = get_embedder(name, device=self.device, **self.backend_options.get(name, {}))
        return self._backends[name]

    def resolve(self) -> dict[MetricSpec, Backend]:
        """The backend of every metric (loading each once)."""
        if self.resolved is not None:
            return self.resolved
        resolved: dict[MetricSpec, Backend] = {}
        for spec in self.specs:
            if spec.backend is not None:
                backend = self.backend(spec.backend)
            else:
                backend = None
                for name in spec.info.auto:
                    if name in self._backends or name in self.overrides:
                        backend = self.backend(name)
                        break
                if backend is None:
                    backend = first_available(spec.info.auto, self.device, self.backend_options)
                    self._backends[backend.name] = backend
            if (spec.metric == "motion") != bool(getattr(backend, "whole_clip", False)):
                raise ValueError(f"{spec}: motion is measured by the motion backend, which measures nothing else.")
            if isinstance(backend, PairwiseBackend) and spec.metric != "diversity":
                raise ValueError(f"{spec}: the {backend.name} backend only gives pairwise distances (diversity).")
            if spec.metric == "clip-score" and not backend.has_text:
                raise ValueError(f"{spec}: the {backend.name} backend has no text encoder; the CLIP score needs one.")
            if spec.info.output not in backend.outputs and isinstance(backend, Embedder):
                raise ValueError(f"{spec}: the {backend.name} backend gives no {spec.info.output!r} (it gives "
                                 f"{', '.join(backend.outputs)}); use one that does (e.g. inception).")  # fmt: skip
            resolved[spec] = backend
        self.resolved = resolved
        return resolved

    def metrics(self) -> list[Metric]:
        out = []
        for spec, backend in self.resolve().items():
            out.append(
                Metric(
                    name=f"{spec.metric}-{spec.backend or backend.name}",
                    metric=spec.metric,
                    backend=spec.backend or backend.name,
                    label=_label(spec.metric, backend),
                    kind=spec.info.kind,
                    better=spec.info.better,
                    fallback=backend.fallback,
                )
            )
        return out

    # ------------------------------------------------------------------------------------------- caches
    def cache_for(self, image_set: ImageSet, backend: Backend) -> EmbeddingCache:
        if not self.persist:
            key = (str(image_set.root.resolve()), backend.key)
            if key not in self._memory:
                self._memory[key] = EmbeddingCache(image_set.root, backend.key, persist=False)
            return self._memory[key]
        folder = None
        if self.persist and not os.access(image_set.root, os.W_OK) and self.cache_fallback is not None:
            import hashlib

            tag = hashlib.sha1(str(image_set.root.resolve()).encode()).hexdigest()[:10]
            folder = self.cache_fallback / f"{image_set.name}-{tag}"
        return EmbeddingCache(image_set.root, backend.key, folder=folder, persist=self.persist)

    def groups_of(self, image_set: ImageSet) -> list[list[str]]:
        """Each prompt's files, subsampled (fixed seed) to at most max_group_size."""
        out = []
        for group in image_set.groups:
            files = list(group.files)
            if len(files) > self.max_group_size:
                rng = random.Random(f"{self.seed}:{group.id}")
                files = sorted(rng.sample(files, self.max_group_size), key=files.index)
            out.append(files)
        return out

    def _plan(self, sets: Sequence[ImageSet], reference: ImageSet | None) -> list[tuple[ImageSet, Backend, str]]:
        """(set, backend, what) pairs to fill: 'all' images, or 'pairs' within groups."""
        plan: list[tuple[ImageSet, Backend, str]] = []

        def add(image_set: ImageSet, backend: Backend, what: str) -> None:
            if not any(s is image_set and b is backend and w == what for s, b, w in plan):
                plan.append((image_set, backend, what))

        for spec, backend in self.resolve().items():
            what = "pairs" if isinstance(backend, PairwiseBackend) else "all"
            for image_set in sets:
                add(image_set, backend, what)
            if spec.info.kind == "reference" and reference is not None:
                add(reference, backend, what)
        return plan

    def fill(self, sets: Sequence[ImageSet], reference: ImageSet | None = None) -> dict[str, int]:
        """Embed what the caches lack (this process's share); return counts per backend key."""
        rank = getattr(self.state, "process_index", 0)
        world = getattr(self.state, "num_processes", 1)
        counts: dict[str, int] = {}
        for image_set, backend, what in self._plan(sets, reference):
            cache = self.cache_for(image_set, backend)
            if what == "pairs":
                done = pairwise_missing(cache, self.groups_of(image_set), backend, shard=(rank, world))
            else:
                done = embed_missing(cache, image_set.files[rank::world], backend)
            counts[backend.key] = counts.get(backend.key, 0) + done
            if done:
                unit = "pairs" if what == "pairs" else "images"
                self.log(f"{image_set.name}: {done} {unit} embedded with {backend.key}")
        self.counts = counts
        return counts

    # ------------------------------------------------------------------------------------------- run
    def evaluate(self, sets: Sequence[ImageSet], reference: ImageSet | None = None) -> EvalResult | None:
        """Embed (sharded, cached), then compute every metric on the main process (others return None)."""
        names = [s.name for s in sets]
        if len(set(names)) != len(names):
            raise ValueError(f"Image sets need distinct names; got {names}.")
        if self.needs_reference and reference is None:
            wanted = ", ".join(str(s) for s in self.specs if s.info.kind == "reference")
            raise ValueError(f"{wanted} compare against reference images; give a reference folder (--reference DIR).")
        started = time.perf_counter()
        metrics = self.metrics()
        loaded = time.perf_counter()
        self.fill(sets, reference)
        if self.state is not None:
            self.state.wait_for_everyone()
        if self.state is not None and not self.state.is_main_process:
            return None
        embedded = time.perf_counter()
        caches: dict[tuple[int, str], EmbeddingCache] = {}
        for image_set, backend, _ in self._plan(sets, reference):
            cache = self.cache_for(image_set, backend)
            cache.merge()
            caches[(id(image_set), backend.key)] = cache
        result = EvalResult(sets=list(sets), metrics=metrics, reference=reference)
        result.config = {
            "metrics": [str(s) for s in self.specs],
            "bootstrap": self.bootstrap,
            "level": self.level,
            "seed": self.seed,
            "max_group_size": self.max_group_size,
            "kid_subsets": self.kid_subsets,
            "kid_subset_size": self.kid_subset_size,
            "pr_k": self.pr_k,
            "is_splits": self.is_splits,
            "backends": {b.name: b.describe() for b in self.resolve().values()},
        }
        for image_set in sets:
            result.speed[image_set.name] = image_set.speed()
            result.sampling[image_set.name] = image_set.sampling()
        for (spec, backend), m in zip(self.resolve().items(), metrics):
            for image_set in sets:
                cache = caches[(id(image_set), backend.key)]
                if spec.info.kind == "prompt":
                    self._per_prompt(result, m, spec, backend, image_set, cache)
                elif spec.info.kind == "set":
                    logits = cache.get(image_set.files, "logits")
                    mean, std = dist.inception_score(logits, splits=self.is_splits, seed=self.seed)
                    result.set_values[(image_set.name, m.name)] = {"value": mean, "std": std, "n": logits.shape[0]}
                else:
                    assert reference is not None
                    ref = caches[(id(reference), backend.key)].get(reference.files)
                    result.set_values[(image_set.name, m.name)] = self._against(
                        spec.metric, cache.get(image_set.files), ref, backend.key, image_set.name
                    )
        finished = time.perf_counter()
        result.notes = self._notes(result)
        result.timings = {
            "load_backends_s": loaded - started,
            "embed_s": embedded - loaded,
            "statistics_s": finished - embedded,
            "images": float(sum(len(s.files) for s in sets) + (len(reference.files) if reference else 0)),
            **{f"embedded_{key}": float(count) for key, count in self.counts.items()},
        }
        return result

    def _per_prompt(self, result: EvalResult, m: Metric, spec: MetricSpec, backend: Backend, image_set: ImageSet,
                    cache: EmbeddingCache) -> None:  # fmt: skip
        estimates: list[tuple[str, div.Estimate]] = []
        texts: dict[str, torch.Tensor] = {}
        for group, files in zip(image_set.groups, self.groups_of(image_set)):
            seed = self.seed
            if spec.metric == "diversity":
                if isinstance(backend, PairwiseBackend):
                    est = div.matrix_estimate(pair_matrix(cache, files), self.bootstrap, seed, self.level)
                else:
                    est = div.pairwise_estimate(cache.get(files), backend.distance, self.bootstrap, seed, self.level)
            elif spec.metric == "vendi":
                est = div.vendi_estimate(cache.get(files), self.bootstrap, seed, self.level)
            elif spec.metric == "motion":  # one feature per clip: its motion energy (divdistill.metrics.video)
                est = div.mean_estimate(cache.get(files)[:, 0], self.bootstrap, seed, self.level)
            else:  # clip-score
                if not group.prompt:
                    continue
                if group.prompt not in texts:
                    texts[group.prompt] = backend.embed_text([group.prompt])
                scores = dist.clip_scores(cache.get(files), texts[group.prompt])
                est = div.mean_estimate(scores, self.bootstrap, seed, self.level)
            estimates.append((group.id, est))
        result.per_prompt[(image_set.name, m.name)] = estimates
        if estimates:
            result.averages[(image_set.name, m.name)] = div.average(
                [e for _, e in estimates], self.level, recentre=spec.metric == "vendi"
            )

    def _against(self, metric: str, features: torch.Tensor, ref: torch.Tensor, key: str, name: str) -> dict:
        if metric == "fid":
            return {"value": dist.frechet_distance(features, ref), "n": features.shape[0]}
        if metric == "kid":
            mean, std = dist.kernel_inception_distance(
                features, ref, subsets=self.kid_subsets, subset_size=self.kid_subset_size, seed=self.seed
            )
            return {"value": mean, "std": std, "n": features.shape[0]}
        cache_key = (name, key)
        if cache_key not in self._pr:
            self._pr[cache_key] = dist.precision_recall(ref, features, k=self.pr_k)
        return {"value": self._pr[cache_key][metric], "n": features.shape[0]}

    def _notes(self, result: EvalResult) -> list[str]:
        notes = []
        fallback = [m.name for m in result.metrics if m.fallback]
        if fallback:
            notes.append(
                f"FALLBACK metrics: {', '.join(fallback)} compare downsampled pixels, not a perceptual embedding; "
                "they react to colour and layout rather than to what a person sees, and are not comparable with "
                "the paper's DreamSim numbers. Install `divdistill[metrics]` for DreamSim, LPIPS, CLIP and Inception."
            )
        for image_set in result.sets:
            big = [g.id for g in image_set.groups if len(g.files) > self.max_group_size]
            if big:
                notes.append(
                    f"{image_set.name}: {len(big)} prompts have more than {self.max_group_size} images; their "
                    "per-prompt metrics use a fixed random subset of that size."
                )
            if image_set.info.get("complete") is False:
                notes.append(f"{image_set.name}: some jobs are unfinished; only finished ones are evaluated.")
            small = [g.id for g in image_set.groups if len(g.files) < 2]
            if small and any(m.kind == "prompt" for m in result.metrics):
                notes.append(f"{image_set.name}: {len(small)} prompts have fewer than 2 images (no diversity).")
        return notes


def _split(metrics: str | Sequence[str | MetricSpec]) -> list[str | MetricSpec]:
    if isinstance(metrics, str):
        return [part for part in metrics.split(",") if part.strip()]
    return list(metrics)


def evaluate(
    sets: Sequence[ImageSet], reference: ImageSet | None = None, metrics: str | Sequence[str] = DEFAULT_METRICS,
    **options: Any,
) -> EvalResult | None:  # fmt: skip
    """`Evaluator(metrics, **options).evaluate(sets, reference)`."""
    return Evaluator(metrics, **options).evaluate(sets, reference)


__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "BackendUnavailable",
    "EvalResult",
    "Evaluator",
    "Metric",
    "MetricSpec",
    "evaluate",
    "parse_metric",
    "parse_metrics",
]


__all__ = [  # the metric table and the result are defined in divdistill.evaluation.results
    "DEFAULT_METRICS",
    "METRICS",
    "SPEED_METRICS",
    "EvalResult",
    "Evaluator",
    "Metric",
    "MetricInfo",
    "MetricSpec",
    "evaluate",
    "parse_metric",
    "parse_metrics",
]
