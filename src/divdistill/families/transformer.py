"""Diffusion-transformer families: PixArt (DiT on VP latents), SD3 and FLUX (flow matching).

As for the UNet families, prompts are encoded and images decoded by the pipelines' own methods, and the
network is called exactly as the diffusers pipeline calls it, so a divdistill run equals the pipeline it
stands in for. What differs between them lives here:

* PixArt predicts epsilon and a learned variance (the second half of its output channels, dropped as the
  pipeline does), takes T5 embeddings with their attention mask and, for the 1024 px models, resolution and
  aspect-ratio micro-conditions. Its latents are VP, so every scheduler and hand-off of SD/SDXL applies.
* SD3 predicts a flow velocity from two CLIP encoders plus T5 (pooled projections) with CFG.
* FLUX predicts a flow velocity on 2x2-packed latents with rotary position ids; FLUX.1-dev is guidance
  distilled (the scale is an input embedding, no CFG), FLUX.1-schnell takes no guidance. Its schedule
  shifts with the image's token count (`mu`). divdistill keeps FLUX latents unpacked (B, C, H, W) between
  steps and packs them only around the network call: packing is a permutation and the Euler step is
  elementwise, so the numbers are the pipeline's, and trajectories decode like every other family's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from divdistill.conditioning import Conditioning, PromptRequest
from divdistill.conventions import FLOW, FLOW_PREDICTION, exact_sigma_scheduler
from divdistill.families.base import (
    Family,
    KohyaConversion,
    NetworkInputs,
    SliderTraining,
    config_problems,
    vae_problems,
)


def _decode_shifted(pipe: Any, latents: torch.Tensor, output_type: str) -> Any:
    """SD3 / FLUX decode tail: undo the VAE's scale and shift, decode, postprocess."""
    vae = pipe.vae
    latents = latents / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
    image = vae.decode(latents.to(device=vae.device, dtype=vae.dtype), return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type=output_type)


# ------------------------------------------------------------------------------------------------- PixArt
def _aspect_ratio_bins(sample_size: int) -> dict | None:
    """PixArt's aspect-ratio bins for a transformer's sample size (None: sizes without bins are used as given)."""
    from diffusers.pipelines.pixart_alpha import pipeline_pixart_alpha as pixart

    return {
        128: pixart.ASPECT_RATIO_1024_BIN,
        64: pixart.ASPECT_RATIO_512_BIN,
        32: pixart.ASPECT_RATIO_256_BIN,
    }.get(sample_size)


