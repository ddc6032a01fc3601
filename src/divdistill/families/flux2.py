"""FLUX.2 [klein]: the base (`FLUX.2-klein-base-*`) and the 4-step distilled model share one architecture.

Both are `Flux2KleinPipeline`s: a Qwen3 text encoder (three hidden layers stacked), a `Flux2Transformer2DModel`
on 2x2-patchified, batch-normalised latents with 4-axis rotary ids, and flow matching on a sigma grid shifted by
an empirical `mu` that depends on the token count *and the step count* (`compute_empirical_mu`). The base runs
true CFG (two calls, an empty negative prompt); the distilled model takes no guidance (`is_distilled`, scale 1).

Latent convention: divdistill keeps the patchified latent (B, 4C, H/16, W/16) that `prepare_latents` draws
(the same `randn_tensor` shape), and packs it into tokens (`_pack_latents`, a permutation) only around the
network call; the Euler step is elementwise, so the numbers are the pipeline's. `output_type="latent"` therefore
returns this (B, 4C, h, w) latent, not the pipeline's unpatchified, de-normalised one; `decode` does that part.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from divdistill.conditioning import Conditioning, PromptRequest
from divdistill.families.base import NetworkInputs, config_problems
from divdistill.families.transformer import FlowFamily


def _klein() -> Any:
    from diffusers import Flux2KleinPipeline

    return Flux2KleinPipeline


class Flux2KleinFamily(FlowFamily):
    """FLUX.2 [klein] base / distilled (4B, 9B): Qwen3 prompts, patchified latents, true CFG or none."""

    name = "flux2"
    pipeline_class = "Flux2KleinPipeline"
    network_class = "Flux2Transformer2DModel"
    default_sample_size = 128  # Flux2KleinPipeline.default_sample_size (1024 px with the 8x VAE)

    def matches(self, pipe: Any) -> bool:
        """Klein pipelines only: FLUX.2 [dev] (`Flux2Pipeline`) has the same network class but a Mistral encoder."""
        names = {cls.__name__ for cls in type(pipe).__mro__}
        return self.owns_network(getattr(pipe, "transformer", None)) and self.pipeline_class in names

    def embeds_guidance(self, network) -> bool:
        return bool(getattr(network.config, "guidance_embeds", False))

    def encode(self, pipe, request: PromptRequest):
        length = request.max_sequence_length or 512

        def encode(prompts: list[str]):
            return pipe.encode_prompt(
                prompt=prompts,
                device=request.device,
                num_images_per_prompt=request.num_images_per_prompt,
                max_sequence_length=length,
            )

        embeds, text_ids = encode(request.prompts)
        negative = None
        if request.with_negative:  # Flux2KleinPipeline's true CFG: an empty negative prompt
            negatives = request.negative_prompts or [""] * len(request.prompts)
            negative, _ = encode(negatives)  # same length, so the same text ids
        return Conditioning(hidden_states=embeds, negative_hidden_states=negative, extra={"txt_ids": text_ids[:1]})

    def forward(self, network, x, t, inputs: NetworkInputs):
        klein = _klein()
        batch, channels, height, width = x.shape
        ids = klein._prepare_latent_ids(x[:1]).to(x.device)
        timestep = t.expand(batch).to(x.dtype)
        output = network(
            hidden_states=klein._pack_latents(x).to(network.dtype),
            timestep=timestep / 1000,
            guidance=None,
            encoder_hidden_states=inputs.hidden_states,
            txt_ids=inputs.extra["txt_ids"],
            img_ids=ids,
            joint_attention_kwargs=inputs.attention_kwargs,
            return_dict=False,
        )[0]
        output = output[:, : height * width]
        return output.permute(0, 2, 1).reshape(batch, channels, height, width)

    def latent_shape(self, pipe, batch_size, height, width):
        factor = pipe.vae_scale_factor * 2
        if height % factor or width % factor:
            raise ValueError(f"FLUX.2 needs height and width divisible by {factor}; got {height}x{width}.")
        return (batch_size, self.network(pipe).config.in_channels, height // factor, width // factor)

    def image_seq_len(self, pipe, latent_shape):
        return latent_shape[-2] * latent_shape[-1]

    def default_size(self, pipe):
        return self.default_sample_size * pipe.vae_scale_factor

    def set_schedule(self, pipe, scheduler, num_inference_steps, timesteps, device, latent_shape):
        """Flux2KleinPipeline's grid: linspace(1, 1/n, n) shifted by `compute_empirical_mu(tokens, n)`."""
        if timesteps is not None:
            return super().set_schedule(pipe, scheduler, num_inference_steps, timesteps, device, latent_shape)
        from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        if scheduler.config.get("use_flow_sigmas", False):
            sigmas = None
        mu = compute_empirical_mu(image_seq_len=self.image_seq_len(pipe, latent_shape), num_steps=num_inference_steps)
        if sigmas is None:
            scheduler.set_timesteps(num_inference_steps, device=device, mu=mu)
        else:
            scheduler.set_timesteps(sigmas=sigmas, device=device, mu=mu)
        return scheduler.timesteps

    def decode(self, pipe, latents, output_type, size=None):
        """The pipeline's tail: undo the VAE's batch norm, unpatchify, decode, postprocess."""
        vae = pipe.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(
            latents.device, latents.dtype
        )
        latents = _klein()._unpatchify_latents(latents * std + mean)
        image = vae.decode(latents.to(device=vae.device, dtype=vae.dtype), return_dict=False)[0]
        return pipe.image_processor.postprocess(image, output_type=output_type)

    def pair_problems(self, base, distilled):
        keys = ("in_channels", "patch_size", "joint_attention_dim", "axes_dims_rope", "attention_head_dim")
        problems = config_problems("transformer", base.transformer, distilled.transformer, keys)
        if base.vae is not distilled.vae:
            problems += config_problems("VAE", base.vae, distilled.vae, ("latent_channels", "patch_size"))
        return problems
