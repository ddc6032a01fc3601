"""LoRA transfer on the DiT / flow families: diffusers-format files on PixArt, SD3 and FLUX transformers (base,
distilled, or both in a hybrid), checked against the merged-weight model and diffusers' own loader; kohya FLUX
files (Black Forest Labs module names, fused qkv) resolved at FLUX's real width."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from safetensors.torch import save_file

from dit_pairs import PAIRS, BaseTransformerForFirstCalls, distilled_reference
from divdistill.control.apply import AdaptedPipeline
from divdistill.control.formats import detect_format, resolve

ATTENTION = re.compile(r".*attn\d?\.(to_q|to_k|to_v|to_out\.0)$")


def random_lora(transformer: torch.nn.Module, seed: int = 0, rank: int = 2) -> dict[str, torch.Tensor]:
    """A diffusers-format LoRA (`transformer.<path>.lora_A/B.weight`) on every attention projection."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for path, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and ATTENTION.fullmatch(path):
            state[f"transformer.{path}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=generator)
            state[f"transformer.{path}.lora_B.weight"] = 0.1 * torch.randn(
                module.out_features, rank, generator=generator
            )
    assert state
    return state


def merged(transformer: torch.nn.Module, lora: dict[str, torch.Tensor], scale: float) -> torch.nn.Module:
    """A copy of `transformer` with scale * B @ A added to each layer's weight (alpha = rank)."""
    copy_ = copy.deepcopy(transformer)
    for key, down in lora.items():
        if key.endswith(".lora_A.weight"):
            path = key[len("transformer.") : -len(".lora_A.weight")]
            up = lora[key.replace("lora_A", "lora_B")]
            copy_.get_submodule(path).weight.data += scale * up @ down
    return copy_


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("family", sorted(PAIRS))
def test_lora_on_both_models_equals_merged_weights_in_a_hybrid(family: str, tmp_path) -> None:
    lora = random_lora(PAIRS[family]().base.transformer)
    path = tmp_path / "lora.safetensors"
    save_file(lora, str(path))
    assert detect_format(lora) == "diffusers"

    pair = PAIRS[family]()
    adapted = AdaptedPipeline(pair.hybrid())
    adapter = adapted.add(str(path), scale=0.7, on="both")
    assert all(report.complete for report in adapter.reports.values())
    ours = adapted("a red circle", base_steps=1, generator=torch.Generator().manual_seed(3), output_type="np").images
    bare = PAIRS[family]().hybrid()
    without = bare("a red circle", base_steps=1, generator=torch.Generator().manual_seed(3), output_type="np")

    reference_pair = PAIRS[family]()
    reference_pair.base.transformer = merged(reference_pair.base.transformer, lora, 0.7)
    reference_pair.distilled.transformer = merged(reference_pair.distilled.transformer, lora, 0.7)
    BaseTransformerForFirstCalls(reference_pair, 1, reference_pair.defaults.base_guidance_scale, "a red circle")
    reference = distilled_reference(reference_pair, "a red circle", seed=3)
    assert _rel(ours, reference) <= 1e-4
    assert _rel(ours, without.images) > 1e-3  # the adapter changed the images

    adapted.set_scale(adapter.name, 0.0)  # scale 0: the bare pair, bit for bit
    off = adapted("a red circle", base_steps=1, generator=torch.Generator().manual_seed(3), output_type="np").images
    assert torch.equal(torch.as_tensor(off), torch.as_tensor(without.images))
    adapted.clear()
    assert not any("lora" in type(m).__name__.lower() for m in pair.distilled.transformer.modules())


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_lora_on_the_distilled_model_equals_diffusers_load_lora_weights(family: str, tmp_path) -> None:
    lora = random_lora(PAIRS[family]().base.transformer, seed=4)
    path = tmp_path / "lora.safetensors"
    save_file(lora, str(path))
    pair = PAIRS[family]()
    adapted = AdaptedPipeline(pair.hybrid())
    adapted.add(str(path), scale=-0.5, on="distilled")
    ours = adapted("a red circle", mode="distilled", generator=torch.Generator().manual_seed(1), output_type="np")

    reference_pair = PAIRS[family]()
    reference_pair.distilled.load_lora_weights(str(path), adapter_name="x")
    reference_pair.distilled.set_adapters(["x"], [-0.5])
    reference = distilled_reference(reference_pair, "a red circle", seed=1)
    assert _rel(ours.images, reference) <= 1e-5


def _kohya_flux_lora(rank: int = 2, width: int = 3072, mlp: int = 12288) -> dict[str, torch.Tensor]:
    """A kohya FLUX LoRA for one double and one single block, with Black Forest Labs' module names."""
    shapes = {}
    for stream in ("img", "txt"):
        shapes[f"double_blocks_0_{stream}_attn_qkv"] = (width, 3 * width)
        shapes[f"double_blocks_0_{stream}_attn_proj"] = (width, width)
        shapes[f"double_blocks_0_{stream}_mlp_0"] = (width, mlp)
        shapes[f"double_blocks_0_{stream}_mlp_2"] = (mlp, width)
        shapes[f"double_blocks_0_{stream}_mod_lin"] = (width, 6 * width)
    shapes["single_blocks_0_linear1"] = (width, 3 * width + mlp)
    shapes["single_blocks_0_linear2"] = (width + mlp, width)
    shapes["single_blocks_0_modulation_lin"] = (width, 3 * width)
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, (fan_in, fan_out) in shapes.items():
        state[f"lora_unet_{name}.lora_down.weight"] = torch.randn(rank, fan_in, generator=generator)
        state[f"lora_unet_{name}.lora_up.weight"] = torch.randn(fan_out, rank, generator=generator)
        state[f"lora_unet_{name}.alpha"] = torch.tensor(1.0)
    state["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.randn(rank, 768)
    state["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] = torch.randn(3072, rank)
    state["lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha"] = torch.tensor(1.0)
    return state


def test_kohya_flux_lora_resolves_at_real_width_with_fused_qkv_split() -> None:
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    state = _kohya_flux_lora()
    assert detect_format(state) == "kohya"
    with init_empty_weights():  # FLUX.1's real width, one block of each kind, no memory
        transformer = FluxTransformer2DModel(num_layers=1, num_single_layers=1, guidance_embeds=True)
    layers, report = resolve(state, transformer, target="FLUX.1-dev transformer", family="flux")
    assert report.missing == [] and report.mismatched == []
    assert len(report.unsupported) == 1 and "text-encoder" in report.unsupported[0]
    # 10 double-block layers become 14 (both qkv split in three), 3 single-block layers become 6 (linear1: q, k, v, mlp)
    assert len(layers) == 20
    # The fused img qkv is split: to_k's factor is the middle third of lora_up, alpha / rank folded into both.
    down = state["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"]
    up = state["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"]
    to_k = layers["transformer_blocks.0.attn.to_k"]
    expected = (1.0 / 2) * up[3072:6144] @ down
    assert torch.allclose(to_k.delta(), expected, rtol=1e-4, atol=1e-5)
    assert "converter rejected" not in " ".join(report.notes)


def test_kohya_flux_lora_that_does_not_fit_the_model_names_the_reason() -> None:
    pair = PAIRS["flux"]()
    layers, report = resolve(_kohya_flux_lora(rank=2, width=3072), pair.base.transformer, family="flux")
    assert not layers and not report.complete
    assert len(report.mismatched) == 20  # a real-width LoRA on the tiny model: each layer says what it expected
    assert "the model has Linear(32 -> 32)" in report.mismatched[0] or "expected" in report.mismatched[0]
