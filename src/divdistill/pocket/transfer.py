"""Does a fine-tune of the base transfer to the distilled model? The pocket pair's "size" DreamBooth delta.

    result = size_transfer("runs/transfer", TransferConfig())       # fine-tune (cached), apply, measure
    print(result.markdown())                                        # size change per model, the ratio

The experiment (issue 19): fine-tune the pocket base on large shapes with size-free captions
(`pocket.finetune`), take delta = finetuned - base per UNet parameter, and add it to the DISTILLED UNet
(scale 1; also its truncated-SVD compressions at a few ranks). The measurement is the evaluator's size read-out
(pixels at 32 px, `load_evaluator().read(images).size`) over a fixed prompt and seed set, paired: each image
against the same prompt and seed without the delta. The base's own effect is the fine-tuned base against the
base, both sampled as the base is (its own 50-step DDIM, CFG 4); the transfer ratio is the distilled model's
change over that. `passes` is the check the tests hold it to: the distilled size read-out rises by at least
`min_change` px, in the base's direction (a zero delta or a sign-flipped one does not pass).

The delta goes on through the control API like any adapter: `AdaptedPipeline.add(finetuned_unet, kind="delta",
trained_on="base")` (an exact weight patch: at scale 1 the base's UNet is the fine-tuned one bit for bit, and
removing it restores both UNets), and `as_lora=True, rank=r` for the SVD-compressed LoRA of each rank. A broken
delta is a condition like any other (`scale=0`: none, `scale=-1`: sign flipped), which is how the tests show the
check can fail.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from divdistill.pocket.finetune import FinetuneConfig, finetune_base

#: Prompts that leave size free (so the fine-tune's "large by default" shows), every shape and colour.
PROMPTS = (
    "a red circle",
    "a green triangle",
    "a blue square",
    "a yellow circle",
    "a red square on the left",
    "a green circle on a dark background",
    "a blue triangle at the top",
    "a yellow square on a light background",
)
MODES = ("base", "distilled", "hybrid")


@dataclass(frozen=True)
class TransferConfig:
    """What the experiment runs: the fine-tune, the prompt and seed set, the SVD ranks, the pass bar."""

    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    prompts: tuple[str, ...] = PROMPTS
    seeds: tuple[int, ...] = tuple(range(16))
    ranks: tuple[int, ...] = (1, 4, 16)
    modes: tuple[str, ...] = MODES
    base_conditions: tuple[str, ...] = ("delta",)  # the base is the reference: its own fine-tune, not the ranks
    base_num_inference_steps: int = 50
    min_change: float = 0.25  # px at 32 px: a quarter of a pixel of mean size, paired over the set

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["finetune"] = self.finetune.to_dict()
        return data

    def conditions(self) -> dict[str, dict[str, Any]]:
        """{name: `AdaptedPipeline.add` keywords}: the full delta, and its SVD LoRA at each rank."""
        return {"delta": {"scale": 1.0}, **{f"rank-{r}": {"as_lora": True, "rank": r} for r in self.ranks}}


# ------------------------------------------------------------------------------------------------ measuring
@dataclass
class TransferResult:
    """Per mode and condition ("delta", "rank-r", "none"), every image's size read-out, and the summary."""

    config: dict[str, Any]
    sizes: dict[str, dict[str, list[float]]]  # mode -> condition -> sizes (prompt-major, seed-minor)
    delta_norm: float = math.nan
    seconds: dict[str, float] = field(default_factory=dict)
    title: str = "Size fine-tune of the pocket base, transferred to the distilled model"
    description: str | None = None  # what the rows apply (default: the fine-tune's delta)

    @property
    def reference(self) -> str:
        """The condition that is the base's own effect (the first of `base_conditions`: "delta" for a fine-tune)."""
        return str(self.config.get("base_conditions", ["delta"])[0])

    def change(self, mode: str, condition: str | None = None) -> float:
        """Mean paired size change (px) of `mode` under `condition` (default: the reference) from the same mode
        without the adapter."""
        with_delta, without = self.sizes[mode][condition or self.reference], self.sizes[mode]["none"]
        return sum(a - b for a, b in zip(with_delta, without)) / len(without)

    def ratio(self, mode: str = "distilled", condition: str | None = None) -> float:
        """`mode`'s change under `condition` over the base's own change (the reference on the base, e.g. the full
        delta; nan without one)."""
        base = self.change("base") if self.reference in self.sizes.get("base", {}) else 0.0
        return self.change(mode, condition) / base if base else math.nan

    def passes(self, condition: str | None = None, min_change: float | None = None) -> bool:
        """The base's own change (the fine-tune on the base) and the distilled model's under `condition` both
        raise the size read-out by >= min_change px: the fine-tune did what it was trained for, and the distilled
        model followed."""
        bar = self.config["min_change"] if min_change is None else min_change
        return self.change("base") >= bar and self.change("distilled", condition) >= bar

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for mode, conditions in self.sizes.items():
            for condition in conditions:
                if condition == "none":
                    continue
                rows.append({"mode": mode, "condition": condition, "size": _mean(conditions[condition]),
                             "size_without": _mean(conditions["none"]), "change": self.change(mode, condition),
                             "ratio_to_base": self.ratio(mode, condition)})  # fmt: skip
        return rows

    def markdown(self) -> str:
        from divdistill.evaluation.report import markdown_table

        c = self.config
        rows = [[r["mode"], r["condition"], f"{r['size_without']:.2f}", f"{r['size']:.2f}", f"{r['change']:+.2f}",
                 f"{r['ratio_to_base']:.2f}"] for r in self.table()]  # fmt: skip
        description = self.description or (
            f"without the delta; fine-tune {c['finetune']['steps']} steps x batch {c['finetune']['batch']}; "
            f"|delta| = {self.delta_norm:.3f}")
        return "\n".join([
            f"# {self.title}",
            "",
            f"{len(c['prompts'])} prompts x {len(c['seeds'])} seeds per row, paired with the same prompt and seed "
            f"{description}. Size: the evaluator's read-out in px at 32 px.",
            "",
            markdown_table(["mode", "applied", "size before", "size after", "change (px)", "ratio to base"], rows),
            "",
            f"Passes (distilled and base change >= {c['min_change']} px): {self.passes()}",
        ]) + "\n"  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "description": self.description, "config": self.config, "summary": self.table(),
                "passes": self.passes(), "delta_norm": self.delta_norm, "seconds": self.seconds,
                "sizes": self.sizes}  # fmt: skip


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def sample(pipe: Any, mode: str, prompts: Sequence[str], seeds: Sequence[int], **kwargs: Any) -> torch.Tensor:
    """Images [P*S, 3, 32, 32] of every prompt (major) and seed (minor), each seed its own generator."""
    images = []
    for prompt in prompts:
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        out = pipe([prompt] * len(seeds), generator=generators, output_type="pt", mode=mode, **kwargs)
        images.append(out.images.float().clamp(0, 1).cpu())
    return torch.cat(images)


