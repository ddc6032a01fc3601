"""The Concept Slider trainer: a LoRA on one model of a pair, its loss, and its resumable state (see
`divdistill.control.train` for the recipe and `divdistill.control.objective` for the per-convention maths:
epsilon on VP families, velocity on flow families; the family of the pair decides)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

import divdistill.control.peft_ops as peft_ops
from divdistill.conditioning import Conditioning, PromptRequest
from divdistill.control.formats import LoraLayer
from divdistill.control.objective import objective_for
from divdistill.control.slider import SliderConfig, slider_modules
from divdistill.denoiser import GuidedDenoiser
from divdistill.families import FAMILIES
from divdistill.sampling import Stage, sample

ADAPTER = "slider"
CHECKPOINTS = "checkpoints"
RECORD = "train.json"


def _cat(conditionings: list[Conditioning]) -> Conditioning:
    """One batch from several prompt batches (positive branch only)."""
    added = None
    if conditionings[0].added is not None:
        added = {k: torch.cat([c.added[k] for c in conditionings]) for k in conditionings[0].added}
    hidden_states = torch.cat([c.hidden_states for c in conditionings])
    return Conditioning(hidden_states=hidden_states, added=added, extra=conditionings[0].extra)


def _ddim(scheduler: Any) -> Any:
    """DDIM on the model's training noise schedule (trailing spacing: the first step is pure noise)."""
    import logging

    from diffusers import DDIMScheduler

    logger = logging.getLogger("diffusers.configuration_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return DDIMScheduler.from_config(
            scheduler.config, timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=False,
            thresholding=False, steps_offset=0,
        )  # fmt: skip
    finally:
        logger.setLevel(level)


@dataclass
class TrainState:
    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


