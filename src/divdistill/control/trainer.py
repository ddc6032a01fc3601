"""The Concept Slider trainer: a LoRA on one model of a pair, its loss, and its resumable state (see
`divdistill.control.train` for the objective)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch

from divdistill.conditioning import Conditioning, PromptRequest
from divdistill.control.formats import LoraLayer
from divdistill.control.slider import SliderConfig, slider_modules
from divdistill.conventions import alpha_prod_at
from divdistill.denoiser import GuidedDenoiser
from divdistill.families import FAMILIES
from divdistill.prediction import to_x0_and_eps
from divdistill.sampling import Stage, sample

ADAPTER = "slider"
CHECKPOINTS = "checkpoints"
RECORD = "train.json"


def _cat(conditionings: list[Conditioning]) -> Conditioning:
    """One batch from several prompt batches (positive branch only)."""
    added = None
    if conditionings[0].added is not None:
        added = {k: torch.cat([c.added[k] for c in conditionings]) for k in conditionings[0].added}
    return Conditioning(hidden_states=torch.cat([c.hidden_states for c in conditionings]), added=added)


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

    The LoRA lives on the pipeline's UNet while the trainer is open (as the PEFT adapter "slider"); `close()`
    takes it out and restores the UNet's requires_grad flags.
    """

    def __init__(self, pipe: Any, config: SliderConfig, device: torch.device | str | None = None):
        self.pipe = pipe
        self.config = config
        self.model_pipe = pipe.pipeline_for(config.on)
        self.family = pipe.family
        if self.family.slider is None:
            trainable = ", ".join(sorted(f.name for f in FAMILIES if f.slider is not None))
            raise ValueError(
                f"Slider training supports UNet models ({trainable}); this pair is "
                f"{self.family.name}. Sliders and LoRAs trained elsewhere for {self.family.name} models apply with "
                "`divdistill control` / `--lora` (diffusers/PEFT files, and kohya files for FLUX)."
            )
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
            raise ValueError(f"The {config.on} UNet already holds an adapter named {ADAPTER!r}.")
        self._grad_flags = {name: p.requires_grad for name, p in self.unet.named_parameters()}
        self.unet.requires_grad_(False)
        self.paths = slider_modules(self.unet, config.train_method, config.conv, self.family.slider)
        lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=self.paths, init_lora_weights=True)
        try:
            with torch.random.fork_rng(devices=[]):  # PEFT draws lora_A's init from torch's global RNG
                torch.manual_seed(config.seed)
                self.unet.add_adapter(lora, adapter_name=ADAPTER)
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
        self.unet.set_adapters([ADAPTER], [1.0])
        self.params = []
        for name, param in self.unet.named_parameters():
            if f".{ADAPTER}." in name and (".lora_A." in name or ".lora_B." in name):
                param.data = param.data.float()  # fp32 master weights under a half-precision UNet
                param.requires_grad_(True)
                self.params.append(param)
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr)
        self.generator = torch.Generator().manual_seed(config.seed)
        self._encode()
        self.scheduler = _ddim(self.model_pipe.scheduler)
        self.scheduler.set_timesteps(config.denoise_steps, device=self.device)

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self.unet.delete_adapters(ADAPTER)
        if not getattr(self.unet, "peft_config", None):
            self.unet.unload_lora()
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

    def _denoiser(self, conditioning: Conditioning, guidance: float) -> GuidedDenoiser:
        return GuidedDenoiser(
            name=self.config.on,
            network=self.unet,
            conditioning=conditioning,
            guidance_scale=guidance,
            prediction_type=self.scheduler.config.prediction_type,
            dtype=self.dtype,
            family=self.family,
        )

    def _eps(self, denoiser: GuidedDenoiser, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        output = denoiser(x, t)
        _, eps = to_x0_and_eps(output, denoiser.prediction_type, x, alpha_prod_at(self.scheduler, t))
        return eps

    # ------------------------------------------------------------------------------------------- one step
    def _draw(self, generator: torch.Generator) -> tuple[int, torch.Tensor]:
        config = self.config
        k = int(torch.randint(1, config.denoise_steps, (1,), generator=generator).item())
        shape = self.family.latent_shape(self.model_pipe, config.batch_size, self.size, self.size)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        return k, noise.to(device=self.device, dtype=self.dtype) * self.scheduler.init_noise_sigma

    def loss(self, k: int, noise: torch.Tensor) -> torch.Tensor:
        """The slider loss at the k-th DDIM timestep from x_T = noise (LoRA on while denoising; see module doc)."""
        timesteps = self.scheduler.timesteps
        with torch.no_grad():
            guided = self._denoiser(self.target, self.denoise_guidance)
            stage = Stage(self.config.on, guided, self.scheduler, timesteps[:k], self.family.convention)
            x_t, _ = sample(noise, [stage])
            t = timesteps[k]
            self.unet.disable_adapters()
            try:
                batch = x_t.shape[0]
                references = self._eps(self._denoiser(self.references, 1.0), torch.cat([x_t] * 3), t)
            finally:
                self.unet.enable_adapters()
            neutral, positive, negative = references.split(batch)
            sign = 1.0 if self.config.action == "enhance" else -1.0
            goal = neutral + sign * self.config.eta * (positive - negative)
        prediction = self._eps(self._denoiser(self.target, 1.0), x_t, t)  # guidance 1: the prompt branch only
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
