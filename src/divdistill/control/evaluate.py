"""Measure control transfer: one adapter at several scales on the base, distilled and hybrid models.

The paper's metric (Gandikota & Bau, 2025, control distillation): the percentage change of the CLIP score
between the unedited image (scale 0: the adapter off, bit for bit) and the edited one, with respect to the concept
text, averaged over prompts and seeds; every model starts from the same x_T for a given seed.

Every adapter kind of `AdaptedPipeline.add` is measured the same way (`kind`, detected by default): LoRAs and
sliders, full fine-tune deltas and Custom Diffusion concepts (weight patches at each scale, or `add_options`
{"as_lora": True, "rank": r} for their SVD LoRA), and textual inversions. A textual inversion has no scale: its
scale 1 is the prompt as given, which must name its token, and scale 0 the same prompt without the token (the
embedding stays loaded: other prompts encode as if it were not).

A scorer maps images [N, 3, H, W] in [0, 1] and N texts to N scores. `get_scorer("clip")` is the CLIP score
(100 * max(cos, 0)) of the metric backends (`divdistill.metrics.embedders`, open_clip, loaded lazily); any
registered embedder with a text encoder works the same way, and any callable `fn(images, texts) -> [N]` can be
passed instead (e.g. the pocket pair's attribute read-outs, `divdistill.pocket.scorers:size`). A scorer with
`relative = False` reports the absolute change (score - score at scale 0) instead of a percentage, for attributes
that can be zero or negative; one with `needs_text = False` reads the image alone (no concept text needed).

Outputs (`write_control_report`): control.csv (one row per model and scale), control.json (the same plus every
image's score and the settings), control.md (tables: % change, transfer relative to the base), grids/ (one image
per prompt and seed: rows = models, columns = scales) with grid.png the first, and images/<model>/<scale>/.
"""

from __future__ import annotations

import csv
import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from divdistill.control.apply import AdaptedPipeline

MODEL_MODES = {"base": "base", "distilled": "distilled", "hybrid": "hybrid"}


