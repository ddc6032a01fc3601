"""Wan 2.1 / 2.2 text-to-video: UMT5 prompts, a 3-D DiT on 5-D video latents, flow matching, true CFG.

Everything here is read from diffusers' `WanPipeline` (diffusers 0.42):

* Latents are [B, C, F', H', W'] with F' = (F - 1) / 4 + 1 (the VAE's temporal factor) and H' = H / 8; `prepare_latents`
  draws them in float32 whatever the transformer's dtype, and the loop feeds `latents.to(transformer_dtype)`. A
  frame count that is not 4k + 1, or a size that is not a multiple of 16 (VAE x patch), is refused here with the
  nearest valid values (the pipeline warns and rounds).
* Prompts: the pipeline's own `encode_prompt` (UMT5, padded to `max_sequence_length` 512, cast to the transformer's
  dtype); CFG's negative prompt defaults to "" as the pipeline's. The pipeline makes two calls (cond, uncond) and
  combines `uncond + s (cond - uncond)`; divdistill batches both branches in one call (<= 1e-4 from two calls).
* The network takes `timestep = t.expand(B)`, or, for `expand_timesteps` pipelines (Wan 2.2 TI2V), t per
  2x2 latent patch; its output is the flow velocity. The scheduler is the pipeline's (UniPC on flow sigmas, or a
  student's FlowMatch Euler), whose `set_timesteps(n)` the pipeline calls: explicit timesteps are lightx2v's
  `denoising_step_list` (unshifted; the scheduler's shift applies, as in lightx2v's and ModelTC's Euler schedulers).
* Wan 2.2 A14B holds two experts: `transformer` runs every step with t >= boundary_ratio * num_train_timesteps
  (high noise) at `guidance_scale`, `transformer_2` the others (low noise) at `guidance_scale_2`. `network(pipe)` is
  then a `WanExperts` module holding both (one object per pair of experts, so LoRA-student pairs stay one network:
  adapter states, offload and thread counts see both experts), and `expert_runs` cuts each stage where the
  pipeline's own rule switches experts, so every step runs the expert, and the guidance scale, the pipeline's would.
* Decode: the per-channel `latents_mean` / `latents_std` de-normalisation, `vae.decode` and
  `video_processor.postprocess_video`: "np" -> [B, F, H, W, 3] in [0, 1], "pil" -> a list of frame lists per clip.
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar

import torch

from divdistill.conditioning import Conditioning, PromptRequest
from divdistill.conventions import FLOW_PREDICTION, FlowConvention
from divdistill.families.base import Family, NetworkInputs, config_problems

#: WanPipeline.__call__'s defaults.
DEFAULT_FRAMES, DEFAULT_HEIGHT, DEFAULT_WIDTH, MAX_SEQUENCE_LENGTH = 81, 480, 832, 512
EXPAND = "expand_timesteps"


class WanFlowConvention(FlowConvention):
    """Flow latents (`FlowConvention`); x0-hat at the scheduler's own sigma for t, since UniPC's integer timesteps
    are sigma * 1000 floored (t / 1000 would be off by up to 1e-3)."""

    def x0(self, result, output, prediction_type, model_input, scheduler, t):
        sigmas, timesteps = getattr(scheduler, "sigmas", None), getattr(scheduler, "timesteps", None)
        at = (timesteps == t).nonzero() if timesteps is not None else None
        if sigmas is None or at is None or not len(at):
            return super().x0(result, output, prediction_type, model_input, scheduler, t)
        sigma = sigmas[int(at[0])].float().to(model_input.device)
        return (model_input.float() - sigma * output.float()).to(output.dtype)


WAN_FLOW = WanFlowConvention()


class WanExperts(torch.nn.Module):
    """Wan 2.2's high-noise `transformer` and low-noise `transformer_2` as one network: `expert_for(t)` is the
    pipeline's rule (`transformer` when t >= boundary), `forward` calls that expert. Its config is the first
    expert's (both share the architecture)."""

    def __init__(self, transformer: torch.nn.Module, transformer_2: torch.nn.Module, boundary: float) -> None:
        super().__init__()
        self.transformer, self.transformer_2, self.boundary = transformer, transformer_2, float(boundary)

    @property
    def config(self) -> Any:
        return self.transformer.config

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    def expert_for(self, t: torch.Tensor | float) -> int:
        return 0 if t >= self.boundary else 1

    def experts(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return self.transformer, self.transformer_2

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, **kwargs: Any) -> Any:
        expert = self.experts()[self.expert_for(timestep.flatten()[0])]
        return expert(hidden_states=hidden_states, timestep=timestep, **kwargs)