class PixArtFamily(Family):
    """PixArt-alpha / PixArt-LCM (PixArt-delta) / PixArt-Sigma: T5 captions, DiT with adaLN-single."""

    name = "pixart"
    pipeline_class = "PixArtAlphaPipeline"
    network_class = "PixArtTransformer2DModel"
    network_component = "transformer"
    network_label = "transformer"
    supports_resolution_binning = True
    #: Sliders train the DiT blocks' linears as the UNet recipe trains its transformer blocks' (self-attention
    #: attn1, cross-attention attn2 to the T5 caption, feed-forward ff): "noxattn" leaves attn2 out.
    slider = SliderTraining(blocks=("BasicTransformerBlock",))

    def matches(self, pipe: Any) -> bool:
        return self.owns_network(getattr(pipe, "transformer", None))

    def encode(self, pipe, request: PromptRequest):
        embeds, mask, negative, negative_mask = pipe.encode_prompt(
            request.prompts,
            request.with_negative,
            negative_prompt=request.negative_prompts if request.negative_prompts is not None else "",
            num_images_per_prompt=request.num_images_per_prompt,
            device=request.device,
            clean_caption=False,
            max_sequence_length=request.max_sequence_length or 120,
        )
        added = {"encoder_attention_mask": mask}
        if pipe.transformer.config.sample_size == 128:  # the 1024 px models' micro-conditions
            batch = embeds.shape[0]
            height, width, device = request.height, request.width, request.device
            added["resolution"] = torch.tensor([height, width]).repeat(batch, 1).to(device, embeds.dtype)
            added["aspect_ratio"] = torch.tensor([float(height / width)]).repeat(batch, 1).to(device, embeds.dtype)
        negative_added = None
        if request.with_negative:
            negative_added = {**added, "encoder_attention_mask": negative_mask}
        return Conditioning(
            hidden_states=embeds,
            negative_hidden_states=negative if request.with_negative else None,
            added=added,
            negative_added=negative_added,
        )

    def forward(self, network, x, t, inputs: NetworkInputs):
        added = inputs.added or {}
        timestep = torch.as_tensor(t, device=x.device)
        timestep = (timestep[None] if timestep.ndim == 0 else timestep).expand(x.shape[0])
        output = network(
            x,
            encoder_hidden_states=inputs.hidden_states,
            encoder_attention_mask=added.get("encoder_attention_mask"),
            timestep=timestep,
            added_cond_kwargs={"resolution": added.get("resolution"), "aspect_ratio": added.get("aspect_ratio")},
            return_dict=False,
        )[0]
        if network.config.out_channels // 2 == x.shape[1]:  # learned sigma: keep the epsilon half
            output = output.chunk(2, dim=1)[0]
        return output

    def pair_problems(self, base, distilled):
        keys = ("in_channels", "out_channels", "caption_channels", "patch_size", "sample_size")
        return config_problems("transformer", base.transformer, distilled.transformer, keys) + vae_problems(
            base, distilled
        )

    def sampling_size(self, pipe, height, width, binning=False):
        """PixArtAlphaPipeline's `use_resolution_binning`: the nearest aspect-ratio bin the model was trained on."""
        bins = _aspect_ratio_bins(pipe.transformer.config.sample_size) if binning else None
        if bins is None:
            return height, width
        binned = pipe.image_processor.classify_height_width_bin(height, width, ratios=bins)
        return int(binned[0]), int(binned[1])

    def decode(self, pipe, latents, output_type, size=None):
        vae = pipe.vae
        image = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype), return_dict=False)[0]
        if size is not None and tuple(image.shape[-2:]) != tuple(size):  # binned: back to the requested size
            image = pipe.image_processor.resize_and_crop_tensor(image, size[1], size[0])
        return pipe.image_processor.postprocess(image, output_type=output_type)


# ------------------------------------------------------------------------------------------- flow families
class FlowFamily(Family):
    """What SD3 and FLUX share: flow-matching latents, velocity prediction, shifted sigma schedules."""

    convention = FLOW
    network_component = "transformer"
    network_label = "transformer"

    def matches(self, pipe: Any) -> bool:
        return self.owns_network(getattr(pipe, "transformer", None))

    def prediction_type(self, pipe: Any) -> str:
        return FLOW_PREDICTION

    def decode(self, pipe, latents, output_type, size=None):
        return _decode_shifted(pipe, latents, output_type)

    def image_seq_len(self, pipe: Any, latent_shape: tuple[int, ...]) -> int:
        """Number of image tokens the network sees (what the resolution-dependent shift depends on)."""
        patch = self.network(pipe).config.patch_size
        return (latent_shape[-2] // patch) * (latent_shape[-1] // patch)

    def default_sigmas(self, num_inference_steps: int) -> list[float] | None:
        """Unshifted sigmas the pipeline passes to `set_timesteps` (None: the scheduler's own default)."""
        return None

    def mu(self, pipe: Any, scheduler: Any, latent_shape: tuple[int, ...]) -> float:
        """The resolution-dependent shift parameter, as the diffusers pipelines compute it."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        config = scheduler.config
        return calculate_shift(
            self.image_seq_len(pipe, latent_shape),
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )

    def set_schedule(self, pipe, scheduler, num_inference_steps, timesteps, device, latent_shape):
        """The pipeline's own schedule; explicit `timesteps` are taken literally (sigma = t / 1000, no shift)."""
        if timesteps is not None:
            config = scheduler.config
            sigmas = [float(t) / config.num_train_timesteps for t in timesteps]
            exact = exact_sigma_scheduler(config, sigmas, device)
            scheduler.timesteps, scheduler.sigmas = exact.timesteps, exact.sigmas
            scheduler.num_inference_steps = len(sigmas)
            scheduler._step_index, scheduler._begin_index = None, None
            return scheduler.timesteps
        kwargs: dict[str, Any] = {}
        if scheduler.config.get("use_dynamic_shifting", False):
            kwargs["mu"] = self.mu(pipe, scheduler, latent_shape)
        sigmas = self.default_sigmas(num_inference_steps)
        if sigmas is not None:
            kwargs["sigmas"] = sigmas
            scheduler.set_timesteps(device=device, **kwargs)
        else:
            scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)
        return scheduler.timesteps