class SliderTrainer:
    """A Concept Slider being trained on one model of a `HybridPipeline` (use as a context manager).

    The LoRA lives on the pipeline's denoising network (UNet or transformer) while the trainer is open (as the
    PEFT adapter "slider"); `close()` takes it out and restores the network's requires_grad flags.
    """

    def __init__(self, pipe: Any, config: SliderConfig, device: torch.device | str | None = None):
        self.pipe = pipe
        self.config = config
        self.model_pipe = pipe.pipeline_for(config.on)
        self.family = pipe.family
        if self.family.slider is None:
            trainable = ", ".join(sorted(f.name for f in FAMILIES if f.slider is not None))
            raise ValueError(
                f"Slider training supports the {trainable} families; this pair is "
                f"{self.family.name}. Sliders and LoRAs trained elsewhere for {self.family.name} models apply with "
                "`divdistill control` / `--lora` (diffusers/PEFT files, and kohya files for FLUX)."
            )
        self.objective = objective_for(self.family.convention.name)
        self.unet = self.family.network(self.model_pipe)
        self.device = torch.device(device) if device is not None else self.unet.device
        self.state = TrainState()
        self._open = False

    # ------------------------------------------------------------------------------------------- setup
    def __enter__(self) -> SliderTrainer:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def open(self) -> None:
        from peft import LoraConfig

        config = self.config
        if ADAPTER in (getattr(self.unet, "peft_config", None) or {}):
            raise ValueError(f"The {config.on} {self.family.network_label} already holds an adapter named {ADAPTER!r}.")
        self.paths = slider_modules(self.unet, config.train_method, config.conv, self.family.slider)
        self._grad_flags = {name: p.requires_grad for name, p in self.unet.named_parameters()}
        self.unet.requires_grad_(False)
        lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=self.paths, init_lora_weights=True)
        try:
            with torch.random.fork_rng(devices=[]):  # PEFT draws lora_A's init from torch's global RNG
                torch.manual_seed(config.seed)
                peft_ops.add_initialised(self.unet, lora, ADAPTER)
        except BaseException:
            for name, param in self.unet.named_parameters():
                param.requires_grad_(self._grad_flags.get(name, False))
            raise
        self._open = True
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise

    def _prepare(self) -> None:
        config = self.config
        peft_ops.set_active(self.unet, [ADAPTER], [1.0])
        self.params = []
        for name, param in self.unet.named_parameters():
            if f".{ADAPTER}." in name and (".lora_A." in name or ".lora_B." in name):
                param.data = param.data.float()  # fp32 master weights under a half-precision UNet
                param.requires_grad_(True)
                self.params.append(param)
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr)
        self.generator = torch.Generator().manual_seed(config.seed)
        self._encode()
        self.latent_shape = self.family.latent_shape(self.model_pipe, config.batch_size, self.size, self.size)
        if self.objective.name == "epsilon":  # DDIM on the training noise schedule (Concept Sliders / LECO)
            self.scheduler = _ddim(self.model_pipe.scheduler)
        else:  # the model's own flow sampler and sigma grid (the FLUX slider reference runs its pipeline)
            self.scheduler = type(self.model_pipe.scheduler).from_config(self.model_pipe.scheduler.config)
        self._set_schedule()

    def _set_schedule(self) -> None:
        """(Re)set the sampler's timesteps; this also rewinds the step index flow schedulers keep between steps."""
        steps = self.config.denoise_steps
        self.family.set_schedule(self.model_pipe, self.scheduler, steps, None, self.device, self.latent_shape)

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        peft_ops.delete(self.unet, ADAPTER)
        for name, param in self.unet.named_parameters():
            param.requires_grad_(self._grad_flags.get(name, False))

    def _encode(self) -> None:
        config, pipe = self.config, self.model_pipe
        size = config.resolution or self.family.default_size(pipe)
        self.size = size
        batch = config.batch_size

        def encode(prompt: str, negative: bool) -> Conditioning:
            request = PromptRequest(
                prompts=[prompt],
                num_images_per_prompt=batch,
                with_negative=negative,
                height=size,
                width=size,
                device=self.device,
                max_sequence_length=self.pipe.defaults.max_sequence_length,
            )
            return self.family.encode(pipe, request)

        with torch.no_grad():
            self.target = encode(config.target, True)
            prompts = [config.neutral or config.target, config.positive, config.negative]
            self.references = _cat([encode(p, False) for p in prompts])
        self.dtype = self.target.hidden_states.dtype
        guidance = config.denoise_guidance
        if guidance is None:
            defaults = self.pipe.defaults
            guidance = 3.0 if config.on == "base" else float(defaults.guidance_scale)
        self.denoise_guidance = guidance
        # The frozen and the trained predictions: the conditional branch of a CFG network; a network that embeds
        # its guidance (FLUX.1-dev, LCM) sees the same scale as while denoising (the FLUX slider reference).
        self.prediction_guidance = guidance if self.family.embeds_guidance(self.unet) else 1.0

    def _denoiser(self, conditioning: Conditioning, guidance: float) -> GuidedDenoiser:
        return GuidedDenoiser(
            name=self.config.on,
            network=self.unet,
            conditioning=conditioning,
            guidance_scale=guidance,
            prediction_type=self.family.prediction_type(self.model_pipe),
            dtype=self.dtype,
            family=self.family,
        )

    def _predict(self, denoiser: GuidedDenoiser, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's output in the objective's space (epsilon or velocity)."""
        return self.objective.prediction(denoiser(x, t), denoiser.prediction_type, x, self.scheduler, t)

    @contextmanager
    def _slider_off(self) -> Iterator[None]:
        """The frozen model: the slider's layers bypassed (PEFT flags only), on again afterwards."""
        peft_ops.disable(self.unet)
        try:
            yield
        finally:
            peft_ops.set_active(self.unet, [ADAPTER], [1.0])

    # ------------------------------------------------------------------------------------------- one step
    def _draw(self, generator: torch.Generator) -> tuple[int, torch.Tensor]:
        config = self.config
        k = int(torch.randint(self.objective.first_step, config.denoise_steps, (1,), generator=generator).item())
        noise = torch.randn(self.latent_shape, generator=generator, dtype=torch.float32)
        noise = noise.to(device=self.device, dtype=self.dtype)
        return k, self.family.convention.initial_latents(self.scheduler, noise, self.scheduler.timesteps[0], False)

    def loss(self, k: int, noise: torch.Tensor) -> torch.Tensor:
        """The slider loss at the sampler's k-th timestep from x_T = noise (see `divdistill.control.objective`)."""
        self._set_schedule()
        timesteps = self.scheduler.timesteps
        with torch.no_grad():
            guided = self._denoiser(self.target, self.denoise_guidance)
            stage = Stage(self.config.on, guided, self.scheduler, timesteps[:k], self.family.convention)
            if self.objective.denoise_with_slider:
                x_t, _ = sample(noise, [stage])
            else:
                with self._slider_off():
                    x_t, _ = sample(noise, [stage])
            t = timesteps[k]
            with self._slider_off():
                frozen = self._denoiser(self.references, self.prediction_guidance)
                references = self._predict(frozen, torch.cat([x_t] * 3), t)
            neutral, positive, negative = references.split(x_t.shape[0])
            goal = self.objective.target(neutral, positive, negative, self.config.eta, self.config.action)
        prediction = self._predict(self._denoiser(self.target, self.prediction_guidance), x_t, t)
        return torch.nn.functional.mse_loss(prediction.float(), goal.float())

    def step(self) -> float:
        k, noise = self._draw(self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(k, noise)
        loss.backward()
        self.optimizer.step()
        value = float(loss.detach().item())
        self.state.step += 1
        self.state.losses.append(value)
        return value

    def evaluate_loss(self, samples: int = 4, seed: int = 12345) -> float:
        """Mean loss on fixed draws (its own generator), without training: to see the loss fall."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            values = [float(self.loss(*self._draw(generator)).item()) for _ in range(samples)]
        return sum(values) / len(values)

    # ------------------------------------------------------------------------------------------- state
    def layers(self) -> dict[str, LoraLayer]:
        """The trained LoRA as resolved layers (fp32 copies)."""
        from peft.utils import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.unet, adapter_name=ADAPTER)
        out = {}
        for key, value in state.items():
            if key.endswith(".lora_A.weight"):
                path = key[: -len(".lora_A.weight")]
                up = state[f"{path}.lora_B.weight"]
                out[path] = LoraLayer(path, value.detach().float().cpu().clone(), up.detach().float().cpu().clone(),
                                      float(self.config.alpha))  # fmt: skip
        return out

    def checkpoint(self) -> dict[str, Any]:
        checkpoint = {
            "version": 1,
            "family": self.family.name,
            "step": self.state.step,
            "losses": list(self.state.losses),
            "seconds": self.state.seconds,
            "config": json.dumps(self.config.weights_settings(), sort_keys=True),
            "lora": {str(i): p.detach().cpu().clone() for i, p in enumerate(self.params)},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            checkpoint["cuda_rng"] = torch.cuda.get_rng_state_all()
        return checkpoint

    def restore(self, checkpoint: dict[str, Any]) -> None:
        saved = json.loads(checkpoint["config"])
        current = self.config.weights_settings()
        differ = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if differ:
            raise ValueError(f"the checkpoint was made with other settings ({', '.join(differ)})")
        family = checkpoint.get("family", self.family.name)
        if family != self.family.name:
            raise ValueError(f"the checkpoint was made on a {family} model and this pair is {self.family.name}")
        if len(checkpoint["lora"]) != len(self.params):
            raise ValueError("the checkpoint's LoRA has another number of tensors than this model's slider")
        with torch.no_grad():
            for i, param in enumerate(self.params):
                param.copy_(checkpoint["lora"][str(i)])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.generator.set_state(checkpoint["generator"])
        torch.set_rng_state(checkpoint["torch_rng"])
        if "cuda_rng" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
        self.state = TrainState(int(checkpoint["step"]), list(checkpoint["losses"]), float(checkpoint["seconds"]))

    def info(self) -> dict[str, Any]:
        """What the saved file records about the slider (read back by `control eval` and `formats.read_lora`)."""
        config = self.config
        return {
            "kind": "concept-slider",
            "family": self.family.name,
            "objective": self.objective.name,
            "trained_on": config.on,
            "model": getattr(self.pipe, "name", None),
            "concept": config.positive,
            "target": config.target,
            "positive": config.positive,
            "negative": config.negative,
            "neutral": config.neutral or config.target,
            "action": config.action,
            "eta": config.eta,
            "rank": config.rank,
            "alpha": config.alpha,
            "iterations": self.state.step,
            "resolution": self.size,
        }