#: One WanExperts per (transformer, transformer_2, boundary): pipelines built from the same components share it.
_EXPERTS: weakref.WeakValueDictionary[tuple[int, int, float], WanExperts] = weakref.WeakValueDictionary()


def nearest_frame_counts(num_frames: int, factor: int) -> tuple[int, ...]:
    """The valid frame counts (k * factor + 1) next to `num_frames`."""
    lower = max(1, (num_frames - 1) // factor * factor + 1)
    return (lower,) if lower == num_frames else tuple(n for n in (lower, lower + factor) if n >= 1)


class WanFamily(Family):
    """Wan 2.1 (one transformer) and Wan 2.2 A14B (two experts) `WanPipeline`s and their LoRA students."""

    name = "wan"
    pipeline_class = "WanPipeline"
    network_class = "WanTransformer3DModel"
    network_component = "transformer"
    network_label = "transformer"
    convention = WAN_FLOW
    video = True
    pipeline_config: ClassVar[tuple[str, ...]] = ("boundary_ratio", EXPAND)

    def matches(self, pipe: Any) -> bool:
        """Text-to-video Wan pipelines: the I2V, VACE and Animate ones share the network but take images too."""
        names = {cls.__name__ for cls in type(pipe).__mro__}
        network = getattr(pipe, "transformer", None) or getattr(pipe, "transformer_2", None)
        return self.owns_network(network) and self.pipeline_class in names

    # ------------------------------------------------------------------------------------------- experts
    def boundary(self, pipe: Any) -> float | None:
        """WanPipeline's `boundary_ratio * num_train_timesteps` (None: one transformer runs every step)."""
        ratio = pipe.config.get("boundary_ratio")
        if ratio is None or getattr(pipe, "transformer_2", None) is None or pipe.transformer is None:
            return None
        return ratio * pipe.scheduler.config.num_train_timesteps

    def network(self, pipe: Any) -> torch.nn.Module:
        boundary = self.boundary(pipe)
        if boundary is None:
            return pipe.transformer if pipe.transformer is not None else pipe.transformer_2
        key = (id(pipe.transformer), id(pipe.transformer_2), boundary)
        experts = _EXPERTS.get(key)
        if experts is None:
            experts = _EXPERTS[key] = WanExperts(pipe.transformer, pipe.transformer_2, boundary)
        pipe.__dict__["_divdistill_experts"] = experts  # alive as long as a pipeline holds it
        return experts

    def experts(self, pipe: Any) -> tuple[torch.nn.Module, ...]:
        network = self.network(pipe)
        return network.experts() if isinstance(network, WanExperts) else (network,)

    def expert_runs(self, pipe: Any, timesteps: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        network = self.network(pipe)
        if not isinstance(network, WanExperts) or not len(timesteps):
            return [(0, timesteps)]
        runs: list[tuple[int, torch.Tensor]] = []
        start = 0
        for i in range(1, len(timesteps) + 1):
            if i == len(timesteps) or network.expert_for(timesteps[i]) != network.expert_for(timesteps[start]):
                runs.append((network.expert_for(timesteps[start]), timesteps[start:i]))
                start = i
        return runs

    def expert_lora_kwargs(self, index: int) -> dict[str, Any]:
        """`load_lora_weights(..., load_into_transformer_2=True)` loads into `transformer_2` (diffusers' Wan docs)."""
        return {"load_into_transformer_2": True} if index == 1 else {}

    # ------------------------------------------------------------------------------------------- prompts
    def encode(self, pipe: Any, request: PromptRequest) -> Conditioning:
        embeds, negative = pipe.encode_prompt(
            prompt=request.prompts,
            negative_prompt=request.negative_prompts,  # None: the pipeline's "" negative prompt
            do_classifier_free_guidance=request.with_negative,
            num_videos_per_prompt=request.num_images_per_prompt,
            max_sequence_length=request.max_sequence_length or MAX_SEQUENCE_LENGTH,
            device=request.device,
        )
        dtype = self.network(pipe).dtype  # the pipeline's `prompt_embeds.to(transformer_dtype)`
        return Conditioning(hidden_states=embeds.to(dtype),
                            negative_hidden_states=negative.to(dtype) if request.with_negative else None,
                            extra={EXPAND: torch.ones(())} if pipe.config.get(EXPAND) else {})  # fmt: skip

    def embeds_guidance(self, network) -> bool:
        return False

    def prediction_type(self, pipe: Any) -> str:
        return FLOW_PREDICTION

    def forward(self, network, x, t, inputs: NetworkInputs):
        batch = x.shape[0]
        if EXPAND in inputs.extra:  # WanPipeline: (mask[0][0][:, ::2, ::2] * t).flatten(), per sample
            timestep = (torch.ones(x.shape[2:], dtype=torch.float32, device=x.device)[:, ::2, ::2] * t).flatten()
            timestep = timestep.unsqueeze(0).expand(batch, -1)
        else:
            timestep = t.expand(batch)
        return network(
            hidden_states=x.to(network.dtype),
            timestep=timestep,
            encoder_hidden_states=inputs.hidden_states,
            attention_kwargs=inputs.attention_kwargs,
            return_dict=False,
        )[0]

    def set_schedule(self, pipe, scheduler, num_inference_steps, timesteps, device, latent_shape):
        """`set_timesteps(n)` as WanPipeline calls it; explicit timesteps as lightx2v's `denoising_step_list`:
        sigmas t / 1000 that the scheduler shifts (FlowMatch Euler at shift 5: 1000, 750, 500, 250 -> sigmas 1,
        0.9375, 0.8333, 0.625, Wan2.2-Lightning's trained timesteps)."""
        if timesteps is None:
            scheduler.set_timesteps(num_inference_steps, device=device)
        else:
            sigmas = [float(t) / scheduler.config.num_train_timesteps for t in timesteps]
            scheduler.set_timesteps(sigmas=sigmas, device=device)
        return scheduler.timesteps

    # ------------------------------------------------------------------------------------------- shapes
    def default_num_frames(self, pipe: Any) -> int | None:
        return DEFAULT_FRAMES

    def default_height_width(self, pipe: Any) -> tuple[int, int]:
        return DEFAULT_HEIGHT, DEFAULT_WIDTH

    def default_size(self, pipe: Any) -> int:
        return DEFAULT_HEIGHT

    def latent_dtype(self, pipe: Any, text_dtype: torch.dtype) -> torch.dtype:
        return torch.float32  # prepare_latents(..., torch.float32): the scheduler steps in float32

    def latent_shape(self, pipe, batch_size, height, width):
        return self.sample_shape(pipe, batch_size, height, width, DEFAULT_FRAMES)

    def sample_shape(self, pipe, batch_size, height, width, num_frames=None):
        frames = DEFAULT_FRAMES if num_frames is None else int(num_frames)
        factor = pipe.vae_scale_factor_temporal
        if frames < 1 or (frames - 1) % factor:
            counts = " or ".join(str(n) for n in nearest_frame_counts(max(frames, 1), factor))
            raise ValueError(
                f"num_frames must be {factor}k + 1 for Wan's VAE (temporal factor {factor}), got {frames}; "
                f"the nearest valid counts are {counts}."
            )
        spatial = pipe.vae_scale_factor_spatial
        multiple = spatial * self.network(pipe).config.patch_size[1]
        if height % multiple or width % multiple:
            raise ValueError(
                f"height and width must be multiples of {multiple} for Wan (VAE factor {spatial} x 2x2 patches), "
                f"got {height}x{width}; e.g. {height // multiple * multiple or multiple}x"
                f"{width // multiple * multiple or multiple}."
            )
        channels = self.network(pipe).config.in_channels
        return (batch_size, channels, (frames - 1) // factor + 1, height // spatial, width // spatial)

    # Copied from diffusers.pipelines.wan.pipeline_wan.WanPipeline.__call__ (decode tail)
    def decode(self, pipe, latents, output_type, size=None):
        vae = pipe.vae
        latents = latents.to(vae.device, dtype=vae.dtype)
        z_dim = vae.config.z_dim
        mean = torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        video = vae.decode(latents / std + mean, return_dict=False)[0]
        return pipe.video_processor.postprocess_video(video, output_type=output_type)

    def pair_problems(self, base, distilled):
        keys = ("in_channels", "out_channels", "patch_size", "text_dim")
        problems = config_problems("transformer", self.network(base), self.network(distilled), keys)
        if (self.boundary(base) is None) != (self.boundary(distilled) is None):
            problems.append("one pipeline has two experts (Wan 2.2) and the other one transformer")
        if base.vae is not distilled.vae:
            vae_keys = ("z_dim", "latents_mean", "latents_std", "scale_factor_temporal", "scale_factor_spatial")
            problems += config_problems("VAE", base.vae, distilled.vae, vae_keys)
        return problems
