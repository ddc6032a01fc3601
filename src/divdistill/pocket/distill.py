"""Distil the pocket base into a 4-step student by distribution matching (DMD, Yin et al. 2024; DMD2 2024).

Three UNets, all initialised from the base: the frozen *real* score (the base, with classifier-free guidance),
the *fake* score (trained on the student's samples with the ordinary denoising loss), and the *student*.
Sampling is LCM-style on timesteps 999/749/499/249: predict x0, re-noise it to the next timestep with fresh
noise. Each iteration:

1. Backward simulation (DMD2): pick a student step k at random, run the student's own chain (no gradient)
   from pure noise to x_{t_k}, and let the student predict x0 from it.
2. Generator update (every `fake_updates_per_generator`-th iteration, DMD2's two time-scale rule): re-noise the
   student's x0 to a random t in [t_min, t_max], and step along  real_x0(x_t) - fake_x0(x_t)  (the difference of
   the two scores, normalised per sample by mean |x0 - real_x0| as in DMD), via the surrogate loss
   0.5 * ||x0 - stopgrad(x0 - grad)||^2.
3. Fake-score update on the (detached) student samples with the v-prediction denoising loss.

Optionally, `regression_weight` > 0 adds DMD's regression term: a mean-squared error between the student's
one-step output from a fixed set of noises and the base's deterministic DDIM samples from the same noises.

Nothing here narrows the data, fixes seeds, or reduces noise: prompts are drawn from the world's caption
distribution, every draw is fresh (deterministic only through the run's seed), and the student starts from pure
noise at t = 999 as it does at inference.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from divdistill.pocket.models import DISTILLED_TIMESTEPS, encode_captions, load_pipeline, read_config, save_pipeline
from divdistill.pocket.training import Phase, StepRandom, run_phase, training_device, warmup_cosine
from divdistill.pocket.world import sample_captions


@dataclass
class DistillConfig:
    seed: int = 0
    steps: int = 1000
    batch: int = 32
    generator_lr: float = 5e-5
    fake_lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.999)
    weight_decay: float = 0.01
    warmup: int = 20
    fake_updates_per_generator: int = 3
    real_guidance: float = 4.0
    t_min: int = 20
    t_max: int = 980
    timesteps: tuple[int, ...] = DISTILLED_TIMESTEPS
    regression_weight: float = 0.0
    regression_pairs: int = 512
    regression_steps: int = 25
    grad_clip: float = 1.0
    checkpoint_every: int = 250

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Distiller:
    def __init__(
        self,
        base: str | Path,
        out: str | Path,
        config: DistillConfig | None = None,
        device: str | None = "auto",
    ):
        self.base_dir = Path(base)
        self.out = Path(out)
        self.config = config or DistillConfig()
        self.device = training_device(device)
        self.out.mkdir(parents=True, exist_ok=True)
        self.pipe = load_pipeline(self.base_dir, self.device)
        self.model_config = read_config(self.base_dir)
        self.real = self.pipe.unet.eval().requires_grad_(False)
        self.pipe.text_encoder.requires_grad_(False).eval()
        self.student = copy.deepcopy(self.real).train().requires_grad_(True)
        self.fake = copy.deepcopy(self.real).train().requires_grad_(True)
        c = self.config
        self.g_optimizer = torch.optim.AdamW(
            self.student.parameters(), lr=c.generator_lr, betas=c.betas, weight_decay=c.weight_decay
        )
        self.f_optimizer = torch.optim.AdamW(
            self.fake.parameters(), lr=c.fake_lr, betas=c.betas, weight_decay=c.weight_decay
        )
        from diffusers import LCMScheduler

        self.lcm = LCMScheduler.from_config(self.pipe.scheduler.config)
        self.alphas_cumprod = self.pipe.scheduler.alphas_cumprod.to(self.device)
        with torch.no_grad():
            self.uncond = encode_captions(self.pipe.text_encoder, self.pipe.tokenizer, [""], self.device)
        self.latent_shape = (
            self.real.config.in_channels,
            self.real.config.sample_size,
            self.real.config.sample_size,
        )
        self.pairs: dict[str, torch.Tensor] | None = None
        (self.out / "train_config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")

    # -------------------------------------------------------------------------------------------- pieces
    def _a(self, t: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod[t].view(-1, 1, 1, 1)

    def _x0(self, v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self._a(t)
        return a.sqrt() * x_t - (1 - a).sqrt() * v

    def _noise(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a = self._a(t)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def _encode(self, captions: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return encode_captions(self.pipe.text_encoder, self.pipe.tokenizer, captions, self.device)

    def student_x0(self, x: torch.Tensor, step: int, hidden: torch.Tensor) -> torch.Tensor:
        """The student's denoised output at its `step`-th timestep, exactly as LCMScheduler.step computes it."""
        t_value = self.config.timesteps[step]
        t = torch.full((x.shape[0],), t_value, device=self.device, dtype=torch.long)
        v = self.student(x, t, encoder_hidden_states=hidden).sample
        c_skip, c_out = self.lcm.get_scalings_for_boundary_condition_discrete(t_value)
        return c_out * self._x0(v, x, t) + c_skip * x

    def simulate(self, rnd: StepRandom, hidden: torch.Tensor, k: int, batch: int) -> torch.Tensor:
        """x_{t_k} from the student's own chain (no gradient): pure noise, then k predict-and-renoise steps."""
        x = rnd.randn((batch, *self.latent_shape), self.device)
        with torch.no_grad():
            for j in range(k):
                x0 = self.student_x0(x, j, hidden)
                t_next = torch.full((batch,), self.config.timesteps[j + 1], device=self.device, dtype=torch.long)
                x = self._noise(x0, t_next, rnd.randn(x0.shape, self.device))
        return x

    def real_v(self, x_t: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The base's v-prediction with classifier-free guidance `real_guidance` (one batched call)."""
        w = self.config.real_guidance
        uncond = self.uncond.expand(hidden.shape[0], -1, -1)
        v_u, v_c = self.real(
            torch.cat([x_t, x_t]), torch.cat([t, t]), encoder_hidden_states=torch.cat([uncond, hidden])
        ).sample.chunk(2)
        return v_u + w * (v_c - v_u)

    def real_x0(self, x_t: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return self._x0(self.real_v(x_t, t, hidden), x_t, t)

    # -------------------------------------------------------------------------------------------- regression pairs
    @torch.no_grad()
    def build_pairs(self) -> None:
        """DMD's regression targets: base DDIM samples (with the real guidance) from fixed noises and captions."""
        c = self.config
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(c.regression_steps, device=self.device)
        rnd = StepRandom(c.seed, "regression-pairs")
        captions = sample_captions(c.regression_pairs, rnd.world_seed())
        noise = rnd.randn((c.regression_pairs, *self.latent_shape), self.device)
        targets = []
        for start in range(0, c.regression_pairs, 256):
            hidden = self._encode(captions[start : start + 256])
            x = noise[start : start + 256].clone()
            for t in scheduler.timesteps:
                tt = torch.full((x.shape[0],), int(t), device=self.device, dtype=torch.long)
                x = scheduler.step(self.real_v(x, tt, hidden), t, x).prev_sample
            targets.append(x)
        self.pairs = {"captions": captions, "noise": noise, "target": torch.cat(targets)}

    # -------------------------------------------------------------------------------------------- step
    def step(self, i: int) -> dict[str, float]:
        c = self.config
        rnd = StepRandom(c.seed, "dmd", i)
        captions = sample_captions(c.batch, rnd.world_seed())
        hidden = self._encode(captions)
        k = int(rnd.randint(0, len(c.timesteps), (1,), "cpu"))
        x = self.simulate(rnd, hidden, k, c.batch)
        generator_turn = i % c.fake_updates_per_generator == 0
        values: dict[str, float] = {"k": float(k)}

        # generator update
        with torch.set_grad_enabled(generator_turn):
            x0 = self.student_x0(x, k, hidden)
        if generator_turn:
            t = rnd.randint(c.t_min, c.t_max + 1, (c.batch,), self.device)
            x_t = self._noise(x0.detach(), t, rnd.randn(x0.shape, self.device))
            with torch.no_grad():
                real = self.real_x0(x_t, t, hidden)
                fake = self._x0(self.fake(x_t, t, encoder_hidden_states=hidden).sample, x_t, t)
                weight = 1.0 / (x0 - real).abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-5)
                grad = (fake - real) * weight
            loss = 0.5 * F.mse_loss(x0, (x0 - grad).detach())
            values["dmd"] = loss.item()
            if c.regression_weight > 0:
                regression = self._regression_loss(rnd)
                loss = loss + c.regression_weight * regression
                values["regression"] = regression.item()
            for group in self.g_optimizer.param_groups:
                group["lr"] = c.generator_lr * warmup_cosine(i, c.steps, c.warmup, floor=1.0)
            self.g_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), c.grad_clip)
            self.g_optimizer.step()

        # fake-score update on the student's samples
        sample = x0.detach()
        t = rnd.randint(0, self.alphas_cumprod.shape[0], (c.batch,), self.device)
        noise = rnd.randn(sample.shape, self.device)
        a = self._a(t)
        x_t = a.sqrt() * sample + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * sample
        fake_loss = F.mse_loss(self.fake(x_t, t, encoder_hidden_states=hidden).sample, target)
        for group in self.f_optimizer.param_groups:
            group["lr"] = c.fake_lr * warmup_cosine(i, c.steps, c.warmup, floor=1.0)
        self.f_optimizer.zero_grad(set_to_none=True)
        fake_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.fake.parameters(), c.grad_clip)
        self.f_optimizer.step()
        values["fake"] = fake_loss.item()
        return values

    def _regression_loss(self, rnd: StepRandom) -> torch.Tensor:
        assert self.pairs is not None
        c = self.config
        index = rnd.randint(0, c.regression_pairs, (c.batch,), "cpu")
        hidden = self._encode([self.pairs["captions"][j] for j in index.tolist()])
        x0 = self.student_x0(self.pairs["noise"][index.to(self.device)], 0, hidden)
        return F.mse_loss(x0, self.pairs["target"][index.to(self.device)])

    def phase(self) -> Phase:
        return Phase(
            name="distill",
            steps=self.config.steps,
            step=self.step,
            state=lambda: {
                "student": self.student.state_dict(),
                "fake": self.fake.state_dict(),
                "g_optimizer": self.g_optimizer.state_dict(),
                "f_optimizer": self.f_optimizer.state_dict(),
            },
            load=self._load,
            columns=["k", "dmd", "regression", "fake"],
            every=self.config.checkpoint_every,
        )

    def _load(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        self.fake.load_state_dict(state["fake"])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        self.f_optimizer.load_state_dict(state["f_optimizer"])

    def run(self, resume: bool = False, stop_after: int | None = None, quiet: bool = False) -> Path | None:
        if self.config.regression_weight > 0:
            self.build_pairs()
        done = run_phase(self.phase(), self.out, resume, self.device, stop_after, quiet)
        if done < self.config.steps:
            return None
        return self.export()

    def export(self, folder: str | Path | None = None, half: bool = True) -> Path:
        """The distilled StableDiffusionPipeline folder: the base's VAE and text encoder, the student, LCM."""
        from diffusers import LCMScheduler

        folder = Path(folder) if folder else self.out / "pipeline"
        scheduler = LCMScheduler.from_config(self.pipe.scheduler.config)
        return save_pipeline(
            folder,
            self.student,
            self.pipe.vae,
            self.pipe.text_encoder,
            self.pipe.tokenizer,
            scheduler,
            self.model_config,
            half=half,
        )


def distill(
    base: str | Path,
    out: str | Path,
    config: DistillConfig | None = None,
    device: str | None = "auto",
    resume: bool = False,
    quiet: bool = False,
    **overrides: Any,
) -> Path | None:
    """Distil the base pipeline folder `base` into `out` (checkpoints, log, final folder `out/pipeline`)."""
    config = replace(config or DistillConfig(), **overrides)
    return Distiller(base, out, config, device).run(resume=resume, quiet=quiet)