def measure(pipe: Any, finetuned: Any, config: TransferConfig,
            conditions: dict[str, dict[str, Any]] | None = None, evaluator: Any = None,
            keep_images: dict[str, torch.Tensor] | None = None) -> TransferResult:  # fmt: skip
    """Size read-outs per mode without the fine-tune's delta and under each condition ({name: `add` keywords},
    default `config.conditions()`), the delta on both UNets; the base mode runs `config.base_conditions` only.
    A condition's keywords may name another `source` and `kind` (a Custom Diffusion folder, an embedding) and its
    own `prompts` (a textual inversion's, with its token; "none" runs `config.prompts`)."""
    import time

    from divdistill.control import AdaptedPipeline
    from divdistill.pocket.evaluator import load_evaluator

    evaluator = evaluator or load_evaluator()
    conditions = config.conditions() if conditions is None else conditions
    kwargs = {"base_num_inference_steps": config.base_num_inference_steps}
    sizes: dict[str, dict[str, list[float]]] = {mode: {} for mode in config.modes}
    seconds: dict[str, float] = {}
    adapted = AdaptedPipeline(pipe)
    for condition, options in {"none": None, **conditions}.items():
        modes = [m for m in config.modes if m != "base" or condition in ("none", *config.base_conditions)]
        options = dict(options or {})
        prompts = options.pop("prompts", config.prompts)
        if condition != "none":
            adapted.add(**{"source": finetuned, "kind": "delta", "trained_on": "base", "on": "both", "name": "size",
                           **options})  # fmt: skip
        try:
            for mode in modes:
                began = time.perf_counter()
                images = sample(adapted, mode, prompts, config.seeds, **kwargs)
                sizes[mode][condition] = evaluator.read(images).size.tolist()
                seconds[f"{mode}/{condition}"] = time.perf_counter() - began
                if keep_images is not None:
                    keep_images[f"{mode}/{condition}"] = images
        finally:
            adapted.clear()
    return TransferResult(config=config.to_dict(), sizes=sizes, seconds=seconds)


# ------------------------------------------------------------------------------------------------ experiment
def finetune_folder(out: Path, config: FinetuneConfig) -> Path:
    """The fine-tune's cache folder in `out`, named by its recipe (another recipe trains afresh)."""
    key = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return out / f"finetune-{key}"


def size_transfer(
    out: str | Path,
    config: TransferConfig | None = None,
    pipe: Any = None,
    device: str = "cpu",
    conditions: dict[str, dict[str, Any]] | None = None,
    save: bool = True,
) -> TransferResult:
    """Fine-tune (cached in `out`), take the delta, measure base / distilled / hybrid with it and its SVD ranks
    (or `conditions`, see `measure`); write transfer.json, transfer.md and grid.png (rows: each mode without and
    with the delta; the first prompt, every seed) when `save`."""
    import time

    from divdistill.pocket import pocket_pipeline

    config = config or TransferConfig()
    out = Path(out)
    pipe = pipe or pocket_pipeline(device=device)
    pipe.set_progress_bar_config(disable=True)
    began = time.perf_counter()
    finetuned = finetune_base(finetune_folder(out, config.finetune), config.finetune, device=device)
    trained = time.perf_counter() - began
    from divdistill.control.delta import delta_from_finetune

    images: dict[str, torch.Tensor] = {}
    result = measure(pipe, finetuned, config, conditions, keep_images=images if save else None)
    result.delta_norm = delta_from_finetune(finetuned, pipe.base.unet).norm()
    result.seconds["finetune"] = trained
    if save:
        write_report(result, images, out, len(config.seeds))
    return result


def write_report(result: TransferResult, images: dict[str, torch.Tensor], out: Path, columns: int) -> None:
    from divdistill.images import atomic_write, contact_sheet, save_image_atomic, to_pil, write_json_atomic

    write_json_atomic(result.to_json(), out / "transfer.json")
    with atomic_write(out / "transfer.md", "w") as handle:
        handle.write(result.markdown())
    order = [f"{mode}/{condition}" for mode in MODES for condition in ("none", result.reference)]
    rows = [key for key in order if key in images]
    cells = [to_pil(image) for key in rows for image in images[key][:columns]]  # the first prompt, every seed
    labels = [key if i == 0 else "" for key in rows for i in range(columns)]
    save_image_atomic(contact_sheet(cells, columns=columns, labels=labels), out / "grid.png")


__all__ = ["PROMPTS", "TransferConfig", "TransferResult", "finetune_folder", "measure", "sample", "size_transfer"]
