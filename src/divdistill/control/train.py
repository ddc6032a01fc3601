"""Train a text Concept Slider (Gandikota et al., 2023) on the base or the distilled model of a pair.

Objective, per iteration (the Concept Sliders / LECO recipe; `divdistill.control.objective` holds the maths):
  1. k ~ U{1, ..., denoise_steps - 1}; x_T ~ N(0, I); with the LoRA on, run k DDIM steps (on the model's own
     training noise schedule, `denoise_steps` steps, `denoise_guidance` classifier-free guidance, target prompt)
     to get x_t, t = the k-th DDIM timestep.
  2. With the LoRA off: eps(x_t, c_neutral), eps(x_t, c_positive), eps(x_t, c_negative) (neutral defaults to
     the target prompt).
  3. With the LoRA on, minimise || eps_lora(x_t, c_target) - [eps(x_t, c_neutral) + s * eta * (eps(x_t, c_positive)
     - eps(x_t, c_negative))] ||^2, s = +1 ("enhance") or -1 ("erase").
That is the epsilon objective of the VP families (SD, SDXL, PixArt; PixArt's learned-sigma channels are dropped).
Flow families (SD3, FLUX) train the velocity objective of the FLUX slider reference instead: x_t after k ~ U{0,
..., denoise_steps - 1} steps of the model's own flow sampler with the LoRA off, velocities in place of eps, and
the target rescaled to the norm of v(x_t, c_positive). The family of the pair decides.
The LoRA is a PEFT LoRA (rank 4, alpha 1, lr 2e-4 by default; AdamW) on the layers the family's
`SliderTraining` names: on UNets every Linear/Conv2d of the Transformer2DModel blocks except cross-attention
("noxattn") and of ResnetBlock2D / Downsample2D / Upsample2D; on PixArt the DiT blocks' self-attention and
feed-forward linears; on SD3 and FLUX every attention linear of the transformer blocks (joint attention).

Every random draw comes from one generator seeded with `seed`; checkpoints hold the LoRA weights, the optimizer
state and the generator (and torch's) RNG states, so a run resumed from a checkpoint ends with bit-identical
weights to an uninterrupted one. The result is a diffusers-format safetensors file (`unet.` or `transformer.`
keys: `load_lora_weights` loads it; PixArt's pipeline has no LoRA loader, its transformer takes the same file
with `peft`) that records the prompts, the model it was trained on and its family in its header.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from divdistill.control.formats import save_lora
from divdistill.control.slider import RESUMABLE, TRAIN_METHODS, SliderConfig, slider_modules
from divdistill.control.trainer import ADAPTER, CHECKPOINTS, RECORD, SliderTrainer, TrainState
from divdistill.images import atomic_write, write_json_atomic


# ----------------------------------------------------------------------------------------------- runs
def checkpoint_files(out: Path) -> list[Path]:
    return sorted((out / CHECKPOINTS).glob("step-*.pt"))


def _save_checkpoint(trainer: SliderTrainer, out: Path) -> Path:

    path = out / CHECKPOINTS / f"step-{trainer.state.step:07d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        torch.save(trainer.checkpoint(), handle)
    for old in checkpoint_files(out)[: -trainer.config.keep_checkpoints]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(str(path), map_location="cpu", weights_only=True)


def train_slider(
    pipe: Any,
    config: SliderConfig,
    out: str | Path,
    *,
    name: str = "slider",
    format: str = "diffusers",
    resume: bool = True,
    progress: bool = True,
    device: torch.device | str | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> Path:
    """Train (or resume training) a slider into OUT; returns OUT/<name>.safetensors.

    format: "diffusers" (PEFT keys, LoRA config in the header) or "kohya" (Concept Sliders' own key layout).

    OUT/checkpoints/step-NNNNNNN.pt every `checkpoint_every` steps (the last `keep_checkpoints` kept); rerunning
    with the same settings resumes from the newest (a larger `iterations` continues training). OUT/train.json
    holds the settings and the loss of every step. `callback(step, loss)` runs after every step.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if format not in ("diffusers", "kohya"):
        raise ValueError(f"format must be 'diffusers' or 'kohya', got {format!r}.")
    result = out / f"{name}.safetensors"
    with SliderTrainer(pipe, config, device=device) as trainer:
        saved = checkpoint_files(out) if resume else []
        if saved:
            trainer.restore(load_checkpoint(saved[-1]))
        started = time.perf_counter() - trainer.state.seconds
        with tqdm(total=config.iterations, initial=trainer.state.step, desc=f"slider ({config.on})",
                  disable=not progress) as bar:  # fmt: skip
            while trainer.state.step < config.iterations:
                loss = trainer.step()
                trainer.state.seconds = time.perf_counter() - started
                bar.update()
                bar.set_postfix(loss=f"{loss:.4g}")
                if trainer.state.step % config.checkpoint_every == 0 or trainer.state.step == config.iterations:
                    _save_checkpoint(trainer, out)
                if callback is not None:
                    callback(trainer.state.step, loss)
        layers = trainer.layers()
        save_lora(layers, result, format, info=trainer.info(), network=trainer.family.network_component)
        record = {
            "config": config.to_dict(),
            "file": result.name,
            "format": format,
            "info": trainer.info(),
            "layers": len(layers),
            "steps": trainer.state.step,
            "losses": trainer.state.losses,
            "seconds": trainer.state.seconds,
        }
        write_json_atomic(record, out / RECORD)
    return result


__all__ = [
    "ADAPTER",
    "CHECKPOINTS",
    "RECORD",
    "RESUMABLE",
    "TRAIN_METHODS",
    "SliderConfig",
    "SliderTrainer",
    "TrainState",
    "checkpoint_files",
    "load_checkpoint",
    "slider_modules",
    "train_slider",
]
