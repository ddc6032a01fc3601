"""LoRAs on the FLUX.2 [klein] and SANA / SANA-Sprint transformers (diffusers format, applied by `control` to
both models of a hybrid) equal the hybrid with the merged weights; scale 0 is the bare pair bit for bit."""

from __future__ import annotations

import pytest
import torch
from diffusers import Flux2KleinPipeline, SanaPipeline, SanaSprintPipeline
from safetensors.torch import save_file

from divdistill import HybridPipeline
from divdistill.control.apply import AdaptedPipeline
from divdistill.defaults import SamplingDefaults
from divdistill.testing.tiny_flux2 import tiny_flux2_transformer, tiny_klein_components
from divdistill.testing.tiny_sana import tiny_sana_components, tiny_sana_transformer
from test_dit_lora import _rel, merged, random_lora


def klein() -> HybridPipeline:
    components = tiny_klein_components(0)
    base = Flux2KleinPipeline(**components)
    distilled = Flux2KleinPipeline(**{**components, "transformer": tiny_flux2_transformer(7), "is_distilled": True})
    defaults = SamplingDefaults(num_inference_steps=4, guidance_scale=1.0, base_guidance_scale=4.0, height=64,
                                width=64, max_sequence_length=64)  # fmt: skip
    return HybridPipeline(base, distilled, defaults=defaults)


def sana() -> HybridPipeline:
    components = tiny_sana_components(0)
    scheduler = tiny_sana_components(0, sprint=True)["scheduler"]
    base = SanaPipeline(**components)
    distilled = SanaSprintPipeline(**{**components, "transformer": tiny_sana_transformer(7, sprint=True),
                                      "scheduler": scheduler})  # fmt: skip
    defaults = SamplingDefaults(num_inference_steps=2, guidance_scale=4.5, base_guidance_scale=4.5, height=64, width=64)
    return HybridPipeline(base, distilled, defaults=defaults)


@pytest.mark.parametrize("make", [klein, sana], ids=["flux2", "sana"])
def test_lora_on_both_models_equals_merged_weights(make, tmp_path) -> None:
    pipe = make()
    pipe.set_progress_bar_config(disable=True)
    lora = random_lora(pipe.base.transformer)
    save_file(lora, str(tmp_path / "lora.safetensors"))
    adapted = AdaptedPipeline(pipe)
    adapter = adapted.add(str(tmp_path / "lora.safetensors"), scale=0.7, on="both")
    assert all(report.complete for report in adapter.reports.values())

    def run(p):
        return p("a red circle", base_steps=1, generator=torch.Generator().manual_seed(3), output_type="np").images

    ours = run(adapted)
    reference_pipe = make()
    reference_pipe.set_progress_bar_config(disable=True)
    reference_pipe.base.transformer = merged(reference_pipe.base.transformer, lora, 0.7)
    reference_pipe.distilled.transformer = merged(reference_pipe.distilled.transformer, lora, 0.7)
    bare = make()
    bare.set_progress_bar_config(disable=True)
    without = run(bare)
    assert _rel(ours, run(reference_pipe)) <= 1e-4
    assert _rel(ours, without) > 1e-3
    adapted.set_scale(adapter.name, 0.0)
    assert torch.equal(torch.as_tensor(run(adapted)), torch.as_tensor(without))
