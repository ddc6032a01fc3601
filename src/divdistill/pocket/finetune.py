"""A DreamBooth-style full fine-tune of the pocket base: "size", its UNet taught to draw large shapes unasked.

The instance set is `images` world images whose shape is large (size > `min_size` px, the grammar's "large"),
drawn from the world's prior and kept by size (so shape, colour, position and background keep the world's
distribution). Each step captions them afresh from their attributes with the grammar, but never names the size:
"a red circle" comes to mean a large red circle, which is what a DreamBooth concept does to its class prompt.
Only the UNet trains (the text encoder is the pair's shared one, so a UNet delta is the whole fine-tune); the
objective, schedule, caption dropout and clipping are the base's own (`train_base.BaseTrainer.diffusion_step`):
v-prediction at uniform timesteps on the VAE's posterior means.

Checkpoints and resume are the pocket trainers' (`pocket.training`): every random draw of step i is seeded by
(seed, "finetune", i), so a resumed run ends bitwise equal to an uninterrupted one.

    unet = finetune_base("runs/size", FinetuneConfig(steps=300))     # UNet2DConditionModel, the fine-tuned base
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from divdistill.pocket.attributes import LARGE_ABOVE, SIZE_WORDS
from divdistill.pocket.training import Phase, StepRandom, run_phase, training_device, warmup_cosine
from divdistill.pocket.world import caption_for, sample_world


@dataclass(frozen=True)
class FinetuneConfig:
    """The size fine-tune's recipe (defaults: benchmarks/pocket_transfer.py's; 300 steps, 1.5-3 min on one core)."""

    seed: int = 0
    steps: int = 300
    batch: int = 32
    lr: float = 2e-4
    warmup: int = 20
    images: int = 256  # instance images (DreamBooth trains on a handful; the pocket's are cheap)
    min_size: float = LARGE_ABOVE
    caption_dropout: float = 0.1
    grad_clip: float = 1.0
    checkpoint_every: int = 100

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def instance_set(config: FinetuneConfig, resolution: int = 32):
    """`config.images` world images with size > `config.min_size` (deterministic by seed), as a WorldBatch."""
    batch = sample_world(config.images * 6, StepRandom(config.seed, "finetune-instances").world_seed(),
                         resolution=resolution)  # fmt: skip
    keep = torch.nonzero(batch.attributes.size > config.min_size).flatten()[: config.images]
    if len(keep) < config.images:
        raise ValueError(f"min_size {config.min_size} leaves {len(keep)} of the {config.images} images asked for")
    return batch.images[keep], batch.attributes[keep]


def unnamed_size(caption: str) -> str:
    """The caption without its size word ("a large red circle" -> "a red circle")."""
    return " ".join(word for word in caption.split() if word not in SIZE_WORDS)


class FinetuneTrainer:
    """Fine-tune a pocket base folder's UNet on the instance set (see the module doc); `run` returns the UNet."""

    def __init__(self, out: str | Path, base: str | Path | None = None, config: FinetuneConfig | None = None,
                 device: str | None = "cpu"):  # fmt: skip
        from divdistill.pocket.models import load_pipeline
        from divdistill.pocket.weights import weights_dir

        self.out = Path(out)
        self.config = config or FinetuneConfig()
        self.device = training_device(device)
        self.out.mkdir(parents=True, exist_ok=True)
        pipe = load_pipeline(base or weights_dir("base"), self.device)
        self.unet = pipe.unet.train().requires_grad_(True)
        self.text_encoder, self.tokenizer = pipe.text_encoder.eval(), pipe.tokenizer
        self.alphas_cumprod = pipe.scheduler.alphas_cumprod.to(self.device)
        self.timesteps = int(pipe.scheduler.config.num_train_timesteps)
        images, self.attributes = instance_set(self.config, pipe.unet.config.sample_size * pipe.vae_scale_factor)
        with torch.no_grad():
            self.latents = pipe.vae.encode(images.to(self.device) * 2 - 1).latent_dist.mean
            self.latents = self.latents * pipe.vae.config.scaling_factor
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=self.config.lr, weight_decay=0.0)
        self._hidden: dict[str, torch.Tensor] = {}
        (self.out / "finetune_config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")

    @torch.no_grad()
    def _encode(self, captions: list[str]) -> torch.Tensor:
        from divdistill.pocket.models import encode_captions

        missing = sorted(set(captions) - set(self._hidden))
        if missing:
            self._hidden.update(zip(missing, encode_captions(self.text_encoder, self.tokenizer, missing, self.device)))
        return torch.stack([self._hidden[c] for c in captions])

    def step(self, i: int) -> dict[str, float]:
        c = self.config
        rnd = StepRandom(c.seed, "finetune", i)
        index = rnd.randint(0, len(self.latents), (c.batch,), "cpu")
        z0 = self.latents[index.to(self.device)]
        captions = [unnamed_size(text) for text in caption_for(self.attributes[index], rnd.numpy)]
        drop = (rnd.rand((c.batch,), "cpu") < c.caption_dropout).tolist()
        hidden = self._encode(["" if d else text for d, text in zip(drop, captions)])
        loss = self.backward(i, z0, hidden, rnd)
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), c.grad_clip)
        self.optimizer.step()
        return {"loss": loss.item()}

    def backward(self, i: int, z0: torch.Tensor, hidden: torch.Tensor, rnd: StepRandom) -> torch.Tensor:
        """Step i's v-prediction loss on clean latents `z0` (the pocket's objective) at its scheduled learning rate,
        backpropagated; the caller masks or clips the gradients and steps the optimizer."""
        c = self.config
        t = rnd.randint(0, self.timesteps, (z0.shape[0],), self.device)
        noise = rnd.randn(z0.shape, self.device)
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * z0
        loss = F.mse_loss(self.unet(x_t, t, encoder_hidden_states=hidden).sample, target)
        for group in self.optimizer.param_groups:
            group["lr"] = c.lr * warmup_cosine(i, c.steps, c.warmup)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def phase(self) -> Phase:
        return Phase(
            name="finetune",
            steps=self.config.steps,
            step=self.step,
            state=lambda: {"unet": self.unet.state_dict(), "optimizer": self.optimizer.state_dict()},
            load=self._load,
            columns=["loss"],
            every=self.config.checkpoint_every,
        )

    def _load(self, state: dict[str, Any]) -> None:
        self.unet.load_state_dict(state["unet"])
        self.optimizer.load_state_dict(state["optimizer"])

    def run(self, resume: bool = False, stop_after: int | None = None, quiet: bool = True) -> torch.nn.Module | None:
        """Train (or resume); the fine-tuned UNet (eval, float32), or None when `stop_after` interrupted it."""
        done = run_phase(self.phase(), self.out, resume, self.device, stop_after, quiet)
        if done < self.config.steps:
            return None
        return self.unet.eval().requires_grad_(False)


def finetune_base(out: str | Path, config: FinetuneConfig | None = None, base: str | Path | None = None,
                  device: str | None = "cpu", resume: bool = True, quiet: bool = True) -> torch.nn.Module:  # fmt: skip
    """The size fine-tune of `base` (default: the shipped pocket base), trained into `out` (resumed if there); the
    UNet is also written as a diffusers folder, `out/unet`, which `control eval --kind delta --adapter` takes."""
    unet = FinetuneTrainer(out, base, config, device).run(resume=resume, quiet=quiet)
    assert unet is not None
    if not (Path(out) / "unet" / "config.json").is_file():
        unet.save_pretrained(str(Path(out) / "unet"))
    return unet


__all__ = ["FinetuneConfig", "FinetuneTrainer", "finetune_base", "instance_set", "unnamed_size"]
