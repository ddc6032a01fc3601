"""Issue 19's transfer ratios for the other adapter kinds: the pocket "size" concept as Custom Diffusion and as a
textual inversion, trained on the base, applied to base / distilled / hybrid.

    result = concept_transfer("runs/cd", "custom-diffusion")           # train (cached), apply, measure
    print(result.markdown())                                            # size change per model, the ratio

The measurement is `pocket.transfer`'s (the evaluator's size read-out over a fixed prompt and seed set, paired
with the same prompt and seed without the adapter; the ratio is each model's change over the base's own):

- "custom-diffusion": `AdaptedPipeline.add(folder, kind="custom-diffusion", trained_on="base")`, the concept's
  attn2 K/V as a weight patch on both UNets; broken controls are scales 0 (none) and -1 (sign flipped);
- "textual-inversion": `add(folder, kind="textual-inversion")` loads "<big>" into the pair's shared text encoder;
  with it the prompts read "a <big> red circle", without it "a red circle" (a token has no scale, so the broken
  controls are embeddings: "untrained", the initializer's row it started from, and "flipped", the learned step
  reversed, initial - (learned - initial)).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from divdistill.pocket.concepts import ConceptConfig, train_custom_diffusion, train_textual_inversion
from divdistill.pocket.transfer import MODES, PROMPTS, TransferConfig, TransferResult, measure, write_report

KINDS = ("custom-diffusion", "textual-inversion")
#: Recipes the benchmark runs (300 steps x batch 32, as the fine-tune's): learning rates chosen for each kind's
#: scale of weights (K/V matrices, one embedding row).
RECIPES = {"custom-diffusion": ConceptConfig(lr=1e-3), "textual-inversion": ConceptConfig(lr=5e-3)}
#: The broken controls of each kind (see the module doc), none of which should pass.
CONTROLS = {"custom-diffusion": ("zero", "flipped"), "textual-inversion": ("untrained", "flipped")}
TITLES = {
    "custom-diffusion": "Custom Diffusion (attn2 K/V) size concept of the pocket base, moved to the distilled model",
    "textual-inversion": 'Textual inversion "<big>" learned on the pocket base, used by the distilled model',
}

DESCRIPTIONS = {
    "custom-diffusion": 'without the concept (rows: `add(kind="custom-diffusion")` at scale 1, and the broken '
    "controls zero = scale 0, flipped = scale -1); trained {steps} steps x batch {batch} at lr {lr:g}, attn2 "
    "to_k/to_v only, captions without a size word, no modifier token; |K/V change| = {norm:.3f}",
    "textual-inversion": 'without the token ("a red circle" against "a {token} red circle"; broken controls: '
    "untrained = the initializer's embedding, flipped = initial - (learned - initial)); trained {steps} steps x "
    "batch {batch} at lr {lr:g}, one embedding row only; |learned - initial| = {norm:.3f}",
}


@dataclass(frozen=True)
class ConceptTransferConfig:
    """The kind, its recipe and the measurement's prompts, seeds, modes and pass bar (`TransferConfig`'s)."""

    kind: str = "custom-diffusion"
    concept: ConceptConfig | None = None  # default: RECIPES[kind]
    prompts: tuple[str, ...] = PROMPTS
    seeds: tuple[int, ...] = tuple(range(16))
    modes: tuple[str, ...] = MODES
    base_num_inference_steps: int = 50
    min_change: float = 0.25
    extra: tuple[str, ...] = field(default=())  # broken controls to run too: "zero", "flipped" / "untrained"

    def recipe(self) -> ConceptConfig:
        return self.concept or RECIPES[self.kind]

    def transfer_config(self) -> TransferConfig:
        return TransferConfig(prompts=self.prompts, seeds=self.seeds, ranks=(), modes=self.modes,
                              base_conditions=(self.kind,), base_num_inference_steps=self.base_num_inference_steps,
                              min_change=self.min_change)  # fmt: skip


def with_token(prompt: str, token: str) -> str:
    """ "a red circle" -> "a <big> red circle" (the token after the article, where the grammar puts a size)."""
    first, _, rest = prompt.partition(" ")
    return f"{first} {token} {rest}".strip()


def concept_folder(out: Path, kind: str, recipe: ConceptConfig) -> Path:
    """The training cache folder of `kind` in `out`, named by its recipe (another recipe trains afresh)."""
    key = hashlib.sha256(json.dumps({"kind": kind, **recipe.to_dict()}, sort_keys=True).encode()).hexdigest()[:10]
    return out / f"{kind}-{key}"


def _conditions(config: ConceptTransferConfig, out: Path, pipe: Any) -> tuple[dict[str, dict[str, Any]], float]:
    """({condition: `add` keywords}, |the learned change|), training the concept if it is not cached."""
    from divdistill.control.custom_diffusion import read_custom_diffusion
    from divdistill.control.embeddings import read_embedding

    recipe, kind = config.recipe(), config.kind
    folder = concept_folder(out, kind, recipe)
    if kind == "custom-diffusion":
        concept = train_custom_diffusion(folder, recipe, device=str(pipe.device))
        base = pipe.base.unet.state_dict()
        weights = read_custom_diffusion(concept).weights
        norm = float(torch.stack([(w - base[n]).norm() for n, w in weights.items()]).norm())
        options = {"source": str(concept), "kind": kind, "trained_on": "base"}
        broken = {"zero": {**options, "scale": 0.0}, "flipped": {**options, "scale": -1.0}}
        return {kind: options, **{k: v for k, v in broken.items() if k in config.extra}}, norm
    if kind != "textual-inversion":
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    concept, initial = train_textual_inversion(folder, recipe, device=str(pipe.device))
    learned = read_embedding(concept).vectors[0][0]
    prompts = tuple(with_token(p, recipe.token) for p in config.prompts)
    options = {"kind": kind, "prompts": prompts}
    broken = {"untrained": {**options, "source": {recipe.token: initial}},
              "flipped": {**options, "source": {recipe.token: 2 * initial - learned}}}  # fmt: skip
    conditions = {kind: {**options, "source": str(concept)}, **{k: v for k, v in broken.items() if k in config.extra}}
    return conditions, float((learned - initial).norm())


def concept_transfer(out: str | Path, kind: str | ConceptTransferConfig = "custom-diffusion", pipe: Any = None,
                     device: str = "cpu", save: bool = True) -> TransferResult:  # fmt: skip
    """Train `kind`'s size concept on the base (cached in `out`), apply it to every mode, measure the size change
    (see the module doc); writes out/transfer.json, transfer.md and grid.png when `save`."""
    from divdistill.pocket import pocket_pipeline

    config = kind if isinstance(kind, ConceptTransferConfig) else ConceptTransferConfig(kind=kind)
    out = Path(out)
    pipe = pipe or pocket_pipeline(device=device)
    pipe.set_progress_bar_config(disable=True)
    began = time.perf_counter()
    conditions, norm = _conditions(config, out, pipe)
    trained = time.perf_counter() - began
    images: dict[str, torch.Tensor] = {}
    result = measure(pipe, None, config.transfer_config(), conditions, keep_images=images if save else None)
    result.config["concept"] = {"kind": config.kind, **config.recipe().to_dict()}
    result.config["finetune"] = {"steps": config.recipe().steps, "batch": config.recipe().batch}
    result.delta_norm, result.title = norm, TITLES[config.kind]
    recipe = config.recipe()
    result.description = DESCRIPTIONS[config.kind].format(steps=recipe.steps, batch=recipe.batch, lr=recipe.lr,
                                                          norm=norm, token=recipe.token)  # fmt: skip
    result.seconds["train"] = trained
    if save:
        write_report(result, images, out, len(config.seeds))
    return result


def reduced(config: ConceptTransferConfig, **changes: Any) -> ConceptTransferConfig:
    """`config` with its recipe's fields changed (steps, batch, lr, ...)."""
    return replace(config, concept=replace(config.recipe(), **changes))


__all__ = ["KINDS", "RECIPES", "ConceptTransferConfig", "concept_folder", "concept_transfer", "reduced",
           "with_token"]  # fmt: skip
