"""Train a text Concept Slider (Gandikota et al., 2023) on the base or the distilled model of a pair.

Objective, per iteration (the Concept Sliders / LECO recipe):
  1. k ~ U{1, ..., denoise_steps - 1}; x_T ~ N(0, I); with the LoRA on, run k DDIM steps (on the model's own
     training noise schedule, `denoise_steps` steps, `denoise_guidance` classifier-free guidance, target prompt)
     to get x_t, t = the k-th DDIM timestep.
  2. With the LoRA off: eps(x_t, c_neutral), eps(x_t, c_positive), eps(x_t, c_negative) (neutral defaults to
     the target prompt).
  3. With the LoRA on, minimise || eps_lora(x_t, c_target) - [eps(x_t, c_neutral) + s * eta * (eps(x_t, c_positive)
     - eps(x_t, c_negative))] ||^2, s = +1 ("enhance") or -1 ("erase").
The LoRA is a PEFT LoRA (rank 4, alpha 1, lr 2e-4 by default; AdamW) on every Linear/Conv2d of the UNet's
Transformer2DModel blocks except cross-attention ("noxattn") and of ResnetBlock2D / Downsample2D / Upsample2D.

Every random draw comes from one generator seeded with `seed`; checkpoints hold the LoRA weights, the optimizer
state and the generator (and torch's) RNG states, so a run resumed from a checkpoint ends with bit-identical
weights to an uninterrupted one. The result is a diffusers-format safetensors file (`load_lora_weights` loads it)
that records the prompts, the model it was trained on and its family in its header.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from divdistill.conditioning import Conditioning, PromptRequest
from divdistill.control.formats import LoraLayer, save_lora
from divdistill.conventions import alpha_prod_at
from divdistill.denoiser import GuidedDenoiser
from divdistill.prediction import to_x0_and_eps
from divdistill.sampling import Stage, sample

ADAPTER = "slider"
#: Families whose layer selection (no cross-attention, ResnetBlock2D convs) and VP objective are implemented here.
TRAINABLE_FAMILIES = ("sd", "sdxl")
TRAIN_METHODS = ("noxattn", "xattn", "selfattn", "full")
BLOCKS = ("Transformer2DModel",)
CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
CHECKPOINTS = "checkpoints"
RECORD = "train.json"
# Settings that may change between a run and its resumption (they do not change the weights of a given step).
RESUMABLE = ("iterations", "checkpoint_every", "keep_checkpoints")


@dataclass(frozen=True)
class SliderConfig:
    """What to train. `denoise_guidance` None: 3 on the base (as Concept Sliders), the pair's own on the distilled."""

    target: str
    positive: str
    negative: str
    neutral: str | None = None
    on: str = "base"
    action: str = "enhance"
    eta: float = 4.0
    rank: int = 4
    alpha: float = 1.0
    lr: float = 2e-4
    iterations: int = 1000
    batch_size: int = 1
    resolution: int | None = None
    denoise_steps: int = 50
    denoise_guidance: float | None = None
    train_method: str = "noxattn"
    conv: bool = True
    seed: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.on not in ("base", "distilled"):
            raise ValueError(f"on must be 'base' or 'distilled', got {self.on!r}.")
        if self.action not in ("enhance", "erase"):
            raise ValueError(f"action must be 'enhance' or 'erase', got {self.action!r}.")
        if self.train_method not in TRAIN_METHODS:
            raise ValueError(f"train_method must be one of {TRAIN_METHODS}, got {self.train_method!r}.")
        if self.denoise_steps < 2:
            raise ValueError("denoise_steps must be at least 2.")
        for name in ("rank", "iterations", "batch_size", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def weights_settings(self) -> dict[str, Any]:
        """The settings a resumed run must share with the checkpoint."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUMABLE}


def slider_modules(unet: torch.nn.Module, method: str = "noxattn", conv: bool = True) -> list[str]:
    """Module paths a Concept Slider trains (Linear/Conv2d inside the blocks its LoRANetwork wraps).

    `method` filters by name as LoRANetwork does: "noxattn" all but cross-attention (attn2), "xattn" only attn2,
    "selfattn" only attn1, "full" everything. Existing PEFT wrappers are seen through.
    """
    from divdistill.control.formats import lora_targets

    targets = lora_targets(unet)
    paths: list[str] = []
    for name, block in unet.named_modules():
        kind = type(block).__name__
        if kind not in BLOCKS and not (conv and kind in CONV_BLOCKS):
            continue
        for path in targets:
            if not path.startswith(name + ".") or path in paths:
                continue
            child = path[len(name) + 1 :]
            keep = {"noxattn": "attn2" not in child, "xattn": "attn2" in child, "selfattn": "attn1" in child}
            if keep.get(method, True):
                paths.append(path)
    return paths


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
        if self.family.name not in TRAINABLE_FAMILIES:
            raise ValueError(
                f"Slider training supports UNet models ({', '.join(TRAINABLE_FAMILIES)}); this pair is "
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
        self.paths = slider_modules(self.unet, config.train_method, config.conv)
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
            request = PromptRequest([prompt], None, batch, negative, size, size, self.device)
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


# ----------------------------------------------------------------------------------------------- runs
def checkpoint_files(out: Path) -> list[Path]:
    return sorted((out / CHECKPOINTS).glob("step-*.pt"))


def _save_checkpoint(trainer: SliderTrainer, out: Path) -> Path:
    from divdistill.images import atomic_write

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

    from divdistill.images import write_json_atomic

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
        save_lora(layers, result, format, info=trainer.info())
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


def config_fields() -> list[str]:
    return [f.name for f in fields(SliderConfig)]
