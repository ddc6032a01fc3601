"""SANA (`SanaPipeline`, flow matching) and SANA-Sprint (`SanaSprintPipeline`, sCM on TrigFlow): one family.

Both run a `SanaTransformer2DModel` on DC-AE latents with Gemma-2 prompts (the complex human instruction
prepended, the pipeline's `select_index` cut). They differ in how the network is called:

* SANA (a flow model, no guidance embedding) is called with `timestep = t * timestep_scale`, t = 1000 sigma from
  its flow scheduler (DPM-Solver with flow sigmas), and classifier-free guidance on an unguided empty negative.
* SANA-Sprint (`guidance_embeds=True`, only SanaSprintPipeline runs such a network) is called at the flow sigma
  s in [0, 1], with the guidance scale embedded (`guidance * guidance_embeds_scale`).

The hand-off convention. Sprint's SCMScheduler keeps TrigFlow latents x = sigma_d (cos a x0 + sin a eps) at the
angle a, and the pipeline maps them to the flow network and back: s = sin a / (cos a + sin a), network input
x_flow = (x / sigma_d) sqrt(s^2 + (1 - s)^2) = (1 - s) x0 + s eps, and the flow velocity v becomes the TrigFlow
prediction F = ((1 - 2s) x_flow + (1 - 2s + 2s^2) v) / sqrt(s^2 + (1 - s)^2). So a TrigFlow latent at angle a and
a flow latent at sigma s are the same point once scaled by sqrt(s^2 + (1 - s)^2) / sigma_d: the two models share
noise levels through s. divdistill therefore:

* keeps Sprint's latent in units of sigma_d (x / sigma_d, a scheduler copy with sigma_data 1): every value is the
  pipeline's divided by sigma_d, which for Sprint's sigma_d = 0.5 (a power of two) is exact, so runs stay bit for
  bit the pipeline's, and the final latent (the last step's x0) decodes like SANA's;
* gives the sampler Sprint's noise levels as flow timesteps 1000 s (float64, so s comes back exactly), so base and
  distilled steps, records, x0-hat and the diversity methods all read one flow scale;
* hands a flow latent at sigma s to Sprint as x_flow / sqrt(s^2 + (1 - s)^2) (and back by the inverse), and cuts an
  own-schedule base grid at exactly s.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from divdistill.conditioning import Conditioning, PromptRequest
from divdistill.conventions import FLOW, FLOW_PREDICTION, LatentConvention, exact_sigma_scheduler
from divdistill.families.base import Family, NetworkInputs, config_problems


def is_trigflow(scheduler: Any) -> bool:
    """Whether a scheduler steps TrigFlow latents (SANA-Sprint's SCMScheduler)."""
    return scheduler.config.get("prediction_type") == "trigflow"


def scm_sigma(angle: torch.Tensor) -> torch.Tensor:
    """The flow sigma of a TrigFlow angle, as SanaSprintPipeline computes it (`scm_timestep`)."""
    return torch.sin(angle) / (torch.cos(angle) + torch.sin(angle))


def _sigma_of(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """s from a flow timestep 1000 s (exact for the float64 timesteps `set_schedule` gives Sprint)."""
    s = (torch.as_tensor(t, dtype=torch.float64) / 1000).to(torch.float32).to(like.device)
    return s.reshape(1).expand(like.shape[0]).view(-1, 1, 1, 1)


def _radius(s: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(s**2 + (1 - s) ** 2)


class SanaConvention(LatentConvention):
    """Flow latents on SANA's schedulers, sigma_d-normalised TrigFlow latents on Sprint's (module docstring)."""

    name = "flow"  # what the network sees and predicts, and the scale of every timestep the sampler holds

    def model_input(self, scheduler, latents, t):
        if not is_trigflow(scheduler):
            return latents
        return latents * _radius(_sigma_of(t, latents))

    def initial_latents(self, scheduler, noise, first_t, skipped):
        return noise  # unit noise: the flow start, and Sprint's sigma_d-scaled start in sigma_d units

    def prediction_for(self, scheduler, output, source_type, model_input, t):
        if source_type != FLOW_PREDICTION:
            raise ValueError(f"SANA's schedulers need a velocity prediction, got {source_type!r}.")
        if not is_trigflow(scheduler):
            return output
        s = _sigma_of(t, output)
        trig = ((1 - 2 * s) * model_input + (1 - 2 * s + 2 * s**2) * output) / _radius(s)
        return trig.float()

    def x0(self, result, output, prediction_type, model_input, scheduler, t):
        if is_trigflow(scheduler):
            return result.pred_original_sample
        sigmas, index = getattr(scheduler, "sigmas", None), getattr(scheduler, "step_index", None)
        if sigmas is None or index is None:
            return FLOW.x0(result, output, prediction_type, model_input, scheduler, t)
        sigma = sigmas[index - 1].to(model_input.device, torch.float32)  # DPM's int timesteps round sigma
        return (model_input.float() - sigma * output.float()).to(output.dtype)

    def handoff(self, latents, source, target, t):
        into, out_of = is_trigflow(target), is_trigflow(source)
        if into == out_of:
            return latents
        radius = _radius(_sigma_of(t, latents))
        return (latents / radius if into else latents * radius).to(latents.dtype)

    def schedule_until(self, own, shared, handoff_index, device):
        if not is_trigflow(shared):
            return FLOW.schedule_until(own, shared, handoff_index, device)
        handoff_sigma = float(scm_sigma(shared.timesteps[handoff_index]))
        kept = [float(s) for s in own.sigmas[:-1] if s > handoff_sigma]
        if not kept:
            raise ValueError(
                f"The base's own schedule has no step above the hand-off noise level {handoff_sigma:.4f}; "
                "raise base_num_inference_steps or base_steps."
            )
        config = {"num_train_timesteps": own.config.num_train_timesteps}  # DPM's other keys mean nothing to Euler
        scheduler = exact_sigma_scheduler(config, [*kept, handoff_sigma], device)
        return scheduler, scheduler.timesteps[:-1]


SANA = SanaConvention()


def _bins(sample_size: int) -> dict | None:
    """SanaPipeline's aspect-ratio bins by the transformer's sample size (SanaSprintPipeline knows only 32)."""
    from diffusers.pipelines.pixart_alpha import pipeline_pixart_alpha as pixart
    from diffusers.pipelines.pixart_alpha import pipeline_pixart_sigma as sigma
    from diffusers.pipelines.sana import pipeline_sana as sana

    return {128: sana.ASPECT_RATIO_4096_BIN, 64: sigma.ASPECT_RATIO_2048_BIN, 32: pixart.ASPECT_RATIO_1024_BIN,
            16: pixart.ASPECT_RATIO_512_BIN}.get(sample_size)  # fmt: skip


class SanaFamily(Family):
    """SANA / SANA 1.5 / SANA-Sprint's teachers (flow, CFG) and SANA-Sprint (sCM, embedded guidance)."""

    name = "sana"
    pipeline_class = "SanaPipeline"
    network_class = "SanaTransformer2DModel"
    network_component = "transformer"
    network_label = "transformer"
    convention = SANA
    supports_resolution_binning = True

    def matches(self, pipe: Any) -> bool:
        return self.owns_network(getattr(pipe, "transformer", None))

    def prediction_type(self, pipe: Any) -> str:
        return FLOW_PREDICTION

    def embeds_guidance(self, network) -> bool:
        return bool(network.config.get("guidance_embeds", False))

    def guidance_inputs(self, network, guidance_scale, batch_size, device, dtype):
        guidance = torch.full([1], guidance_scale, device=device, dtype=torch.float32)
        return {"guidance": guidance.expand(batch_size).to(dtype) * network.config.guidance_embeds_scale}

    def encode(self, pipe, request: PromptRequest):
        """SanaPipeline's `encode_prompt` (with its negative branch when asked); SanaSprintPipeline's has none, so a
        Sprint pipeline's negative is built the way SanaPipeline builds it (no instruction, the mask tiled)."""
        instruction = inspect.signature(type(pipe).__call__).parameters["complex_human_instruction"].default
        length = request.max_sequence_length or 300
        negatives = request.negative_prompts or [""] * len(request.prompts)
        common = {"num_images_per_prompt": request.num_images_per_prompt, "device": request.device,
                  "clean_caption": False, "max_sequence_length": length,
                  "complex_human_instruction": instruction}  # fmt: skip
        negative = negative_mask = None
        if "do_classifier_free_guidance" in inspect.signature(pipe.encode_prompt).parameters:
            embeds, mask, negative, negative_mask = pipe.encode_prompt(
                request.prompts, request.with_negative, negative_prompt=negatives, **common
            )
        else:
            embeds, mask = pipe.encode_prompt(request.prompts, **common)
            if request.with_negative:
                negative, negative_mask = pipe._get_gemma_prompt_embeds(
                    negatives, request.device, embeds.dtype, False, length, complex_human_instruction=False
                )
                negative = negative.repeat_interleave(request.num_images_per_prompt, dim=0)
                negative_mask = negative_mask.repeat(request.num_images_per_prompt, 1)
        return Conditioning(
            hidden_states=embeds,
            negative_hidden_states=negative if request.with_negative else None,
            added={"encoder_attention_mask": mask},
            negative_added={"encoder_attention_mask": negative_mask} if request.with_negative else None,
        )

    def forward(self, network, x, t, inputs: NetworkInputs):
        t = torch.as_tensor(t)
        if self.embeds_guidance(network):  # SanaSprintPipeline: the flow sigma itself
            timestep = (t.to(torch.float64) / 1000).to(torch.float32).to(x.device).reshape(1).expand(x.shape[0])
        else:  # SanaPipeline: t * timestep_scale
            t = t.to(torch.float32) if t.dtype == torch.float64 else t
            timestep = t.to(x.device).reshape(1).expand(x.shape[0]) * network.config.timestep_scale
        guidance = inputs.guidance.get("guidance")
        output = network(
            x.to(network.dtype),
            encoder_hidden_states=inputs.hidden_states.to(network.dtype),
            encoder_attention_mask=inputs.added["encoder_attention_mask"],
            timestep=timestep,
            **({"guidance": guidance} if guidance is not None else {}),
            return_dict=False,
            attention_kwargs=inputs.attention_kwargs,
        )[0]
        if guidance is None:
            output = output.float()  # SanaPipeline's noise_pred.float(); Sprint's cast follows its conversion
        if network.config.out_channels // 2 == x.shape[1]:  # learned sigma
            output = output.chunk(2, dim=1)[0]
        return output

    def set_schedule(self, pipe, scheduler, num_inference_steps, timesteps, device, latent_shape):
        """Flow schedulers as SanaPipeline sets them; SCM as SanaSprintPipeline does (max angle 1.5708, 1.3 as
        the intermediate angle of a 2-step run), returned as flow timesteps 1000 s (module docstring)."""
        if not is_trigflow(scheduler):
            if timesteps is not None:
                sigmas = [float(t) / 1000 for t in timesteps]
                exact = exact_sigma_scheduler(scheduler.config, sigmas, device)
                scheduler.timesteps, scheduler.sigmas = exact.timesteps, exact.sigmas
                scheduler.num_inference_steps, scheduler._step_index, scheduler._begin_index = len(sigmas), None, None
                return scheduler.timesteps
            return super().set_schedule(pipe, scheduler, num_inference_steps, None, device, latent_shape)
        scheduler.register_to_config(sigma_data=1.0)  # this run's copy works in units of sigma_d
        if timesteps is not None:  # flow timesteps 1000 s -> angles a = atan(s / (1 - s))
            angles = [float(np.arctan2(float(t) / 1000, 1 - float(t) / 1000)) for t in timesteps] + [0.0]
            scheduler.set_timesteps(len(timesteps), timesteps=angles, device=device, max_timesteps=None,
                                    intermediate_timesteps=None)  # fmt: skip
        else:
            intermediate = 1.3 if num_inference_steps == 2 else None
            scheduler.set_timesteps(num_inference_steps, device=device, intermediate_timesteps=intermediate)
        return scm_sigma(scheduler.timesteps[:-1]).to("cpu", torch.float64) * 1000

    def sampling_size(self, pipe, height, width, binning=False):
        bins = _bins(pipe.transformer.config.sample_size) if binning else None
        if bins is None:
            return height, width
        binned = pipe.image_processor.classify_height_width_bin(height, width, ratios=bins)
        return int(binned[0]), int(binned[1])

    def decode(self, pipe, latents, output_type, size=None):
        vae = pipe.vae
        image = vae.decode((latents.to(vae.dtype) / vae.config.scaling_factor), return_dict=False)[0]
        if size is not None and tuple(image.shape[-2:]) != tuple(size):
            image = pipe.image_processor.resize_and_crop_tensor(image, size[1], size[0])
        return pipe.image_processor.postprocess(image, output_type=output_type)

    def pair_problems(self, base, distilled):
        keys = ("in_channels", "out_channels", "caption_channels", "patch_size")
        problems = config_problems("transformer", base.transformer, distilled.transformer, keys)
        if base.vae is not distilled.vae:
            problems += config_problems("VAE", base.vae, distilled.vae, ("latent_channels", "scaling_factor"))
        return problems
