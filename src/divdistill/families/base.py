"""The interface every model family implements."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from divdistill.conditioning import Conditioning, PromptRequest
from divdistill.conventions import VP, LatentConvention


class PairMismatchError(ValueError):
    """Raised before sampling when a base and a distilled pipeline cannot share latents or prompts."""


@dataclass(frozen=True)
class SliderTraining:
    """How `divdistill slider train` finds a family's trainable layers (the Concept Sliders LoRANetwork's choice).

    `blocks` are the network's block classes whose Linear/Conv2d layers a slider trains; `conv_blocks` the
    blocks whose convolutions it adds with `conv=True`. `cross_attention` / `self_attention` are the name
    fragments (within a block) of its cross- and self-attention layers, which the train methods filter on
    ("noxattn" leaves cross-attention out, "xattn" keeps only it, "selfattn" only self-attention); empty for
    joint attention (SD3, FLUX: text and image tokens attend in one layer), where only "noxattn" and "full"
    apply. Families without one cannot train sliders (their objective and layer choice are not implemented),
    though their LoRAs still apply.
    """

    blocks: tuple[str, ...]
    conv_blocks: tuple[str, ...] = ()
    cross_attention: tuple[str, ...] = ("attn2",)
    self_attention: tuple[str, ...] = ("attn1",)


@dataclass(frozen=True)
class KohyaConversion:
    """Which diffusers converter reads a family's kohya LoRA files (`<pipeline_class>.lora_state_dict`).

    `rewrites_tensors`: the converter changes the tensors themselves (FLUX: fused qkv split in three, alpha
    folded into the factors), so its output is used as is; otherwise it only renames keys (SD/SDXL UNets), which
    divdistill traces back key by key and checks against the network's own module names.
    """

    pipeline_class: str
    rewrites_tensors: bool = False


@dataclass(frozen=True)
class NetworkInputs:
    """Everything one network call needs besides the latent and the timestep, built once per run.

    `hidden_states` / `added` are already stacked [negative, positive] when the call runs classifier-free
    guidance; `extra` holds unbatched tensors (FLUX's text position ids); `guidance` the family's guidance
    embedding inputs (LCM's `timestep_cond`, FLUX's `guidance`), empty when guidance is not embedded.
    """

    hidden_states: torch.Tensor
    added: dict[str, torch.Tensor] | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    guidance: dict[str, torch.Tensor] = field(default_factory=dict)
    attention_kwargs: dict[str, Any] | None = None


class Family(ABC):
    """Adapter between one kind of diffusers pipeline and the family-agnostic sampler.

    A family owns everything that differs between pipelines: prompt encoding, the network's call signature,
    its parameterisation (`convention`, `prediction_type`), guidance style (classifier-free, embedded, none),
    the schedule set-up and decoding. The sampler and the hybrid pipeline only call these methods.
    """

    name: str
    #: diffusers class names of the family's pipeline and denoising network (what `divdistill.loading` builds).
    pipeline_class: str
    network_class: str
    #: The pipeline attribute holding the denoising network, and what messages call it.
    network_component: str = "unet"
    network_label: str = "UNet"
    convention: LatentConvention = VP
    #: Whether `sampling_size` can snap to trained aspect-ratio bins (PixArt); elsewhere resolution_binning is
    #: refused rather than recorded as on while doing nothing.
    supports_resolution_binning: bool = False
    #: Component names of the text side: the encoders (moved as one part by model CPU offload) and tokenizers.
    #: A pair shares prompts when all of them are the same objects; `load_pair` shares them with the distilled.
    text_encoders: tuple[str, ...] = ("text_encoder",)
    tokenizers: tuple[str, ...] = ("tokenizer",)
    #: Slider training's layer choice (None: the family cannot train sliders).
    slider: SliderTraining | None = None
    #: The diffusers converter of the family's kohya LoRA files (None: kohya keys are matched by name only).
    kohya: KohyaConversion | None = None
    #: Components its published repos leave out, loaded from their own repo and passed to `from_pretrained`
    #: (HiDream's Llama encoder): {component: (repo, transformers class, its from_pretrained keyword arguments)}.
    external_components: ClassVar[dict[str, tuple[str, str, dict[str, Any]]]] = {}
    #: Video families sample 5-D latents [B, C, F', H', W'] and decode to clips (`num_frames` is theirs only).
    video: ClassVar[bool] = False
    #: Pipeline config entries (not components) a pipeline assembled from another's components keeps (Wan 2.2's
    #: `boundary_ratio`); `divdistill.loading.assemble` passes them on.
    pipeline_config: ClassVar[tuple[str, ...]] = ()

    @property
    def text_components(self) -> tuple[str, ...]:
        """Every text-side component name (encoders, then tokenizers)."""
        return (*self.text_encoders, *self.tokenizers)

    @abstractmethod
    def matches(self, pipe: Any) -> bool:
        """Whether `pipe` belongs to this family."""

    @abstractmethod
    def encode(self, pipe: Any, request: PromptRequest) -> Conditioning:
        """Encode prompts with the pipeline's own encoders (so embeddings equal the pipeline's)."""

    @abstractmethod
    def pair_problems(self, base: Any, distilled: Any) -> list[str]:
        """Human-readable reasons why two pipelines of this family cannot be mixed (empty when fine)."""

    @abstractmethod
    def decode(self, pipe: Any, latents: torch.Tensor, output_type: str, size: tuple[int, int] | None = None) -> Any:
        """Turn final latents into images the way the pipeline itself does (at `size` = (height, width) when the
        family samples at another size, see `sampling_size`)."""

    @abstractmethod
    def forward(self, network: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, inputs: NetworkInputs):
        """One call of the denoising network, returning its raw prediction in the latent's layout."""

    # ------------------------------------------------------------------------------------- guidance style
    def embeds_guidance(self, network: torch.nn.Module) -> bool:
        """Guidance-distilled networks take the scale as an input instead of running two branches."""
        return getattr(network.config, "time_cond_proj_dim", None) is not None

    def runs_cfg(self, network: torch.nn.Module, guidance_scale: float) -> bool:
        """Whether a network at this guidance scale needs the unconditional branch (diffusers' rule)."""
        return guidance_scale > 1.0 and not self.embeds_guidance(network)

    def guidance_inputs(self, network, guidance_scale: float, batch_size: int, device, dtype) -> dict[str, Any]:
        """Network inputs that carry an embedded guidance scale (empty for CFG / unguided networks)."""
        return {}

    def combine_guidance(self, uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
        """Classifier-free guidance from the two branches' outputs (Qwen-Image rescales the result's norm)."""
        return uncond + scale * (cond - uncond)

    # ------------------------------------------------------------------------------------- parameterisation
    def prediction_type(self, pipe: Any) -> str:
        """What the pipeline's network predicts (its scheduler's prediction type for VP families)."""
        return pipe.scheduler.config.prediction_type

    def set_schedule(
        self,
        pipe: Any,
        scheduler: Any,
        num_inference_steps: int | None,
        timesteps: Sequence[int] | None,
        device: torch.device,
        latent_shape: tuple[int, ...],
    ) -> torch.Tensor:
        """`set_timesteps` as the pipeline does it, with a step count or an explicit timestep list."""
        if timesteps is not None:
            if "timesteps" not in inspect.signature(scheduler.set_timesteps).parameters:
                raise ValueError(
                    f"{type(scheduler).__name__} does not accept explicit timesteps; pass num_inference_steps."
                )
            scheduler.set_timesteps(timesteps=list(timesteps), device=device)
        else:
            scheduler.set_timesteps(num_inference_steps, device=device)
        return scheduler.timesteps

    # ------------------------------------------------------------------------------------- components
    def shares_text_encoders(self, base: Any, distilled: Any) -> bool:
        """True when both pipelines hold the very same text encoders and tokenizers (encode once)."""
        names = [n for n in self.text_components if hasattr(base, n)]
        return all(getattr(base, n, None) is getattr(distilled, n, None) for n in names)

    def latent_shape(self, pipe: Any, batch_size: int, height: int, width: int) -> tuple[int, ...]:
        """Shape of the initial latent for `batch_size` images of `height` x `width` pixels."""
        factor = pipe.vae_scale_factor
        if height % factor or width % factor:
            raise ValueError(f"height and width must be multiples of {factor} for this VAE; got {height}x{width}.")
        return (batch_size, self.network(pipe).config.in_channels, height // factor, width // factor)

    def sampling_size(self, pipe: Any, height: int, width: int, binning: bool = False) -> tuple[int, int]:
        """The size the network samples at for a requested size (PixArt snaps to its training aspect-ratio bins)."""
        return height, width

    def network(self, pipe: Any) -> torch.nn.Module:
        """The denoising network of a pipeline."""
        return getattr(pipe, self.network_component)

    def owns_network(self, network: torch.nn.Module) -> bool:
        """Whether a bare denoising network is of this family's network class (a LoRA's target, say)."""
        return type(network).__name__ == self.network_class

    def diffusers_classes(self) -> tuple[Any, Any]:
        """The diffusers (pipeline class, network class) of the family."""
        import diffusers

        return getattr(diffusers, self.pipeline_class), getattr(diffusers, self.network_class)

    def default_size(self, pipe: Any) -> int:
        """Native resolution in pixels."""
        return self.network(pipe).config.sample_size * pipe.vae_scale_factor

    def default_height_width(self, pipe: Any) -> tuple[int, int]:
        """(height, width) a call samples at when none is asked (the pipeline's defaults; square for images)."""
        size = self.default_size(pipe)
        return size, size

    # ------------------------------------------------------------------------------------------- video
    def default_num_frames(self, pipe: Any) -> int | None:
        """Frames of a clip when none is asked (None: an image family)."""
        return None

    def sample_shape(
        self, pipe: Any, batch_size: int, height: int, width: int, num_frames: int | None = None
    ) -> tuple[int, ...]:
        """The initial latent's shape for a call; `num_frames` only for video families (refused here)."""
        if num_frames is not None:
            raise ValueError(
                f"num_frames is for video pairs; this pair is of the {self.name} family and makes images. "
                "Leave num_frames out."
            )
        return self.latent_shape(pipe, batch_size, height, width)

    def latent_dtype(self, pipe: Any, text_dtype: torch.dtype) -> torch.dtype:
        """The dtype the initial noise is drawn in (the prompt embeddings' unless the pipeline draws float32)."""
        return text_dtype

    # ------------------------------------------------------------------------------------------- experts
    def experts(self, pipe: Any) -> tuple[torch.nn.Module, ...]:
        """The denoising networks of a pipeline, in `expert_runs` order (one but for mixtures of experts)."""
        return (self.network(pipe),)

    def expert_runs(self, pipe: Any, timesteps: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        """`timesteps` cut into consecutive runs by the expert the pipeline's own rule picks for them, as (index
        into `experts`, timesteps): expert 1 runs at `guidance_scale_2` (Wan 2.2's low-noise transformer_2)."""
        return [(0, timesteps)]

    def expert_lora_kwargs(self, index: int) -> dict[str, Any]:
        """`load_lora_weights` keyword arguments that put a LoRA on expert `index` (none: the network itself)."""
        return {}


def config_problems(kind: str, base: Any, distilled: Any, keys: Sequence[str]) -> list[str]:
    """Config keys on which two modules of a pair disagree, phrased for an error message."""
    problems = []
    for key in keys:
        a, b = base.config.get(key), distilled.config.get(key)
        if a != b:
            problems.append(f"{kind} {key} differs (base {a}, distilled {b})")
    return problems


def vae_problems(base: Any, distilled: Any) -> list[str]:
    """Two VAEs can share latents when they agree on the latent space's shape and scaling."""
    if base.vae is distilled.vae:
        return []
    keys = ("latent_channels", "scaling_factor", "shift_factor", "latents_mean", "latents_std")
    return config_problems("VAE", base.vae, distilled.vae, keys)
