"""HybridPipeline: a base and a distilled diffusers pipeline sampled together (diversity distillation).

The paper's Algorithm 1: x_T ~ N(0, I); the base model runs the first `base_steps` steps, the distilled model
the rest. By default the base runs on the distilled model's own scheduler and timesteps ("1-1 timestep
replacement"), so the run equals the distilled diffusers pipeline with the base network substituted for the
first calls. Other variants are segment schedules (see `divdistill.schedule`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from divdistill import quiet
from divdistill.conditioning import Conditioning, PromptRequest
from divdistill.defaults import SamplingDefaults
from divdistill.denoiser import GuidedDenoiser
from divdistill.devices import check_device
from divdistill.diversity.session import DiversityOptions, DiversitySession
from divdistill.families import PairMismatchError, family_of
from divdistill.offload import SequentialOffload
from divdistill.outputs import HybridPipelineOutput
from divdistill.pipeline.call_settings import clip_frames, resolve_settings, run_record, second_expert_scales
from divdistill.pipeline.loader import pair_loader
from divdistill.pipeline.stages import StagePlan, fresh_scheduler, plan_stages, run_segments
from divdistill.pipeline.student import AdapterStates
from divdistill.recording import TrajectoryRecorder, chain_callbacks
from divdistill.sampling import Stage, StepCallback
from divdistill.schedule import Segment

quiet.install()  # known-harmless diffusers/transformers notices, filtered narrowly (see divdistill.quiet)

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class HybridPipeline:
    """Sample with a base model for the first steps and its distilled model for the rest.

    Parameters
    ----------
    base, distilled:
        Two diffusers pipelines of the same family (e.g. StableDiffusionXLPipeline). The distilled pipeline's
        scheduler is the shared schedule; the base pipeline's scheduler is used for the base's own schedule.
    defaults:
        Sampling defaults for this pair (steps, timesteps, guidance, resolution); presets fill these.
    adapter_states:
        Which PEFT adapters are active on each model's network while its segments run (`divdistill.pipeline.
        student`): a LoRA-student pair is one network, the student adapter off for the base, on for the distilled.
    """

    def __init__(
        self,
        base: Any,
        distilled: Any,
        defaults: SamplingDefaults | None = None,
        name: str | None = None,
        adapter_states: AdapterStates | None = None,
    ):
        self.base = base
        self.adapter_states = adapter_states
        self.distilled = distilled
        self.family = family_of(distilled)
        base_family = family_of(base)
        if base_family is not self.family:
            raise PairMismatchError(
                f"The base pipeline is a {base_family.name} model and the distilled one a {self.family.name} model; "
                "a hybrid needs two models of the same family (same latent space and text encoders)."
            )
        problems = self.family.pair_problems(base, distilled)
        if problems:
            raise PairMismatchError(
                "These two pipelines cannot share latents and prompts: " + "; ".join(problems) + "."
            )
        self.defaults = defaults or SamplingDefaults()
        self.name = name
        self.progress_bar_config: dict[str, Any] = {}
        self.offload: SequentialOffload | None = None

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> HybridPipeline:
        """Load a named pair (see `divdistill.presets.PRESETS`) with its published settings as defaults
        (`divdistill.loading.load_preset`)."""
        return pair_loader().from_preset(name, **kwargs)

    @classmethod
    def from_pretrained(cls, base: str, distilled: str, **kwargs: Any) -> HybridPipeline:
        """Load any pair from paths or repo ids (optionally a raw distilled UNet file and a scheduler;
        `divdistill.loading.load_pair`)."""
        return pair_loader().from_pretrained(base, distilled, **kwargs)

    @classmethod
    def from_lora(cls, base: str, student_lora: str, **kwargs: Any) -> HybridPipeline:
        """A one-network pair: `base` (folder, repo id or single-file checkpoint) whose distilled model is the same
        network with the student LoRA `student_lora` (FILE, folder or REPO[:weight_name]) enabled
        (`divdistill.loading.load_lora_pair`)."""
        return pair_loader().from_lora(base, student_lora, **kwargs)

    # ----------------------------------------------------------------------------------------------- devices
    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> HybridPipeline:
        """Move both pipelines (this ends model CPU offload); a device this machine lacks is a
        `divdistill.devices.DeviceUnavailableError` (ValueError) before anything moves."""
        if device is not None:
            device = check_device(device)
        self.offload = None
        for pipe in self.pipelines():
            pipe.to(device=device, dtype=dtype)
        return self

    def enable_model_cpu_offload(self, device: str | torch.device = "cuda") -> HybridPipeline:
        """Keep only the running part on `device`: text encoders, then the base network for its steps, then
        the distilled network, then the VAE; everything else waits on the CPU (see `divdistill.offload`).

        Peak accelerator memory becomes that of the largest part instead of the whole pair, at the cost of
        moving each network in once per call.
        """
        text = [getattr(pipe, n, None) for pipe in self.pipelines() for n in self.family.text_encoders]
        self.offload = SequentialOffload(
            check_device(device),
            {
                "text": text,
                "base": [self.family.network(self.base)],
                "distilled": [self.family.network(self.distilled)],
                "vae": [pipe.vae for pipe in self.pipelines()],
            },
        )
        return self

    def _activate(self, part: str) -> None:
        if self.offload is not None:
            self.offload.activate(part)
        if self.adapter_states is not None and part in ("base", "distilled"):
            self.adapter_states.apply(self.family.network(self.pipeline_for(part)), part)

    def decode_latents(self, latents: torch.Tensor, output_type: str = "pil") -> Any:
        """Decode final (or x0-hat) latents with the distilled pipeline's VAE, as its diffusers pipeline does."""
        self._activate("vae")
        return self.family.decode(self.distilled, latents, output_type)

    def pipelines(self) -> list[Any]:
        return [self.base] if self.base is self.distilled else [self.base, self.distilled]

    @property
    def device(self) -> torch.device:
        """Where sampling runs (the accelerator under model CPU offload)."""
        if self.offload is not None:
            return self.offload.device
        return self.family.network(self.distilled).device

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        self.progress_bar_config = kwargs

    def pipeline_for(self, model: str) -> Any:
        return self.base if model == "base" else self.distilled

    # ----------------------------------------------------------------------------------------------- call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        *,
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        timesteps: Sequence[int] | None = None,
        mode: str | None = None,
        base_steps: int | None = None,
        base_schedule: str | None = None,
        base_num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        base_guidance_scale: float | None = None,
        guidance_scale_2: float | None = None,
        base_guidance_scale_2: float | None = None,
        guidance_rescale: float | None = None,
        resolution_binning: bool | None = None,
        skip_first_steps: int = 0,
        segments: str | Sequence[Segment] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        callback: StepCallback | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        denoiser_hooks: dict[str, Callable[[GuidedDenoiser], GuidedDenoiser]] | None = None,
        diversity: str | DiversityOptions | None = None,
        return_dict: bool = True,
        return_trajectory: bool = False,
    ) -> HybridPipelineOutput | tuple:
        """Generate images. Unset arguments take the pair's defaults (`self.defaults`).

        mode: "hybrid" (base for the first `base_steps` steps), "distilled", "base" (the base model alone on its
        own scheduler with `base_num_inference_steps`), or "reverse" (base for the last `base_steps` steps).
        base_schedule: "shared" (base on the distilled schedule; the paper's best) or "own" (base on its own
        `base_num_inference_steps`-step schedule down to the hand-off timestep).
        guidance_rescale: rescale of classifier-free guidance (Lin et al. 2024, diffusers' `guidance_rescale`) for
            every model that runs CFG; zero-terminal-SNR models want ~0.7.
        resolution_binning: PixArt only, as `PixArtAlphaPipeline(use_resolution_binning=True)`: sample at the nearest
            aspect-ratio bin the model was trained on and resize the images back (off by default: the size asked).
        skip_first_steps: start from pure noise at the k-th timestep of the distilled schedule.
        num_frames: video pairs (Wan) only: frames per clip (default the pair's, else the family's 81); Wan's VAE needs
            4k + 1 frames, and other counts are refused with the nearest valid ones (WanPipeline rounds them).
        guidance_scale_2, base_guidance_scale_2: two-expert pairs (Wan 2.2) only: the low-noise expert's guidance
            scale of the distilled / base model (WanPipeline's `guidance_scale_2`; default: the first expert's).
        segments: an explicit segment schedule ("base:1,distilled:3") instead of `mode`/`base_steps`.
        latents: initial unit-Gaussian noise of shape (batch, channels, height / f, width / f), in every image family
            ((batch, channels, frames', height / f, width / f) for video: latents, x0-hat and "latent" outputs are 5-D);
            (FLUX too: divdistill packs FLUX latents only around the transformer call, so its latents, x0-hat and
            `output_type="latent"` results are (B, C, H, W), not FluxPipeline's packed tokens).
        diversity: training-free diversity methods, e.g. "cads@0.1+interval" (`divdistill.diversity`).
        callback: called after every step with a `StepInfo` (x_t, x0-hat, model, timestep).
        return_trajectory: also record every step's x_t and x0-hat (CPU copies) as `output.trajectory`
            (a `divdistill.trajectory.Trajectory`; with return_dict=False the tuple is (images, trajectory)).
        """
        started = time.perf_counter()
        settings, timesteps, published = resolve_settings(
            self.defaults, self.family, timesteps, segments, skip_first_steps, base_schedule, mode,
            num_inference_steps=num_inference_steps, base_steps=base_steps,
            base_num_inference_steps=base_num_inference_steps, guidance_scale=guidance_scale,
            base_guidance_scale=base_guidance_scale, guidance_scale_2=guidance_scale_2,
            base_guidance_scale_2=base_guidance_scale_2, guidance_rescale=guidance_rescale,
            resolution_binning=resolution_binning, height=height, width=width,
        )  # fmt: skip
        second_expert_scales(self, settings)
        num_frames = clip_frames(settings, self.family, self.distilled, num_frames)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompt must be a string or a non-empty list of strings.")
        negatives = _broadcast_negative(negative_prompt, len(prompts))
        default_height, default_width = self.family.default_height_width(self.distilled)
        height, width = settings.height or default_height, settings.width or default_width
        sample_height, sample_width = self.family.sampling_size(
            self.distilled, height, width, settings.resolution_binning
        )

        methods = DiversitySession.start(diversity, prompts, num_images_per_prompt, generator, denoiser_hooks, self)
        plan = methods.plan(run_segments(settings, segments, skip_first_steps), settings, segments, skip_first_steps)
        alone = segments is None and settings.mode == "base"
        device = self.device
        batch = len(prompts) * num_images_per_prompt
        shape = self.family.sample_shape(self.distilled, batch, sample_height, sample_width, num_frames)
        with quiet.published_timesteps(published):
            planned = plan_stages(self, plan, settings, timesteps, skip_first_steps, device, shape, alone)
        if methods.adaptive and len(planned) != len(plan):
            raise ValueError("The adaptive switch hands off once per sample; this pair switches experts within a "
                             "model's steps (Wan 2.2), which it does not support. Use a fixed base_steps.")  # fmt: skip
        self._activate("text")
        request = PromptRequest(
            prompts=prompts,
            negative_prompts=negatives,
            num_images_per_prompt=num_images_per_prompt,
            height=sample_height,
            width=sample_width,
            device=device,
            max_sequence_length=settings.max_sequence_length,
        )
        conditioning = self._encode(request, planned)
        dtype = next(iter(conditioning.values())).hidden_states.dtype
        stages, raw = [], []
        for stage_plan in planned:
            model, scale = stage_plan.model, stage_plan.guidance_scale
            pipe = self.pipeline_for(model)
            denoiser = GuidedDenoiser(
                name=model,
                network=self.family.experts(pipe)[stage_plan.expert],
                conditioning=conditioning[model],
                guidance_scale=scale,
                prediction_type=self.family.prediction_type(pipe),
                dtype=dtype,
                family=self.family,
                cross_attention_kwargs=cross_attention_kwargs,
                guidance_rescale=settings.guidance_rescale,
            )
            raw.append(denoiser)
            denoiser = methods.prepare(denoiser, stage_plan.scheduler, self.family.convention.name)
            stages.append(Stage(model, denoiser, stage_plan.scheduler, stage_plan.timesteps, self.family.convention,
                                eta=stage_plan.eta))  # fmt: skip

        noise = self._noise(shape, generator, latents, self.family.latent_dtype(self.distilled, dtype), device)

        total = sum(len(s.timesteps) for s in stages)
        recorder = None
        if return_trajectory:
            recorder = TrajectoryRecorder()
            callback = chain_callbacks(callback, recorder)
        with tqdm(total=total, **{"desc": "sampling", "leave": False, **self.progress_bar_config}) as progress:
            activate = lambda stage: self._activate(stage.model)  # noqa: E731
            latents, records = methods.sample(
                noise, stages, raw, skip_first_steps, generator, callback, progress, activate
            )

        last_pipe = self.pipeline_for(stages[-1].model)
        if output_type == "latent":
            images = latents
        else:
            self._activate("vae")
            images = self.family.decode(last_pipe, latents, output_type, size=(height, width))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        output = HybridPipelineOutput(
            images=images,
            steps=records,
            seconds=time.perf_counter() - started,
            settings=run_record(
                settings, plan, segments, skip_first_steps, methods.settings(), (height, width),
                (sample_height, sample_width), num_images_per_prompt, num_frames,
            ),
        )
        if recorder is not None:
            output.trajectory = recorder.trajectory(
                prompts=[p for p in prompts for _ in range(num_images_per_prompt)], settings=output.settings
            )
            return output if return_dict else (images, output.trajectory)
        return output if return_dict else (images,)

    # ----------------------------------------------------------------------------------------------- parts
    def _encode(self, request: PromptRequest, planned: list[StagePlan]) -> dict[str, Conditioning]:
        """Conditioning per model; encoded once when both models share their text encoders."""
        needs_negative: dict[str, bool] = {}
        for stage in planned:
            network = self.family.network(self.pipeline_for(stage.model))
            runs_cfg = self.family.runs_cfg(network, stage.guidance_scale)
            needs_negative[stage.model] = needs_negative.get(stage.model, False) or runs_cfg

        def encode(pipe, negative: bool):
            return self.family.encode(pipe, replace(request, with_negative=negative))

        if self.family.shares_text_encoders(self.base, self.distilled):
            encoded = encode(self.base if "base" in needs_negative else self.distilled, any(needs_negative.values()))
            return dict.fromkeys(needs_negative, encoded)
        return {model: encode(self.pipeline_for(model), negative) for model, negative in needs_negative.items()}

    def _noise(self, shape, generator, latents, dtype, device):
        """Unit-Gaussian x_T noise as diffusers draws it (the first stage's convention scales it; with skipped
        steps, pure noise at the first timestep: `DiversitySession.sample`)."""
        if latents is None:
            return randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if tuple(latents.shape) != tuple(shape):
            raise ValueError(f"latents must have shape {tuple(shape)}, got {tuple(latents.shape)}.")
        return latents.to(device=device, dtype=dtype)


def _broadcast_negative(negative_prompt, count: int) -> list[str] | None:
    if negative_prompt is None:
        return None
    negatives = [negative_prompt] * count if isinstance(negative_prompt, str) else list(negative_prompt)
    if len(negatives) != count:
        raise ValueError(f"negative_prompt has {len(negatives)} entries for {count} prompts; give one per prompt.")
    return negatives


__all__ = ["OUTPUT_TYPES", "HybridPipeline", "fresh_scheduler"]
