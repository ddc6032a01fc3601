"""Custom Diffusion concepts on a hybrid pair: files written by diffusers' own attention processors
(`CustomDiffusionAttnProcessor` + `save_attn_procs`, as `train_custom_diffusion.py` sets them up), their K/V (Q/out)
landing on the right modules, the base at scale 1 equal to diffusers' `load_attn_procs` pipeline, scale 0 and removal
bit for bit, the modifier token in the shared text encoder, reverse transfer, and the refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import CustomDiffusionAttnProcessor
from safetensors.torch import save_file

from delta_fixtures import trained
from divdistill import HybridPipeline, SamplingDefaults
from divdistill.control import AdaptedPipeline, DeltaMismatchError, detect_kind, read_custom_diffusion
from divdistill.control.parameters import network_parameters
from divdistill.testing.tiny import tiny_sd_components, tiny_sdxl_unet
from pairs import sd_pair

TOKEN = "<new1>"
PROMPT = f"a {TOKEN} cube"


@pytest.fixture(scope="module")
def pipe() -> HybridPipeline:
    base, distilled = sd_pair("euler_a")
    pipe = HybridPipeline(base, distilled, defaults=SamplingDefaults(num_inference_steps=2, height=32, width=32))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_concept(folder: Path, unet: torch.nn.Module, seed: int, safe: bool = False, **kwargs) -> Path:
    """A training output folder: the processors' weights and the modifier token (safetensors under `.bin`, as the
    script's default `save_new_embed` writes it)."""
    trained(unet, seed, **kwargs).save_attn_procs(str(folder), safe_serialization=safe)
    embedding = torch.randn(32, generator=torch.Generator().manual_seed(seed))
    save_file({TOKEN: embedding}, str(folder / f"{TOKEN}.bin"), metadata={"format": "pt"})
    return folder


def params(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network_parameters(network).items()}


def test_a_concept_lands_on_the_cross_attention_and_scale_zero_or_removal_is_no_adapter(pipe, tmp_path: Path) -> None:
    base, distilled = pipe.base.unet, pipe.distilled.unet
    folder = write_concept(tmp_path, base, seed=1)
    stored = torch.load(folder / "pytorch_custom_diffusion_weights.bin", weights_only=True)
    assert any(v == {} for v in stored.values())  # the self-attention processors' empty entries
    before_base, before_distilled = params(base), params(distilled)
    plain = pipe("a cube", generator=torch.Generator().manual_seed(0), output_type="np").images
    assert detect_kind(folder) == detect_kind(folder / "pytorch_custom_diffusion_weights.bin") == "custom-diffusion"
    with AdaptedPipeline(pipe) as adapted:
        adapter = adapted.add(folder, scale=0.0)
        assert (adapter.kind, adapter.route, adapter.tokens) == ("custom-diffusion", "patch", (TOKEN,))
        assert adapter.info["trained_on"] == "base" and adapter.info["tokens"] == [TOKEN]
        assert params(base).keys() == before_base.keys()
        assert all(torch.equal(v, before_base[k]) for k, v in params(base).items())
        assert np.array_equal(
            adapted("a cube", generator=torch.Generator().manual_seed(0), output_type="np").images, plain
        )
        adapted.set_scale(adapter.name, 1.0)
        now_base, now_distilled = params(base), params(distilled)
        changed = sorted(k for k in before_base if not torch.equal(now_base[k], before_base[k]))
        expected = sorted(
            f"{k.removesuffix('.processor.to_k_custom_diffusion.weight')}.{p}.weight"
            for k in stored
            if k.endswith("to_k_custom_diffusion.weight")
            for p in ("to_k", "to_v")
        )
        assert changed == expected and len(changed) == 2 * 6  # K and V of the 6 cross-attentions, nothing else
        for name in changed:  # the concept's matrices exactly on the base, W + delta on the distilled
            key = name.replace(".to_k.", ".processor.to_k_custom_diffusion.").replace(
                ".to_v.", ".processor.to_v_custom_diffusion."
            )
            assert torch.equal(now_base[name], stored[key])
            assert torch.equal(now_distilled[name], before_distilled[name] + (stored[key] - before_base[name]))
        assert TOKEN in pipe.base.tokenizer.get_vocab() and pipe.base.tokenizer is pipe.distilled.tokenizer
    assert all(torch.equal(v, before_base[k]) for k, v in params(base).items())
    assert all(torch.equal(v, before_distilled[k]) for k, v in params(distilled).items())
    assert TOKEN not in pipe.base.tokenizer.get_vocab()
    assert np.array_equal(pipe("a cube", generator=torch.Generator().manual_seed(0), output_type="np").images, plain)


