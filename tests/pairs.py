"""Tiny base/distilled pairs and the patched-diffusers reference the hybrid is checked against."""

from __future__ import annotations

import torch
from diffusers import (
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

from divdistill.testing.tiny import perturbed_unet, tiny_sd_components, tiny_sdxl_components

SCHEDULERS = {
    "lcm": lambda config: LCMScheduler.from_config(config),
    "euler": lambda config: EulerDiscreteScheduler.from_config(config, timestep_spacing="trailing"),
    "euler_a": lambda config: EulerAncestralDiscreteScheduler.from_config(config, timestep_spacing="trailing"),
}


def sdxl_pair(scheduler: str = "lcm", lcm_unet: bool = False):
    """(base, distilled) SDXL pipelines sharing encoders and VAE; the distilled UNet is a perturbed copy."""
    components = tiny_sdxl_components(seed=0)
    base = StableDiffusionXLPipeline(**components)
    if lcm_unet:
        unet = tiny_sdxl_components(seed=5, time_cond_proj_dim=256)["unet"]
    else:
        unet = perturbed_unet(components["unet"], seed=1, scale=0.5)
    distilled_components = {
        **components,
        "unet": unet,
        "scheduler": SCHEDULERS[scheduler](components["scheduler"].config),
    }
    distilled = StableDiffusionXLPipeline(**distilled_components)
    for pipe in (base, distilled):
        pipe.set_progress_bar_config(disable=True)
    return base, distilled


def sd_pair(scheduler: str = "euler_a", distilled_prediction: str = "epsilon"):
    components = tiny_sd_components(seed=0)
    base = StableDiffusionPipeline(**components)
    unet = perturbed_unet(components["unet"], seed=1, scale=0.5)
    config = {**components["scheduler"].config, "prediction_type": distilled_prediction}
    distilled = StableDiffusionPipeline(**{**components, "unet": unet, "scheduler": SCHEDULERS[scheduler](config)})
    for pipe in (base, distilled):
        pipe.set_progress_bar_config(disable=True)
    return base, distilled


class BaseForFirstCalls:
    """Patch a distilled diffusers pipeline so its first `k` UNet calls (or `base_calls`, 1-based) run the base UNet.

    This is the contract's reference: same pipeline, scheduler, generator and random draws; only the network
    (and guidance, with the base pipeline's own negative embeddings) differs for the first k calls.
    """

    def __init__(
        self,
        base,
        distilled,
        k: int,
        guidance_scale: float,
        prompt: str,
        num_images: int = 1,
        base_calls: set[int] | None = None,
    ):
        self.base_unet, self.scale, self.calls = base.unet, guidance_scale, 0
        self.base_calls = set(range(1, k + 1)) if base_calls is None else base_calls
        self.distilled_forward = distilled.unet.forward
        self.sdxl = isinstance(base, StableDiffusionXLPipeline)
        if self.sdxl:
            _, neg, _, neg_pooled = base.encode_prompt(
                prompt, num_images_per_prompt=num_images, do_classifier_free_guidance=True
            )
            self.negative = (neg, neg_pooled)
        else:
            _, neg = base.encode_prompt(prompt, "cpu", num_images, True)
            self.negative = (neg, None)
        distilled.unet.forward = self

    def __call__(
        self,
        sample,
        t,
        encoder_hidden_states=None,
        timestep_cond=None,
        cross_attention_kwargs=None,
        added_cond_kwargs=None,
        return_dict=True,
        **kwargs,
    ):
        self.calls += 1
        if self.calls not in self.base_calls:
            return self.distilled_forward(
                sample,
                t,
                encoder_hidden_states=encoder_hidden_states,
                timestep_cond=timestep_cond,
                cross_attention_kwargs=cross_attention_kwargs,
                added_cond_kwargs=added_cond_kwargs,
                return_dict=return_dict,
                **kwargs,
            )
        neg, neg_pooled = self.negative
        guided = self.scale > 1
        x = torch.cat([sample, sample]) if guided else sample
        hidden = torch.cat([neg, encoder_hidden_states]) if guided else encoder_hidden_states
        added = added_cond_kwargs
        if added is not None and guided:
            added = {
                "text_embeds": torch.cat([neg_pooled, added["text_embeds"]]),
                "time_ids": torch.cat([added["time_ids"], added["time_ids"]]),
            }
        out = self.base_unet(x, t, encoder_hidden_states=hidden, added_cond_kwargs=added, return_dict=False)[0]
        if guided:
            uncond, cond = out.chunk(2)
            out = uncond + self.scale * (cond - uncond)
        return (out,)
