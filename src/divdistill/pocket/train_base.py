"""Train the pocket base model: an AutoencoderKL on world images, then a text-conditioned UNet (and its CLIP text
encoder) on the VAE's latents, with v-prediction on the derived schedule and caption dropout for guidance.

Phase "vae": MSE reconstruction plus a small KL term, on freshly rendered world batches (no perceptual or GAN
terms; an L1 loss, as Stable Diffusion's autoencoder uses, settled on shapeless blobs here: most pixels are
background, and L1's median-seeking gradient ignores the minority of shape pixels). Afterwards the latents are
standardised per channel by folding their mean and spread into the VAE's 1x1 quant convolutions
(`normalise_latents`), so scaling_factor is 1.
Phase "diffusion": a bank of world images is encoded once (posterior means: the KL term is weak, and sampling
the posterior would add latent noise the diffusion model cannot tell from its own); each step draws latents from
the bank, captions them afresh from their attributes with the grammar (so one image is seen with many captions),
drops captions to "" with probability `caption_dropout`, and regresses v at uniformly drawn timesteps. The
shipped weights are the EMA of the UNet and text encoder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from divdistill.pocket.models import (
    PocketConfig,
    base_scheduler,
    build_components,
    encode_captions,
    save_pipeline,
)
from divdistill.pocket.training import EMA, Phase, StepRandom, run_phase, training_device, warmup_cosine
from divdistill.pocket.world import Attributes, caption_for, sample_world


@dataclass
class BaseTrainConfig:
    seed: int = 0
    model: PocketConfig = field(default_factory=PocketConfig)
    vae_steps: int = 1200
    vae_batch: int = 64
    vae_lr: float = 2e-3
    kl_weight: float = 1e-5
    edge_weight: float = 10.0  # weight of the MSE of the images' finite differences (corners; see edge_mse)
    steps: int = 2500
    batch: int = 128
    lr: float = 1e-3
    warmup: int = 100
    caption_dropout: float = 0.1
    ema_decay: float = 0.998
    bank_size: int = 24576
    grad_clip: float = 1.0
    checkpoint_every: int = 250

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = self.model.to_dict()
        return data


def _images(batch, device) -> torch.Tensor:
    return (batch.images * 2 - 1).to(device)


def edge_mse(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MSE between the horizontal and vertical finite differences of two image batches.

    Plain MSE barely sees a shape's corners (a few pixels of a mostly-background image): the VAE learned to round
    small squares into discs. Differences are zero on flat background and large on edges, so this term weighs
    exactly the pixels that tell a square, a circle and a triangle apart.
    """
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return F.mse_loss(dx(recon), dx(x)) + F.mse_loss(dy(recon), dy(x))


