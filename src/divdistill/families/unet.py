"""UNet latent-diffusion families: Stable Diffusion 1.x/2.x and SDXL.

Encoding and decoding call the pipelines' own methods (`encode_prompt`, `_get_add_time_ids`, the VAE and image
processor) so that a divdistill run is numerically the same as the diffusers pipeline it stands in for.
"""

from __future__ import annotations

from typing import Any

import torch

from divdistill.conditioning import Conditioning, PromptRequest
from divdistill.families.base import (
    Family,
    KohyaConversion,
    NetworkInputs,
    SliderTraining,
    config_problems,
    vae_problems,
)


def guidance_embedding(scale: float, batch_size: int, dim: int, device, dtype) -> torch.Tensor:
    """The sinusoidal w-embedding LCM-style networks take as `timestep_cond` (w = guidance_scale - 1), computed by
    diffusers' own `get_guidance_scale_embedding` exactly as LatentConsistencyModelPipeline calls it (the method
    does not use its pipeline)."""
    from diffusers import LatentConsistencyModelPipeline

    w = torch.tensor(float(scale) - 1.0).repeat(batch_size)
    embedding = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)
    return embedding.to(device=device, dtype=dtype)


def _decode_vae(pipe: Any, latents: torch.Tensor, output_type: str, upcast_fp16: bool) -> Any:
    """The decode tail of diffusers' SD/SDXL pipelines (scaling, optional fp32 upcast, postprocess)."""
    vae = pipe.vae
    needs_upcasting = upcast_fp16 and vae.dtype == torch.float16 and vae.config.force_upcast
    if needs_upcasting:
        pipe.upcast_vae()
        latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
    mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
    if mean is not None and std is not None:
        channels = latents.shape[1]
        mean_t = torch.tensor(mean).view(1, channels, 1, 1).to(latents.device, latents.dtype)
        std_t = torch.tensor(std).view(1, channels, 1, 1).to(latents.device, latents.dtype)
        latents = latents * std_t / vae.config.scaling_factor + mean_t
    else:
        latents = latents / vae.config.scaling_factor
    latents = latents.to(device=vae.device, dtype=vae.dtype)
    image = vae.decode(latents, return_dict=False)[0]
    if needs_upcasting:
        vae.to(dtype=torch.float16)
    watermark = getattr(pipe, "watermark", None)
    if watermark is not None:
        image = watermark.apply_watermark(image)
    return pipe.image_processor.postprocess(image, output_type=output_type)


class UNetFamily(Family):
    """What SD and SDXL share: a UNet2DConditionModel called the way diffusers' pipelines call it.

    Sliders train on the blocks the Concept Sliders LoRANetwork wraps; kohya files (Concept Sliders, kohya-ss)
    name diffusers or sgm UNet modules, which diffusers' SD converter renames (it maps SDXL's sgm names too).
    """

    network_class = "UNet2DConditionModel"
    slider = SliderTraining(blocks=("Transformer2DModel",), conv_blocks=("ResnetBlock2D", "Downsample2D", "Upsample2D"))
    kohya = KohyaConversion("StableDiffusionPipeline")

    def guidance_inputs(self, network, guidance_scale, batch_size, device, dtype):
        if not self.embeds_guidance(network):
            return {}
        dim = network.config.time_cond_proj_dim
        return {"timestep_cond": guidance_embedding(guidance_scale, batch_size, dim, device, dtype)}

    def forward(self, network, x, t, inputs: NetworkInputs):
        return network(
            x,
            t,
            encoder_hidden_states=inputs.hidden_states,
            timestep_cond=inputs.guidance.get("timestep_cond"),
            cross_attention_kwargs=inputs.attention_kwargs,
            added_cond_kwargs=inputs.added,
            return_dict=False,
        )[0]


class SDFamily(UNetFamily):
    """Stable Diffusion 1.x / 2.x: one CLIP text encoder, UNet without added conditioning."""

    name = "sd"
    pipeline_class = "StableDiffusionPipeline"

    def matches(self, pipe: Any) -> bool:
        return (
            hasattr(pipe, "unet")
            and hasattr(pipe, "text_encoder")
            and not hasattr(pipe, "text_encoder_2")
            and getattr(pipe.unet.config, "addition_embed_type", None) is None
        )

    def encode(self, pipe, request: PromptRequest):
        positive, negative = pipe.encode_prompt(
            request.prompts,
            request.device,
            request.num_images_per_prompt,
            request.with_negative,
            negative_prompt=request.negative_prompts,
        )
        return Conditioning(hidden_states=positive, negative_hidden_states=negative if request.with_negative else None)

    def pair_problems(self, base, distilled):
        keys = ("in_channels", "out_channels", "cross_attention_dim")
        return config_problems("UNet", base.unet, distilled.unet, keys) + vae_problems(base, distilled)

    def decode(self, pipe, latents, output_type, size=None):
        return _decode_vae(pipe, latents, output_type, upcast_fp16=False)


class SDXLFamily(UNetFamily):
    """SDXL: two CLIP text encoders, pooled text embedding and size/crop ids as added conditioning."""

    name = "sdxl"
    pipeline_class = "StableDiffusionXLPipeline"
    text_encoders = ("text_encoder", "text_encoder_2")
    tokenizers = ("tokenizer", "tokenizer_2")

    def matches(self, pipe: Any) -> bool:
        return hasattr(pipe, "unet") and getattr(pipe.unet.config, "addition_embed_type", None) == "text_time"

    def encode(self, pipe, request: PromptRequest):
        positive, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=request.prompts,
            device=request.device,
            num_images_per_prompt=request.num_images_per_prompt,
            do_classifier_free_guidance=request.with_negative,
            negative_prompt=request.negative_prompts,
        )
        if pipe.text_encoder_2 is None:
            projection_dim = int(pooled.shape[-1])
        else:
            projection_dim = pipe.text_encoder_2.config.projection_dim
        size, device, with_negative = (request.height, request.width), request.device, request.with_negative
        time_ids = pipe._get_add_time_ids(
            size, (0, 0), size, dtype=positive.dtype, text_encoder_projection_dim=projection_dim
        )
        time_ids = time_ids.to(device).repeat(positive.shape[0], 1)
        added = {"text_embeds": pooled.to(device), "time_ids": time_ids}
        negative_added = {"text_embeds": negative_pooled.to(device), "time_ids": time_ids} if with_negative else None
        return Conditioning(
            hidden_states=positive.to(device),
            negative_hidden_states=negative.to(device) if with_negative else None,
            added=added,
            negative_added=negative_added,
        )

    def pair_problems(self, base, distilled):
        keys = (
            "in_channels",
            "out_channels",
            "cross_attention_dim",
            "addition_embed_type",
            "projection_class_embeddings_input_dim",
        )
        return config_problems("UNet", base.unet, distilled.unet, keys) + vae_problems(base, distilled)

    def decode(self, pipe, latents, output_type, size=None):
        return _decode_vae(pipe, latents, output_type, upcast_fp16=True)