def test_the_base_at_scale_one_equals_diffusers_load_attn_procs(pipe, tmp_path: Path) -> None:
    folder = write_concept(tmp_path / "bin", pipe.base.unet, seed=2, train_q_out=True)
    safe = write_concept(tmp_path / "safe", pipe.base.unet, seed=2, safe=True, train_q_out=True)
    weights, safe_weights = read_custom_diffusion(folder).weights, read_custom_diffusion(safe).weights
    assert weights.keys() == safe_weights.keys() and all(torch.equal(v, safe_weights[k]) for k, v in weights.items())
    reference = StableDiffusionPipeline(**tiny_sd_components(seed=0))  # the pair's base, a fresh copy
    reference.set_progress_bar_config(disable=True)
    # diffusers 0.42 sets the processors only when `_pipeline` is given (without it the call does nothing), and
    # then needs the .bin file's empty self-attention entries (safetensors drops them: a processor count mismatch).
    reference.unet.load_attn_procs(str(folder), weight_name="pytorch_custom_diffusion_weights.bin", _pipeline=reference)
    assert {type(p) for p in reference.unet.attn_processors.values()} == {CustomDiffusionAttnProcessor}
    reference.load_textual_inversion(read_custom_diffusion(folder).tokens, token=TOKEN)
    settings = {"height": 32, "width": 32, "output_type": "np"}
    expected = reference(
        PROMPT, num_inference_steps=4, guidance_scale=3.0, generator=torch.Generator().manual_seed(1), **settings
    ).images
    with AdaptedPipeline(pipe) as adapted:
        adapter = adapted.add(folder, on="both")
        assert len(adapter.info["layers"]) == 6 and adapter.info["parameters"] == 6 * 5  # q, k, v, out weight, bias
        ours = adapted(
            PROMPT,
            mode="base",
            base_num_inference_steps=4,
            base_guidance_scale=3.0,
            generator=torch.Generator().manual_seed(1),
            **settings,
        ).images
    difference = np.abs(ours - expected).max() / max(np.abs(expected).max(), 1e-8)
    assert difference <= 1e-4, difference  # attention kernels differ (bmm vs sdpa): measured ~1e-7
    bare = reference.components | {"unet": tiny_sd_components(seed=0)["unet"]}
    without = StableDiffusionPipeline(**bare)(
        PROMPT, num_inference_steps=4, guidance_scale=3.0, generator=torch.Generator().manual_seed(1), **settings
    ).images
    assert np.abs(without - expected).max() > 1e-3  # the concept does change the image


def test_reverse_transfer_a_concept_trained_on_the_distilled_model(pipe, tmp_path: Path) -> None:
    base, distilled = pipe.base.unet, pipe.distilled.unet
    folder = write_concept(tmp_path, distilled, seed=3)
    concept = read_custom_diffusion(folder)
    before_base, before_distilled = params(base), params(distilled)
    with AdaptedPipeline(pipe) as adapted:
        adapter = adapted.add(folder, scale=0.5)  # detected: its K/V are near the distilled model's
        assert adapter.info["trained_on"] == "distilled" and adapter.info["exact_on"] == ["distilled"]
        for name, value in concept.weights.items():
            step = value - before_distilled[name]
            assert torch.equal(params(base)[name], before_base[name] + 0.5 * step)
            assert torch.equal(params(distilled)[name], torch.lerp(before_distilled[name], value, 0.5))
        assert np.isfinite(
            adapted(PROMPT, mode="reverse", generator=torch.Generator().manual_seed(0), output_type="np").images
        ).all()


def test_a_concept_of_another_unet_is_refused_before_anything_changes(pipe, tmp_path: Path) -> None:
    sdxl = tiny_sdxl_unet(seed=0)
    trained(sdxl, seed=4).save_attn_procs(str(tmp_path), safe_serialization=True)
    before = params(pipe.base.unet)
    with AdaptedPipeline(pipe) as adapted:
        with pytest.raises(DeltaMismatchError) as caught:
            adapted.add(tmp_path)
        message = str(caught.value)
        assert message.startswith(
            f"{tmp_path} does not fit the base UNet (sd): 12 shapes differ (down_blocks.1.attentions.0.transformer_"
            "blocks.0.attn2.to_k.weight: [64, 64] vs [64, 32]; "
        )  # SDXL's 64-wide text features against SD's 32, and its second transformer layer
        assert (
            "; ... and 4 more), 12 only in the adapter (down_blocks.1.attentions.0.transformer_blocks.1.attn2."
            in message
        )
        assert message.endswith("; ... and 4 more); was it trained on a model of this architecture?")
        assert caught.value.only_reference == []  # a concept holds some of the UNet's parameters, not all
        assert not adapted.adapters
    assert all(torch.equal(v, before[k]) for k, v in params(pipe.base.unet).items())