def _posterior(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    moments = vae.quant_conv(vae.encoder(x)) if vae.quant_conv is not None else vae.encoder(x)
    mean, logvar = moments.chunk(2, dim=1)
    logvar = logvar.clamp(-30.0, 20.0)
    return mean, torch.exp(0.5 * logvar)


@torch.no_grad()
def normalise_latents(vae, centre: torch.Tensor, spread: torch.Tensor) -> None:
    """Reparameterise the VAE so its latents become (z - centre) / spread, with identical decoded images.

    The encoder's 1x1 `quant_conv` emits (mean, logvar): its mean rows are shifted and scaled, its logvar biases
    shifted by -2 log spread; the decoder's 1x1 `post_quant_conv` absorbs the inverse map (columns scaled by
    spread, bias plus W @ centre). Stable Diffusion pipelines only know a global `scaling_factor`, so the
    per-channel statistics live in the weights and `scaling_factor` is 1.
    """
    channels = centre.shape[0]
    q, p = vae.quant_conv, vae.post_quant_conv
    q.weight[:channels] /= spread.view(-1, 1, 1, 1)
    q.bias[:channels] = (q.bias[:channels] - centre) / spread
    q.bias[channels:] -= 2 * spread.log()
    p.bias += p.weight[:, :, 0, 0] @ centre
    p.weight *= spread.view(1, -1, 1, 1)
    vae.register_to_config(scaling_factor=1.0)


class BaseTrainer:
    """Both phases of base training on one output folder (see module docstring)."""

    def __init__(self, out: str | Path, config: BaseTrainConfig | None = None, device: str | None = "auto"):
        self.out = Path(out)
        self.config = config or BaseTrainConfig()
        self.device = training_device(device)
        self.out.mkdir(parents=True, exist_ok=True)
        c = self.config
        self.components = build_components(c.model, self.out / "tokenizer", seed=c.seed)
        self.vae = self.components.vae.to(self.device).train()
        self.unet = self.components.unet.to(self.device).train()
        self.text_encoder = self.components.text_encoder.to(self.device).train()
        self.tokenizer = self.components.tokenizer
        self.scheduler = base_scheduler(c.model)
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(self.device)
        self.vae_optimizer = torch.optim.AdamW(self.vae.parameters(), lr=c.vae_lr, weight_decay=0.0)
        params = [*self.unet.parameters(), *self.text_encoder.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=c.lr, weight_decay=0.0)
        self.ema_unet = EMA(self.unet, c.ema_decay)
        self.ema_text = EMA(self.text_encoder, c.ema_decay)
        self.bank: dict[str, Any] | None = None
        self._token_cache: dict[str, torch.Tensor] = {}
        (self.out / "train_config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")

    # -------------------------------------------------------------------------------------------- phase: vae
    def vae_step(self, i: int) -> dict[str, float]:
        c = self.config
        rnd = StepRandom(c.seed, "vae", i)
        x = _images(sample_world(c.vae_batch, rnd.world_seed(), resolution=c.model.resolution), self.device)
        mean, std = _posterior(self.vae, x)
        z = mean + std * rnd.randn(mean.shape, self.device)
        recon = self.vae.decode(z).sample
        mse = F.mse_loss(recon, x)
        edge = edge_mse(recon, x)
        kl = 0.5 * (mean.square() + std.square() - 1 - 2 * std.log()).mean()
        loss = mse + c.edge_weight * edge + c.kl_weight * kl
        for group in self.vae_optimizer.param_groups:
            group["lr"] = c.vae_lr * warmup_cosine(i, c.vae_steps, c.warmup)
        self.vae_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.vae.parameters(), c.grad_clip)
        self.vae_optimizer.step()
        return {"loss": loss.item(), "mse": mse.item(), "edge": edge.item(), "kl": kl.item()}

    def vae_phase(self) -> Phase:
        return Phase(
            name="vae",
            steps=self.config.vae_steps,
            step=self.vae_step,
            state=lambda: {"vae": self.vae.state_dict(), "optimizer": self.vae_optimizer.state_dict()},
            load=self._load_vae,
            columns=["loss", "mse", "edge", "kl"],
            every=self.config.checkpoint_every,
        )

    def _load_vae(self, state: dict[str, Any]) -> None:
        self.vae.load_state_dict(state["vae"])
        self.vae_optimizer.load_state_dict(state["optimizer"])

    # -------------------------------------------------------------------------------------------- latent bank
    @torch.no_grad()
    def build_bank(self) -> None:
        """Encode `bank_size` world images (deterministic by seed); set the VAE's scaling factor."""
        c = self.config
        self.vae.eval()
        means, attributes = [], []
        chunk = 1024
        for index, start in enumerate(range(0, c.bank_size, chunk)):
            count = min(chunk, c.bank_size - start)
            batch = sample_world(count, StepRandom(c.seed, "bank", index).world_seed(), resolution=c.model.resolution)
            means.append(_posterior(self.vae, _images(batch, self.device))[0])
            attributes.append(batch.attributes)
        mean = torch.cat(means)
        # Per channel, the latents' mean and spread; fold them into the VAE so latents are centred and of unit
        # variance per channel (the decoded images do not change), and keep scaling_factor 1.
        centre = mean.mean(dim=(0, 2, 3))
        spread = mean.std(dim=(0, 2, 3))
        normalise_latents(self.vae, centre, spread)
        mean = (mean - centre.view(1, -1, 1, 1)) / spread.view(1, -1, 1, 1)
        self.bank = {"latents": mean, "attributes": Attributes.cat(attributes)}

    # -------------------------------------------------------------------------------------------- phase: diffusion
    def _token_ids(self, captions: list[str]) -> torch.Tensor:
        missing = [text for text in set(captions) if text not in self._token_cache]
        if missing:
            ids = self.tokenizer(
                missing,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            self._token_cache.update(zip(missing, ids))
        return torch.stack([self._token_cache[text] for text in captions]).to(self.device)

    def diffusion_step(self, i: int) -> dict[str, float]:
        c = self.config
        assert self.bank is not None
        rnd = StepRandom(c.seed, "diffusion", i)
        index = rnd.randint(0, c.bank_size, (c.batch,), "cpu")
        z0 = self.bank["latents"][index.to(self.device)] * self.vae.config.scaling_factor
        captions = caption_for(self.bank["attributes"][index], rnd.numpy)
        drop = (rnd.rand((c.batch,), "cpu") < c.caption_dropout).tolist()
        captions = ["" if d else text for d, text in zip(drop, captions)]
        hidden = self.text_encoder(self._token_ids(captions))[0]
        t = rnd.randint(0, self.scheduler.config.num_train_timesteps, (c.batch,), self.device)
        noise = rnd.randn(z0.shape, self.device)
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * z0
        pred = self.unet(x_t, t, encoder_hidden_states=hidden).sample
        loss = F.mse_loss(pred, target)
        for group in self.optimizer.param_groups:
            group["lr"] = c.lr * warmup_cosine(i, c.steps, c.warmup)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*self.unet.parameters(), *self.text_encoder.parameters()], c.grad_clip)
        self.optimizer.step()
        self.ema_unet.update(self.unet)
        self.ema_text.update(self.text_encoder)
        return {"loss": loss.item()}

    def diffusion_phase(self) -> Phase:
        return Phase(
            name="diffusion",
            steps=self.config.steps,
            step=self.diffusion_step,
            state=lambda: {
                "unet": self.unet.state_dict(),
                "text_encoder": self.text_encoder.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "ema_unet": self.ema_unet.state_dict(),
                "ema_text": self.ema_text.state_dict(),
            },
            load=self._load_diffusion,
            columns=["loss"],
            every=self.config.checkpoint_every,
        )

    def _load_diffusion(self, state: dict[str, Any]) -> None:
        self.unet.load_state_dict(state["unet"])
        self.text_encoder.load_state_dict(state["text_encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema_unet.load_state_dict(state["ema_unet"])
        self.ema_text.load_state_dict(state["ema_text"])

    # -------------------------------------------------------------------------------------------- run
    def run(self, resume: bool = False, stop_after: tuple[str, int] | None = None, quiet: bool = False) -> Path | None:
        """Train both phases and write `out/pipeline`; returns None when `stop_after` interrupted the run."""
        stops = dict([stop_after]) if stop_after else {}
        done = run_phase(self.vae_phase(), self.out, resume, self.device, stops.get("vae"), quiet)
        if done < self.config.vae_steps:
            return None
        self.build_bank()
        self.vae.eval().requires_grad_(False)
        done = run_phase(self.diffusion_phase(), self.out, resume, self.device, stops.get("diffusion"), quiet)
        if done < self.config.steps:
            return None
        return self.export()

    def export(self, folder: str | Path | None = None, half: bool = True) -> Path:
        """Write the StableDiffusionPipeline folder with the EMA weights."""
        import copy

        unet, text_encoder = copy.deepcopy(self.unet), copy.deepcopy(self.text_encoder)
        self.ema_unet.copy_to(unet)
        self.ema_text.copy_to(text_encoder)
        folder = Path(folder) if folder else self.out / "pipeline"
        return save_pipeline(
            folder, unet, self.vae, text_encoder, self.tokenizer, self.scheduler, self.config.model, half=half
        )


def train_base(
    out: str | Path,
    config: BaseTrainConfig | None = None,
    device: str | None = "auto",
    resume: bool = False,
    quiet: bool = False,
    **overrides: Any,
) -> Path | None:
    """Train the base pipeline into `out` (checkpoints, logs, and the final folder `out/pipeline`)."""
    config = replace(config or BaseTrainConfig(), **overrides)
    return BaseTrainer(out, config, device).run(resume=resume, quiet=quiet)


__all__ = ["BaseTrainConfig", "BaseTrainer", "encode_captions", "train_base"]
