"""Qwen-Image: a Qwen2.5-VL prompt encoder, an MMDiT on 2x2-packed 16-channel latents, flow matching.

What is particular to it, all read from diffusers' `QwenImagePipeline`:

* Prompts go through a chat template; the encoder's last hidden states are cut to each prompt's own tokens
  (`encode_prompt`), so prompts of a batch are padded to the longest with a mask, and the mask is dropped when
  nothing is padded. Classifier-free guidance ("true CFG", `true_cfg_scale`) runs the negative prompt (" " by
  default, the model card's) as a second call; divdistill batches both branches in one call, padding the shorter
  text to the longer one under the mask the transformer takes (attention ignores it: <= 1e-6 from two calls).
* The guided output is rescaled to the conditional output's norm per token (`combine_guidance`), over the packed
  token's 4C channels, exactly as the pipeline does after `neg + s (cond - neg)`.
* The schedule is FLUX's `sigmas = linspace(1, 1/N, N)` with a resolution-dependent `mu`, but the scheduler shifts
  with `time_shift_type="exponential"` and stretches the grid to `shift_terminal` (0.02): the scheduler's own
  `set_timesteps` does both (`FlowFamily.set_schedule`). Qwen-Image-Lightning (a LoRA student) samples with the
  same scheduler class at a fixed shift of 3 (base_shift = max_shift = log 3) and no terminal stretch.
* Latents: the VAE is a video VAE (B, C, 1, H, W), normalised by per-channel `latents_mean` / `latents_std`.
  divdistill keeps them as (B, C, H, W) between steps and packs them only around the network call (a permutation;
  the Euler step is elementwise), so the numbers are the pipeline's and trajectories decode like every family's.
"""

from __future__ import annotations

from typing import Any

import torch

from divdistill.conditioning import Conditioning, PromptRequest
from divdistill.families.base import NetworkInputs, config_problems, vae_problems
from divdistill.families.transformer import PackedFlowFamily

#: The negative prompt Qwen-Image's model card passes to switch true CFG on ("using an empty string if you do
#: not have specific concept to remove"; the pipeline needs one to run CFG at all).
DEFAULT_NEGATIVE = " "
MASK = "encoder_hidden_states_mask"


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): `QwenImagePipeline._pack_latents`."""
    from diffusers import QwenImagePipeline

    b, c, h, w = latents.shape
    return QwenImagePipeline._pack_latents(latents, b, c, h, w)


def unpack(packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `pack` for a (height, width) latent (`_unpack_latents` with a VAE factor of 1, frame dim dropped)."""
    from diffusers import QwenImagePipeline

    return QwenImagePipeline._unpack_latents(packed, height, width, 1)[:, :, 0]


def _padded(embeds: torch.Tensor, mask: torch.Tensor | None, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings zero-padded to `length` tokens with their (long) mask: ones on the prompt's own tokens."""
    batch, own = embeds.shape[:2]
    if mask is None:
        mask = torch.ones(batch, own, dtype=torch.long, device=embeds.device)
    pad = length - own
    embeds = torch.cat([embeds, embeds.new_zeros(batch, pad, embeds.shape[-1])], dim=1)
    mask = torch.cat([mask.long(), mask.new_zeros(batch, pad, dtype=torch.long)], dim=1)
    return embeds, mask


class QwenImageFamily(PackedFlowFamily):
    """Qwen-Image (and its LoRA students, e.g. Qwen-Image-Lightning): Qwen2.5-VL prompts, true CFG or none."""

    name = "qwen-image"
    pipeline_class = "QwenImagePipeline"
    network_class = "QwenImageTransformer2DModel"
    display_name = "Qwen-Image"

    def matches(self, pipe: Any) -> bool:
        """Text-to-image Qwen pipelines: the edit / layered ones share the network but take images too."""
        names = {cls.__name__ for cls in type(pipe).__mro__}
        return self.owns_network(getattr(pipe, "transformer", None)) and self.pipeline_class in names

    def encode(self, pipe, request: PromptRequest):
        length = request.max_sequence_length or 512  # QwenImagePipeline.__call__'s default

        def encode(prompts: list[str]):
            return pipe.encode_prompt(
                prompt=prompts,
                device=request.device,
                num_images_per_prompt=request.num_images_per_prompt,
                max_sequence_length=length,
            )

        embeds, mask = encode(request.prompts)
        if not request.with_negative:
            return Conditioning(hidden_states=embeds, added={MASK: mask} if mask is not None else None)
        negatives = request.negative_prompts or [DEFAULT_NEGATIVE] * len(request.prompts)
        negative, negative_mask = encode(negatives)
        common = max(embeds.shape[1], negative.shape[1])
        embeds, mask = _padded(embeds, mask, common)
        negative, negative_mask = _padded(negative, negative_mask, common)
        return Conditioning(
            hidden_states=embeds,
            negative_hidden_states=negative,
            added={MASK: mask},
            negative_added={MASK: negative_mask},
        )

    def forward(self, network, x, t, inputs: NetworkInputs):
        batch, _, height, width = x.shape
        timestep = t.expand(batch).to(x.dtype)
        output = network(
            hidden_states=pack(x),
            timestep=timestep / 1000,
            guidance=None,
            encoder_hidden_states_mask=(inputs.added or {}).get(MASK),
            encoder_hidden_states=inputs.hidden_states,
            img_shapes=[[(1, height // 2, width // 2)]] * batch,
            attention_kwargs=inputs.attention_kwargs or {},
            return_dict=False,
        )[0]
        return unpack(output, height, width)

    def combine_guidance(self, uncond, cond, scale):
        """QwenImagePipeline's true CFG: `neg + s (cond - neg)`, rescaled per packed token to the norm of `cond`."""
        height, width = cond.shape[-2:]
        combined = pack(uncond + scale * (cond - uncond))
        cond_norm = torch.norm(pack(cond), dim=-1, keepdim=True)
        noise_norm = torch.norm(combined, dim=-1, keepdim=True)
        return unpack(combined * (cond_norm / noise_norm), height, width)

    def default_size(self, pipe):
        return pipe.default_sample_size * pipe.vae_scale_factor

    # Copied from diffusers.pipelines.qwenimage.pipeline_qwenimage.QwenImagePipeline.__call__ (decode tail)
    def decode(self, pipe, latents, output_type, size=None):
        vae = pipe.vae
        latents = latents[:, :, None].to(vae.dtype)
        z_dim = vae.config.z_dim
        mean = torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        image = vae.decode(latents / std + mean, return_dict=False)[0][:, :, 0]
        return pipe.image_processor.postprocess(image, output_type=output_type)

    def pair_problems(self, base, distilled):
        keys = ("in_channels", "out_channels", "patch_size", "joint_attention_dim", "axes_dims_rope")
        return (
            config_problems("transformer", base.transformer, distilled.transformer, keys)
            + vae_problems(base, distilled)
            + ([] if base.vae is distilled.vae else config_problems("VAE", base.vae, distilled.vae, ("z_dim",)))
        )
