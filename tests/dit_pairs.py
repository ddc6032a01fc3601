"""Tiny PixArt / SD3 / FLUX base-distilled pairs and the patched-diffusers references the hybrid must equal.

Each pair shares text encoders and VAE (as the real pairs do). The reference for `base_steps=k` is the
distilled model's own diffusers pipeline with its transformer's `forward` patched so the first k calls run
the base transformer with the base's guidance: CFG with the base pipeline's own negative embeddings
(PixArt, SD3) or the base's guidance embedding (FLUX.1-dev). Same scheduler, generator and random draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import FluxPipeline, PixArtAlphaPipeline, StableDiffusion3Pipeline

from divdistill import HybridPipeline
from divdistill.defaults import SamplingDefaults
from divdistill.testing.tiny_dit import (
    perturbed,
    tiny_flux_components,
    tiny_flux_transformer,
    tiny_pixart_components,
    tiny_sd3_components,
)


@dataclass
class DitPair:
    family: str
    base: Any
    distilled: Any
    defaults: SamplingDefaults
    call_kwargs: dict[str, Any]  # what the diffusers pipelines need to match divdistill's call

    def hybrid(self) -> HybridPipeline:
        return HybridPipeline(self.base, self.distilled, defaults=self.defaults)


def pixart_pair() -> DitPair:
    base_components = tiny_pixart_components(seed=0)
    lcm = tiny_pixart_components(seed=0, lcm=True)
    distilled_components = {
        **base_components,
        "transformer": perturbed(base_components["transformer"], seed=1),
        "scheduler": lcm["scheduler"],
    }
    defaults = SamplingDefaults(num_inference_steps=4, guidance_scale=0.0, base_guidance_scale=4.5, height=64, width=64)
    return _pair(
        "pixart",
        PixArtAlphaPipeline,
        base_components,
        distilled_components,
        defaults,
        {"use_resolution_binning": False, "clean_caption": False},
    )


def sd3_pair() -> DitPair:
    base_components = tiny_sd3_components(seed=0)
    distilled_components = {**base_components, "transformer": perturbed(base_components["transformer"], seed=1)}
    defaults = SamplingDefaults(num_inference_steps=4, guidance_scale=0.0, base_guidance_scale=3.5, height=64, width=64)
    return _pair("sd3", StableDiffusion3Pipeline, base_components, distilled_components, defaults, {})


def flux_pair() -> DitPair:
    base_components = tiny_flux_components(seed=0)
    schnell = tiny_flux_components(seed=0, schnell=True)
    distilled_components = {
        **base_components,
        "transformer": tiny_flux_transformer(seed=7, guidance_embeds=False),
        "scheduler": schnell["scheduler"],
    }
    defaults = SamplingDefaults(
        num_inference_steps=4, guidance_scale=0.0, base_guidance_scale=3.5, height=64, width=64, max_sequence_length=32
    )
    return _pair("flux", FluxPipeline, base_components, distilled_components, defaults, {"max_sequence_length": 32})


def _pair(family, cls, base_components, distilled_components, defaults, call_kwargs) -> DitPair:
    base, distilled = cls(**base_components), cls(**distilled_components)
    for pipe in (base, distilled):
        pipe.set_progress_bar_config(disable=True)
    return DitPair(family, base, distilled, defaults, call_kwargs)


PAIRS = {"pixart": pixart_pair, "sd3": sd3_pair, "flux": flux_pair}


def distilled_reference(pair: DitPair, prompt, seed: int, steps: int = 4, **extra):
    """Images of the distilled model's own diffusers pipeline at the pair's settings (64 px, numpy)."""
    return pair.distilled(
        prompt,
        num_inference_steps=steps,
        guidance_scale=pair.defaults.guidance_scale,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **pair.call_kwargs,
        **extra,
    ).images


class BaseTransformerForFirstCalls:
    """Patch `distilled.transformer.forward` so its first k calls run the base transformer with base guidance."""

    def __init__(self, pair: DitPair, k: int, guidance_scale: float, prompt: str, num_images: int = 1):
        self.pair, self.k, self.scale, self.calls = pair, k, guidance_scale, 0
        self.base_forward = pair.base.transformer.forward
        self.distilled_forward = pair.distilled.transformer.forward
        self.negative = self._negative(prompt, num_images)
        pair.distilled.transformer.forward = self

    def _negative(self, prompt: str, num_images: int):
        base = self.pair.base
        if self.pair.family == "pixart":
            _, _, neg, neg_mask = base.encode_prompt(
                prompt, True, negative_prompt="", num_images_per_prompt=num_images, device="cpu", clean_caption=False
            )
            return {"embeds": neg, "mask": neg_mask}
        if self.pair.family == "sd3":
            _, neg, _, neg_pooled = base.encode_prompt(
                prompt, None, None, num_images_per_prompt=num_images, do_classifier_free_guidance=True, device="cpu"
            )
            return {"embeds": neg, "pooled": neg_pooled}
        return None  # FLUX.1-dev embeds its guidance

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.k:
            return self.distilled_forward(*args, **kwargs)
        family = self.pair.family
        if family == "flux":
            batch = kwargs["hidden_states"].shape[0]
            kwargs["guidance"] = torch.full([1], self.scale, dtype=torch.float32).expand(batch)
            return self.base_forward(*args, **kwargs)
        guided = self.scale > 1
        if not guided:
            return self.base_forward(*args, **kwargs)
        if family == "pixart":
            (x,) = args
            added = {k: None if v is None else torch.cat([v, v]) for k, v in kwargs["added_cond_kwargs"].items()}
            out = self.base_forward(
                torch.cat([x, x]),
                encoder_hidden_states=torch.cat([self.negative["embeds"], kwargs["encoder_hidden_states"]]),
                encoder_attention_mask=torch.cat([self.negative["mask"], kwargs["encoder_attention_mask"]]),
                timestep=torch.cat([kwargs["timestep"], kwargs["timestep"]]),
                added_cond_kwargs=added,
                return_dict=False,
            )[0]
        else:
            x = kwargs["hidden_states"]
            out = self.base_forward(
                hidden_states=torch.cat([x, x]),
                timestep=torch.cat([kwargs["timestep"], kwargs["timestep"]]),
                encoder_hidden_states=torch.cat([self.negative["embeds"], kwargs["encoder_hidden_states"]]),
                pooled_projections=torch.cat([self.negative["pooled"], kwargs["pooled_projections"]]),
                joint_attention_kwargs=kwargs.get("joint_attention_kwargs"),
                return_dict=False,
            )[0]
        uncond, cond = out.chunk(2)
        return (uncond + self.scale * (cond - uncond),)


def trace_and_eval_preset(preset: str, cache: Any, out: Any, prompts: tuple[str, str]) -> tuple[dict, dict]:
    """`divdistill trace` (base@steps3, distilled, hybrid; 2 seeds) and `divdistill eval` (distilled, hybrid; 2
    images per prompt) on a preset from the offline cache at 64 px: (commitment curves by label, NFE per image by
    variant), for the family tests to assert on."""
    import json

    from divdistill.cli.main import main

    common = ["--preset", preset, "--cache-dir", str(cache), "--height", "64", "--width", "64"]
    trace = ["trace", *common, "--prompt", prompts[0], "--seeds", "0-1", "--modes", "base@steps3,distilled,hybrid",
             "--out", str(out / "trace")]  # fmt: skip
    assert main(trace) == 0
    curves = json.loads((out / "trace" / "curves.json").read_text())
    commitment = {c["label"]: c for c in curves["curves"] if c["kind"] == "commitment"}
    evaluate = ["eval", *common, "--prompt", prompts[0], "--prompt", prompts[1], "--seeds-per-prompt", "2",
                "--modes", "distilled,hybrid", "--metrics", "diversity-pixel", "--out", str(out / "eval")]  # fmt: skip
    assert main(evaluate) == 0
    rows = json.loads((out / "eval" / "metrics.json").read_text())["sets"]
    return commitment, {r["name"]: r["speed"]["nfe_per_image"] for r in rows}