class SD3Family(FlowFamily):
    """Stable Diffusion 3 / 3.5: CLIP-L, CLIP-G and T5 text encoders, MMDiT, flow matching with CFG."""

    name = "sd3"
    pipeline_class = "StableDiffusion3Pipeline"
    network_class = "SD3Transformer2DModel"
    text_encoders = ("text_encoder", "text_encoder_2", "text_encoder_3")
    tokenizers = ("tokenizer", "tokenizer_2", "tokenizer_3")
    #: Sliders train every joint-attention linear of the MMDiT blocks (image and text projections, SD3.5's extra
    #: image self-attention attn2 included), as the FLUX slider reference trains FLUX's (see FluxFamily).
    slider = SliderTraining(blocks=("Attention",), cross_attention=(), self_attention=())

    def encode(self, pipe, request: PromptRequest):
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=request.prompts,
            prompt_2=None,
            prompt_3=None,
            device=request.device,
            num_images_per_prompt=request.num_images_per_prompt,
            do_classifier_free_guidance=request.with_negative,
            negative_prompt=request.negative_prompts,
            max_sequence_length=request.max_sequence_length or 256,
        )
        return Conditioning(
            hidden_states=embeds,
            negative_hidden_states=negative if request.with_negative else None,
            added={"pooled_projections": pooled},
            negative_added={"pooled_projections": negative_pooled} if request.with_negative else None,
        )

    def forward(self, network, x, t, inputs: NetworkInputs):
        return network(
            hidden_states=x,
            timestep=t.expand(x.shape[0]),
            encoder_hidden_states=inputs.hidden_states,
            pooled_projections=inputs.added["pooled_projections"],
            joint_attention_kwargs=inputs.attention_kwargs,
            return_dict=False,
        )[0]

    def pair_problems(self, base, distilled):
        keys = ("in_channels", "out_channels", "patch_size", "joint_attention_dim", "pooled_projection_dim")
        return config_problems("transformer", base.transformer, distilled.transformer, keys) + vae_problems(
            base, distilled
        )


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): diffusers' `FluxPipeline._pack_latents`."""
    from diffusers import FluxPipeline

    b, c, h, w = latents.shape
    return FluxPipeline._pack_latents(latents, b, c, h, w)