# ----------------------------------------------------------------------------------------------- scorers
class Scorer:
    """images [N, 3, H, W] in [0, 1], texts (N) -> scores [N]."""

    name = "scorer"
    label = "score"
    relative = True
    needs_text = True  # False: the score reads the image only (an attribute), so no concept text is needed

    def __call__(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError


class FunctionScorer(Scorer):
    def __init__(self, fn: Callable[[torch.Tensor, list[str]], Any], name: str | None = None,
                 label: str | None = None, relative: bool | None = None):  # fmt: skip
        self.fn = fn
        self.name = name or getattr(fn, "name", None) or getattr(fn, "__name__", "custom")
        self.label = label or getattr(fn, "label", None) or self.name
        self.relative = getattr(fn, "relative", True) if relative is None else relative
        self.needs_text = getattr(fn, "needs_text", True)

    def __call__(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        scores = self.fn(images, list(texts))
        return torch.as_tensor(scores, dtype=torch.float64).reshape(-1).cpu()


class EmbedderScorer(Scorer):
    """CLIP score with any metric embedder that has a text encoder (`Embedder.has_text`)."""

    def __init__(self, embedder: Any):
        if not getattr(embedder, "has_text", False):
            raise ValueError(f"The {embedder.name} backend has no text encoder; a CLIP score needs one.")
        self.embedder = embedder
        self.name = f"clip-score-{embedder.name}"
        self.label = f"CLIP score ({getattr(embedder, 'label', embedder.name)})"

    def __call__(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        from divdistill.metrics.distribution import clip_scores

        prepared = torch.stack([self.embedder.prepare(image) for image in images])
        features = self.embedder.embed(prepared)["features"]
        return clip_scores(features, self.embedder.embed_text(list(texts))).cpu()


def get_scorer(spec: str | Scorer | Callable, device: Any = None, **options: Any) -> Scorer:
    """A scorer: a `Scorer`, a callable, "MODULE:ATTR" (a class is instantiated), or a metric backend name
    with a text encoder ("clip", or one registered with `register_embedder`), loaded lazily."""
    if isinstance(spec, Scorer):
        return spec
    if callable(spec):
        return FunctionScorer(spec)
    if ":" in spec:
        module, _, attr = spec.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        obj = obj() if isinstance(obj, type) else obj
        return obj if isinstance(obj, Scorer) else FunctionScorer(obj, name=spec)
    from divdistill.metrics.registry import get_embedder

    return EmbedderScorer(get_embedder(spec, device=device, **options))


# ----------------------------------------------------------------------------------------------- results
@dataclass
class ControlResult:
    """Every image's score, and the per model and scale summary."""

    adapter: str
    concept: str
    scorer: str
    relative: bool
    models: list[str]
    scales: list[float]
    prompts: list[str]
    seeds: list[int]
    records: list[dict[str, Any]] = field(default_factory=list)
    images: dict[tuple[str, float, int, int], Any] = field(default_factory=dict, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)
    kind: str = "lora"

    @property
    def change_label(self) -> str:
        return "change (%)" if self.relative else "change"

    def change(self, score: float, reference: float) -> float:
        if self.relative:
            return 100.0 * (score - reference) / abs(reference) if reference else math.nan
        return score - reference

    def summary(self) -> list[dict[str, Any]]:
        """One row per model and scale: mean score, mean change against scale 0 (same prompt and seed), n."""
        reference = {(r["model"], r["prompt_index"], r["seed"]): r["score"] for r in self.records if r["scale"] == 0}
        rows = []
        for model in self.models:
            for scale in self.scales:
                mine = [r for r in self.records if r["model"] == model and r["scale"] == scale]
                scores = [r["score"] for r in mine]
                changes = [self.change(r["score"], reference[(model, r["prompt_index"], r["seed"])]) for r in mine]
                finite = [c for c in changes if math.isfinite(c)]
                rows.append(
                    {
                        "model": model,
                        "scale": scale,
                        "score": _mean(scores),
                        "score_std": _std(scores),
                        "change": _mean(finite),
                        "change_std": _std(finite),
                        "n": len(mine),
                    }
                )
        return rows

    def table(self, key: str = "change") -> dict[str, dict[float, float]]:
        return {m: {r["scale"]: r[key] for r in self.summary() if r["model"] == m} for m in self.models}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return math.nan
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# ----------------------------------------------------------------------------------------------- running
def without_token(prompt: str, token: str) -> str:
    """`prompt` with every whole-word occurrence of an embedding's `token` removed (spaces collapsed)."""
    return " ".join(word for word in prompt.split() if word.strip(",.;:!?") != token)


def _applied_adapter(adapted: AdaptedPipeline, adapter: Any, kind: str, start: float | None,
                     add_options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """(the adapter added on both models at scale 0, or a textual inversion's tokens loaded; its recorded info)."""
    from divdistill.control.formats import read_lora

    if kind == "lora":
        lora = read_lora(adapter)
        return adapted.add(lora, scale=0.0, on="both", start=start), dict(lora.info)
    if kind == "textual-inversion":
        if start is not None or add_options:
            raise ValueError("a textual inversion is a token in the prompt: it takes no start, rank or trained_on")
        return adapted.add(adapter, kind=kind), {}
    return adapted.add(adapter, scale=0.0, on="both", start=start, kind=kind, **add_options), {}


def evaluate_control(
    pipe: Any,
    adapter: str | Path | Any,
    scales: Sequence[float],
    prompts: Sequence[str],
    seeds: Sequence[int],
    scorer: Scorer | Callable | str,
    concept: str | None = None,
    models: Sequence[str] = ("base", "distilled", "hybrid"),
    start: float | None = None,
    call_kwargs: dict[str, Any] | None = None,
    strict: bool = True,
    progress: bool = True,
    kind: str = "auto",
    add_options: dict[str, Any] | None = None,
) -> ControlResult:
    """Generate every (model, scale, prompt, seed) image with the adapter on both networks, and score it.

    Scale 0 is always run (it is the reference); `concept` defaults to the concept a divdistill slider records
    (and to the scorer's label for a scorer that reads no text). `kind` is `AdaptedPipeline.add`'s ("auto":
    detected); `add_options` go to `add` for deltas and Custom Diffusion (`trained_on`, `as_lora`, `rank`,
    `energy`). A textual inversion takes scales 0 and 1 only (see the module doc). `call_kwargs` go to every
    pipeline call (steps, guidance, size; `mode` is set per model).
    """
    from tqdm.auto import tqdm

    from divdistill.adapter_spec import check_adapter_scale
    from divdistill.control.kinds import check_kind, detect_kind

    scorer = get_scorer(scorer)
    unknown = [m for m in models if m not in MODEL_MODES]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {', '.join(MODEL_MODES)}.")
    scales = sorted({check_adapter_scale(s, "scales") for s in scales} | {0.0})  # before anything runs
    kind = check_kind(kind)
    kind = detect_kind(adapter) if kind == "auto" else kind
    if kind == "textual-inversion" and set(scales) != {0.0, 1.0}:
        raise ValueError(f"a textual inversion has no scale: give scales 0 and 1 (the prompts without and with its "
                         f"token), not {', '.join(f'{s:g}' for s in scales)}")  # fmt: skip
    if not concept and not scorer.needs_text:
        concept = scorer.label
    adapted = pipe if isinstance(pipe, AdaptedPipeline) else AdaptedPipeline(pipe, strict=strict)
    applied, info = _applied_adapter(adapted, adapter, kind, start, dict(add_options or {}))
    try:
        concept = concept or info.get("concept")
        if not concept:
            raise ValueError("give the concept text the score is measured against (this adapter records none).")
        token = applied.tokens[0] if kind == "textual-inversion" else None
        missing = [p for p in prompts if token is not None and without_token(p, token) == " ".join(p.split())]
        if missing:
            raise ValueError(f"the prompts must name the embedding's token {token} (scale 0 runs them without it); "
                             f"{missing[0]!r} does not")  # fmt: skip
        result = ControlResult(adapter=applied.source, concept=concept, scorer=scorer.label,
                               relative=scorer.relative, models=list(models), scales=scales, prompts=list(prompts),
                               seeds=list(seeds), kind=kind)  # fmt: skip
        result.settings = {
            "adapter": applied.describe(),
            "kind": kind,
            "add_options": dict(add_options or {}),
            "call_kwargs": {k: v for k, v in (call_kwargs or {}).items() if k != "generator"},
            "start": start,
        }
        device = adapted.device
        with tqdm(total=len(scales) * len(models) * len(prompts), desc="control eval", disable=not progress) as bar:
            for scale in scales:
                if token is None:
                    adapted.set_scale(applied.name, scale)
                for model in models:
                    for index, prompt in enumerate(prompts):
                        text = without_token(prompt, token) if token is not None and scale == 0 else prompt
                        generators = [torch.Generator(device).manual_seed(int(s)) for s in seeds]
                        output = adapted(
                            [text] * len(seeds),
                            generator=generators,
                            output_type="pt",
                            **{**(call_kwargs or {}), "mode": MODEL_MODES[model]},
                        )
                        images = output.images.float().clamp(0, 1).cpu()
                        scores = scorer(images, [concept] * len(seeds))
                        for seed, image, score in zip(seeds, images, scores.tolist()):
                            result.images[(model, scale, index, int(seed))] = image
                            record = {"model": model, "scale": scale, "prompt_index": index, "prompt": prompt}
                            result.records.append({**record, "seed": int(seed), "score": float(score)})
                        bar.update()
    finally:
        adapted.remove(applied.name)
    return result


# ----------------------------------------------------------------------------------------------- reports
def _fmt(value: float, digits: int = 2) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _scale_name(scale: float) -> str:
    return f"{scale:+g}" if scale else "0"


def render_markdown(result: ControlResult) -> str:
    from divdistill.evaluation.report import markdown_table

    change = result.table("change")
    score = result.table("score")
    header = ["model", *[f"scale {_scale_name(s)}" for s in result.scales]]
    lines = [
        f"# Control transfer: {Path(result.adapter).name}",
        "",
        f'Kind: {result.kind}; concept: "{result.concept}"; scorer: {result.scorer}; {len(result.prompts)} prompt(s) '
        f"x {len(result.seeds)} seed(s) per model and scale. The adapter is on both networks; scale 0 is the "
        "unedited image (a textual inversion's: the prompt without its token), every model starts from the same "
        "noise for a seed.",
        "",
        f"## Score {result.change_label} from scale 0 (mean over prompts and seeds)",
        "",
        markdown_table(header, [[m, *[_fmt(change[m][s]) for s in result.scales]] for m in result.models]),
        "",
        "## Mean score",
        "",
        markdown_table(header, [[m, *[_fmt(score[m][s], 3) for s in result.scales]] for m in result.models]),
    ]
    if "base" in result.models and len(result.models) > 1:
        rows = []
        for model in result.models:
            if model == "base":
                continue
            ratios = []
            for s in result.scales:
                b, v = change["base"][s], change[model][s]
                ratios.append(_fmt(v / b) if s and math.isfinite(b) and math.isfinite(v) and b else "-")
            rows.append([model, *ratios])
        lines += ["", f"## Transfer: {result.change_label} relative to the base's", "",
                  markdown_table(header, rows)]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_control_report(result: ControlResult, out: str | Path, save_images: bool = True) -> dict[str, Path]:
    from divdistill.images import atomic_write, contact_sheet, save_image_atomic, to_pil, write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    files: dict[str, Path] = {}

    files["csv"] = out / "control.csv"
    with atomic_write(files["csv"], "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=["model", "scale", "score", "score_std", "change",
                                                    "change_std", "n"], lineterminator="\n")  # fmt: skip
        writer.writeheader()
        writer.writerows(summary)
    files["markdown"] = out / "control.md"
    with atomic_write(files["markdown"], "w") as handle:
        handle.write(render_markdown(result))

    pil = {key: to_pil(image) for key, image in result.images.items()}
    image_files: dict[tuple, str] = {}
    if save_images:
        for (model, scale, index, seed), image in pil.items():
            name = f"images/{model}/scale{_scale_name(scale)}/p{index:03d}_seed{seed}.png"
            save_image_atomic(image, out / name)
            image_files[(model, scale, index, seed)] = name
    grids = []
    for index in range(len(result.prompts)):
        for seed in result.seeds:
            cells = [(m, s) for m in result.models for s in result.scales if (m, s, index, seed) in pil]
            if not cells:
                continue
            sheet = contact_sheet([pil[(m, s, index, seed)] for m, s in cells], columns=len(result.scales),
                                  labels=[f"{m} {_scale_name(s)}" for m, s in cells])  # fmt: skip
            path = out / "grids" / f"p{index:03d}_seed{seed}.png"
            save_image_atomic(sheet, path)
            grids.append(path)
    if grids:
        files["grid"] = out / "grid.png"
        save_image_atomic(_open(grids[0]), files["grid"])

    records = [{**r, "file": image_files.get((r["model"], r["scale"], r["prompt_index"], r["seed"]))}
               for r in result.records]  # fmt: skip
    files["json"] = out / "control.json"
    write_json_atomic(
        {
            "adapter": result.adapter,
            "kind": result.kind,
            "concept": result.concept,
            "scorer": result.scorer,
            "metric": f"score {result.change_label} from scale 0",
            "models": result.models,
            "scales": result.scales,
            "prompts": result.prompts,
            "seeds": result.seeds,
            "settings": result.settings,
            "summary": summary,
            "records": records,
            "grids": [p.relative_to(out).as_posix() for p in grids],
        },
        files["json"],
    )
    return files


def _open(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")