def unpack_latents(packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `pack_latents` for a (height, width) latent: `FluxPipeline._unpack_latents`, which takes the
    image size in pixels (a latent's size with a VAE factor of 1)."""
    from diffusers import FluxPipeline

    return FluxPipeline._unpack_latents(packed, height, width, 1)


def latent_image_ids(height: int, width: int, device, dtype) -> torch.Tensor:
    """FLUX's rotary position ids of a (height, width) latent's 2x2 patches (FluxPipeline._prepare_latent_image_ids)."""
    from diffusers import FluxPipeline

    return FluxPipeline._prepare_latent_image_ids(None, height // 2, width // 2, device, dtype)


class PackedFlowFamily(FlowFamily):
    """Flow families whose transformer sees 2x2-packed latent tokens (FLUX.1, Qwen-Image): latents stay (B, C, H, W)
    between steps, and the schedule's resolution shift counts the packed tokens."""

    #: The family's name in messages ("FLUX needs height and width divisible by 16").
    display_name = "FLUX"

    def latent_shape(self, pipe, batch_size, height, width):
        factor = pipe.vae_scale_factor * 2
        if height % factor or width % factor:
            raise ValueError(f"{self.display_name} needs height and width divisible by {factor}; got {height}x{width}.")
        channels = self.network(pipe).config.in_channels // 4
        return (batch_size, channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)

    def image_seq_len(self, pipe, latent_shape):
        return (latent_shape[-2] // 2) * (latent_shape[-1] // 2)

    def default_sigmas(self, num_inference_steps):
        return list(np.linspace(1.0, 1 / num_inference_steps, num_inference_steps))


class FluxFamily(PackedFlowFamily):
    """FLUX.1 dev / schnell: CLIP-L (pooled) and T5, MMDiT on packed latents, guidance as an embedding."""

    name = "flux"
    pipeline_class = "FluxPipeline"
    network_class = "FluxTransformer2DModel"
    text_encoders = ("text_encoder", "text_encoder_2")
    tokenizers = ("tokenizer", "tokenizer_2")
    #: kohya FLUX files name Black Forest Labs' modules with fused qkv: diffusers' converter splits the tensors.
    kohya = KohyaConversion("FluxPipeline", rewrites_tensors=True)
    #: Sliders train every attention linear of the double- and single-stream blocks, nothing else: the modules
    #: rohitgandikota/sliders' flux-sliders LoRANetwork wraps (class Attention, now FluxAttention; "xattn").
    slider = SliderTraining(blocks=("FluxAttention",), cross_attention=(), self_attention=())
    default_sample_size = 128  # FluxPipeline: 128 latent pixels, i.e. 1024 px with the 8x VAE

    def embeds_guidance(self, network) -> bool:
        return bool(getattr(network.config, "guidance_embeds", False))

    def guidance_inputs(self, network, guidance_scale, batch_size, device, dtype):
        return {"guidance": torch.full([1], guidance_scale, device=device, dtype=torch.float32)}

    def encode(self, pipe, request: PromptRequest):
        length = request.max_sequence_length or 512
        embeds, pooled, text_ids = pipe.encode_prompt(
            prompt=request.prompts,
            prompt_2=None,
            device=request.device,
            num_images_per_prompt=request.num_images_per_prompt,
            max_sequence_length=length,
        )
        negative = negative_pooled = None
        if request.with_negative:  # FluxPipeline's "true CFG", with an empty negative prompt by default
            negatives = (
                request.negative_prompts if request.negative_prompts is not None else [""] * len(request.prompts)
            )
            negative, negative_pooled, _ = pipe.encode_prompt(
                prompt=negatives,
                prompt_2=None,
                device=request.device,
                num_images_per_prompt=request.num_images_per_prompt,
                max_sequence_length=length,
            )
        return Conditioning(
            hidden_states=embeds,
            negative_hidden_states=negative,
            added={"pooled_projections": pooled},
            negative_added={"pooled_projections": negative_pooled} if request.with_negative else None,
            extra={"txt_ids": text_ids},
        )

    def forward(self, network, x, t, inputs: NetworkInputs):
        height, width = x.shape[-2:]
        guidance = inputs.guidance.get("guidance")
        output = network(
            hidden_states=pack_latents(x),
            timestep=t.expand(x.shape[0]).to(x.dtype) / 1000,
            guidance=guidance.expand(x.shape[0]) if guidance is not None else None,
            pooled_projections=inputs.added["pooled_projections"],
            encoder_hidden_states=inputs.hidden_states,
            txt_ids=inputs.extra["txt_ids"],
            img_ids=latent_image_ids(height, width, x.device, x.dtype),
            joint_attention_kwargs=inputs.attention_kwargs,
            return_dict=False,
        )[0]
        return unpack_latents(output, height, width)

    def default_size(self, pipe):
        return self.default_sample_size * pipe.vae_scale_factor

    def pair_problems(self, base, distilled):
        keys = ("in_channels", "patch_size", "joint_attention_dim", "pooled_projection_dim", "axes_dims_rope")
        return config_problems("transformer", base.transformer, distilled.transformer, keys) + vae_problems(
            base, distilled
        )
