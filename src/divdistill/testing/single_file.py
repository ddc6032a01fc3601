"""Tiny SDXL checkpoints in the original single-file (SGM / ldm) key layout, for the `from_single_file` path.

Why: users run student LoRAs on their own fine-tuned SDXL, which they have as one `.safetensors` file in the layout
Stability's training code writes (`model.diffusion_model.*`, `first_stage_model.*`, `conditioner.embedders.*`), not
as a diffusers folder. Testing that loading path offline needs such a file built from the tiny diffusers components
of `divdistill.testing.tiny`: this module maps diffusers keys back to the original ones with the inverse mapping
diffusers itself ships (`scripts/convert_diffusers_to_original_sdxl.py`), so diffusers' own `from_single_file`
converts them forward again and every tensor must come back equal. Test support only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["SINGLE_FILE_PREFIXES", "sd_single_file_state_dict", "sdxl_single_file_state_dict",
           "tiny_sdxl_single_file_components", "write_sdxl_single_file", "write_single_file_hub"]  # fmt: skip

#: The original checkpoint's prefix for each SDXL pipeline component.
SINGLE_FILE_PREFIXES = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text_encoder": "conditioner.embedders.0.transformer.",
    "text_encoder_2": "conditioner.embedders.1.model.",
}

#: The tiny second text encoder's width and depth (see `tiny_sdxl_single_file_components`).
TEXT_2_HIDDEN, TEXT_2_LAYERS = 48, 10


def tiny_sdxl_single_file_components(seed: int = 0) -> dict[str, Any]:
    """`tiny_sdxl_components(seed)` with a second text encoder that diffusers' single-file loader can tell apart.

    Why not the plain tiny SDXL: `from_single_file` recognises the parts of an original checkpoint by probing keys
    and widths, as real SDXL files make possible. It calls a file SDXL only if it has the second encoder's layer 9
    (`conditioner.embedders.1.model.transformer.resblocks.9...`; OpenCLIP-bigG has 32), and it takes the first
    encoder's tensors for any CLIP model whose position embedding has the first encoder's width (768 against
    bigG's 1280). The plain tiny SDXL's encoders are both 32 wide with 5 layers, so its file reads as SD 1.x and
    its `text_encoder_2` gets `text_encoder`'s weights. Here `text_encoder_2` is 48 wide with 10 layers and the
    UNet's cross-attention is 32 + 48 wide; everything else is the plain tiny SDXL's.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection

    from divdistill.testing.tiny import _clip_text_config, _finalise, _seeded, tiny_sdxl_components

    components = tiny_sdxl_components(seed)
    config = _clip_text_config()
    config.hidden_size, config.num_hidden_layers = TEXT_2_HIDDEN, TEXT_2_LAYERS
    with _seeded(seed + 3):
        text_encoder_2 = CLIPTextModelWithProjection(config)
    unet_config = {**components["unet"].config, "cross_attention_dim": config.projection_dim + TEXT_2_HIDDEN}
    with _seeded(seed):
        unet = UNet2DConditionModel.from_config(unet_config)
    return {**components, "unet": _finalise(unet), "text_encoder_2": _finalise(text_encoder_2)}


def write_single_file_hub(cache_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """Write `tiny_sdxl_single_file_components(seed)` as the diffusers repo `stabilityai/stable-diffusion-xl-base-1.0`
    into the hub cache `cache_dir` (the configs `from_single_file` reads offline); returns the components."""
    from diffusers import StableDiffusionXLPipeline

    from divdistill.testing.hub_cache import SDXL_BASE, repo_snapshot_dir, write_tree_cache

    components = tiny_sdxl_single_file_components(seed)
    snapshot = repo_snapshot_dir(cache_dir, SDXL_BASE)
    StableDiffusionXLPipeline(**components).save_pretrained(snapshot, safe_serialization=True)
    write_tree_cache(snapshot)
    return components


# Copied from diffusers scripts/convert_diffusers_to_original_sdxl.py (huggingface/diffusers@58eb52c0), with one change:
# the block counts the script hardcodes for SDXL (3 UNet levels, 4 VAE levels) are arguments, so the tiny two-level
# UNet and VAE map too (for SDXL's counts the maps are the script's), and SDXL-only keys are mapped only when present
# (so an SD 1.x UNet maps too, for the refusal tests). The script's "Reshaping ..." print is dropped; the
# `if w.ndim != 1` below was `if not w.ndim == 1`.

# =================#
# UNet Conversion #
# =================#

unet_conversion_map = [
    # (stable-diffusion, HF Diffusers)
    ("time_embed.0.weight", "time_embedding.linear_1.weight"),
    ("time_embed.0.bias", "time_embedding.linear_1.bias"),
    ("time_embed.2.weight", "time_embedding.linear_2.weight"),
    ("time_embed.2.bias", "time_embedding.linear_2.bias"),
    ("input_blocks.0.0.weight", "conv_in.weight"),
    ("input_blocks.0.0.bias", "conv_in.bias"),
    ("out.0.weight", "conv_norm_out.weight"),
    ("out.0.bias", "conv_norm_out.bias"),
    ("out.2.weight", "conv_out.weight"),
    ("out.2.bias", "conv_out.bias"),
    # the following are for sdxl
    ("label_emb.0.0.weight", "add_embedding.linear_1.weight"),
    ("label_emb.0.0.bias", "add_embedding.linear_1.bias"),
    ("label_emb.0.2.weight", "add_embedding.linear_2.weight"),
    ("label_emb.0.2.bias", "add_embedding.linear_2.bias"),
]

unet_conversion_map_resnet = [
    # (stable-diffusion, HF Diffusers)
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
]


def unet_conversion_map_layer(levels: int = 3) -> list[tuple[str, str]]:
    """The script's `unet_conversion_map_layer` for a UNet of `levels` blocks (SDXL: 3)."""
    layer_map = []
    # hardcoded number of downblocks and resnets/attentions...
    # would need smarter logic for other networks.
    for i in range(levels):
        # loop over downblocks/upblocks

        for j in range(2):
            # loop over resnets/attentions for downblocks
            hf_down_res_prefix = f"down_blocks.{i}.resnets.{j}."
            sd_down_res_prefix = f"input_blocks.{3 * i + j + 1}.0."
            layer_map.append((sd_down_res_prefix, hf_down_res_prefix))

            if i > 0:
                hf_down_atn_prefix = f"down_blocks.{i}.attentions.{j}."
                sd_down_atn_prefix = f"input_blocks.{3 * i + j + 1}.1."
                layer_map.append((sd_down_atn_prefix, hf_down_atn_prefix))

        for j in range(4):
            # loop over resnets/attentions for upblocks
            hf_up_res_prefix = f"up_blocks.{i}.resnets.{j}."
            sd_up_res_prefix = f"output_blocks.{3 * i + j}.0."
            layer_map.append((sd_up_res_prefix, hf_up_res_prefix))

            if i < levels - 1:
                # no attention layers in up_blocks.0
                hf_up_atn_prefix = f"up_blocks.{i}.attentions.{j}."
                sd_up_atn_prefix = f"output_blocks.{3 * i + j}.1."
                layer_map.append((sd_up_atn_prefix, hf_up_atn_prefix))

        if i < levels:
            # no downsample in down_blocks.3
            hf_downsample_prefix = f"down_blocks.{i}.downsamplers.0.conv."
            sd_downsample_prefix = f"input_blocks.{3 * (i + 1)}.0.op."
            layer_map.append((sd_downsample_prefix, hf_downsample_prefix))

            # no upsample in up_blocks.3
            hf_upsample_prefix = f"up_blocks.{i}.upsamplers.0."
            sd_upsample_prefix = f"output_blocks.{3 * i + 2}.{1 if i == 0 else 2}."
            layer_map.append((sd_upsample_prefix, hf_upsample_prefix))
    layer_map.append(("output_blocks.2.2.conv.", "output_blocks.2.1.conv."))

    hf_mid_atn_prefix = "mid_block.attentions.0."
    sd_mid_atn_prefix = "middle_block.1."
    layer_map.append((sd_mid_atn_prefix, hf_mid_atn_prefix))
    for j in range(2):
        hf_mid_res_prefix = f"mid_block.resnets.{j}."
        sd_mid_res_prefix = f"middle_block.{2 * j}."
        layer_map.append((sd_mid_res_prefix, hf_mid_res_prefix))
    return layer_map


def convert_unet_state_dict(unet_state_dict: dict[str, torch.Tensor], levels: int = 3) -> dict[str, torch.Tensor]:
    # buyer beware: this is a *brittle* function,
    # and correct output requires that all of these pieces interact in
    # the exact order in which I have arranged them.
    mapping = {k: k for k in unet_state_dict}
    for sd_name, hf_name in unet_conversion_map:
        if hf_name in mapping:  # not in the script: SD 1.x UNets have no add_embedding
            mapping[hf_name] = sd_name
    for k, v in mapping.items():
        if "resnets" in k:
            for sd_part, hf_part in unet_conversion_map_resnet:
                v = v.replace(hf_part, sd_part)
            mapping[k] = v
    layer_map = unet_conversion_map_layer(levels)
    for k, v in mapping.items():
        for sd_part, hf_part in layer_map:
            v = v.replace(hf_part, sd_part)
        mapping[k] = v
    new_state_dict = {sd_name: unet_state_dict[hf_name] for hf_name, sd_name in mapping.items()}
    return new_state_dict


# ================#
# VAE Conversion #
# ================#


def vae_conversion_map(levels: int = 4) -> list[tuple[str, str]]:
    """The script's `vae_conversion_map` for a VAE of `levels` blocks (SDXL: 4)."""
    conversion_map = [
        # (stable-diffusion, HF Diffusers)
        ("nin_shortcut", "conv_shortcut"),
        ("norm_out", "conv_norm_out"),
        ("mid.attn_1.", "mid_block.attentions.0."),
    ]

    for i in range(levels):
        # down_blocks have two resnets
        for j in range(2):
            hf_down_prefix = f"encoder.down_blocks.{i}.resnets.{j}."
            sd_down_prefix = f"encoder.down.{i}.block.{j}."
            conversion_map.append((sd_down_prefix, hf_down_prefix))

        if i < levels - 1:
            hf_downsample_prefix = f"down_blocks.{i}.downsamplers.0."
            sd_downsample_prefix = f"down.{i}.downsample."
            conversion_map.append((sd_downsample_prefix, hf_downsample_prefix))

            hf_upsample_prefix = f"up_blocks.{i}.upsamplers.0."
            sd_upsample_prefix = f"up.{levels - 1 - i}.upsample."
            conversion_map.append((sd_upsample_prefix, hf_upsample_prefix))

        # up_blocks have three resnets
        # also, up blocks in hf are numbered in reverse from sd
        for j in range(3):
            hf_up_prefix = f"decoder.up_blocks.{i}.resnets.{j}."
            sd_up_prefix = f"decoder.up.{levels - 1 - i}.block.{j}."
            conversion_map.append((sd_up_prefix, hf_up_prefix))

    # this part accounts for mid blocks in both the encoder and the decoder
    for i in range(2):
        hf_mid_res_prefix = f"mid_block.resnets.{i}."
        sd_mid_res_prefix = f"mid.block_{i + 1}."
        conversion_map.append((sd_mid_res_prefix, hf_mid_res_prefix))
    return conversion_map


vae_conversion_map_attn = [
    # (stable-diffusion, HF Diffusers)
    ("norm.", "group_norm."),
    # the following are for SDXL
    ("q.", "to_q."),
    ("k.", "to_k."),
    ("v.", "to_v."),
    ("proj_out.", "to_out.0."),
]


def reshape_weight_for_sd(w: torch.Tensor) -> torch.Tensor:
    # convert HF linear weights to SD conv2d weights
    if w.ndim != 1:
        return w.reshape(*w.shape, 1, 1)
    else:
        return w


def convert_vae_state_dict(vae_state_dict: dict[str, torch.Tensor], levels: int = 4) -> dict[str, torch.Tensor]:
    mapping = {k: k for k in vae_state_dict}
    conversion_map = vae_conversion_map(levels)
    for k, v in mapping.items():
        for sd_part, hf_part in conversion_map:
            v = v.replace(hf_part, sd_part)
        mapping[k] = v
    for k, v in mapping.items():
        if "attentions" in k:
            for sd_part, hf_part in vae_conversion_map_attn:
                v = v.replace(hf_part, sd_part)
            mapping[k] = v
    new_state_dict = {v: vae_state_dict[k] for k, v in mapping.items()}
    weights_to_convert = ["q", "k", "v", "proj_out"]
    for k, v in new_state_dict.items():
        for weight_name in weights_to_convert:
            if f"mid.attn_1.{weight_name}.weight" in k:
                new_state_dict[k] = reshape_weight_for_sd(v)
    return new_state_dict


# =========================#
# Text Encoder Conversion #
# =========================#


textenc_conversion_lst = [
    # (stable-diffusion, HF Diffusers)
    ("transformer.resblocks.", "text_model.encoder.layers."),
    ("ln_1", "layer_norm1"),
    ("ln_2", "layer_norm2"),
    (".c_fc.", ".fc1."),
    (".c_proj.", ".fc2."),
    (".attn", ".self_attn"),
    ("ln_final.", "text_model.final_layer_norm."),
    ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
]
protected = {re.escape(x[1]): x[0] for x in textenc_conversion_lst}
textenc_pattern = re.compile("|".join(protected.keys()))

# Ordering is from https://github.com/pytorch/pytorch/blob/master/test/cpp/api/modules.cpp
code2idx = {"q": 0, "k": 1, "v": 2}


def convert_openclip_text_enc_state_dict(text_enc_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    new_state_dict = {}
    capture_qkv_weight: dict[str, list] = {}
    capture_qkv_bias: dict[str, list] = {}
    for k, v in text_enc_dict.items():
        if (
            k.endswith(".self_attn.q_proj.weight")
            or k.endswith(".self_attn.k_proj.weight")
            or k.endswith(".self_attn.v_proj.weight")
        ):
            k_pre = k[: -len(".q_proj.weight")]
            k_code = k[-len("q_proj.weight")]
            if k_pre not in capture_qkv_weight:
                capture_qkv_weight[k_pre] = [None, None, None]
            capture_qkv_weight[k_pre][code2idx[k_code]] = v
            continue

        if (
            k.endswith(".self_attn.q_proj.bias")
            or k.endswith(".self_attn.k_proj.bias")
            or k.endswith(".self_attn.v_proj.bias")
        ):
            k_pre = k[: -len(".q_proj.bias")]
            k_code = k[-len("q_proj.bias")]
            if k_pre not in capture_qkv_bias:
                capture_qkv_bias[k_pre] = [None, None, None]
            capture_qkv_bias[k_pre][code2idx[k_code]] = v
            continue

        relabelled_key = textenc_pattern.sub(lambda m: protected[re.escape(m.group(0))], k)
        new_state_dict[relabelled_key] = v

    for k_pre, tensors in capture_qkv_weight.items():
        if None in tensors:
            raise Exception("CORRUPTED MODEL: one of the q-k-v values for the text encoder was missing")
        relabelled_key = textenc_pattern.sub(lambda m: protected[re.escape(m.group(0))], k_pre)
        new_state_dict[relabelled_key + ".in_proj_weight"] = torch.cat(tensors)

    for k_pre, tensors in capture_qkv_bias.items():
        if None in tensors:
            raise Exception("CORRUPTED MODEL: one of the q-k-v values for the text encoder was missing")
        relabelled_key = textenc_pattern.sub(lambda m: protected[re.escape(m.group(0))], k_pre)
        new_state_dict[relabelled_key + ".in_proj_bias"] = torch.cat(tensors)

    return new_state_dict


def convert_openai_text_enc_state_dict(text_enc_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return text_enc_dict


# End of the copy from diffusers scripts/convert_diffusers_to_original_sdxl.py (its __main__: the function below).


def _tensors(components: dict[str, Any], name: str, wrapped: bool = False) -> dict[str, torch.Tensor]:
    """A component's state dict (copied); `wrapped`: with `text_model.` put back on a flattened CLIPTextModel's keys
    (transformers >= 5.6 dropped it; the original checkpoints, written from the wrapped model, have it)."""
    state = {k: v.detach().clone().contiguous() for k, v in components[name].state_dict().items()}
    return {(k if k.startswith("text_model.") or not wrapped else f"text_model.{k}"): v for k, v in state.items()}


def _levels(components: dict[str, Any], name: str) -> int:
    return len(components[name].config.block_out_channels)


def sdxl_single_file_state_dict(components: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The original single-file state dict of an SDXL pipeline's `components` (as the script's __main__ builds it)."""
    # Convert the UNet model
    unet_state_dict = convert_unet_state_dict(_tensors(components, "unet"), _levels(components, "unet"))
    unet_state_dict = {"model.diffusion_model." + k: v for k, v in unet_state_dict.items()}

    # Convert the VAE model
    vae_state_dict = convert_vae_state_dict(_tensors(components, "vae"), _levels(components, "vae"))
    vae_state_dict = {"first_stage_model." + k: v for k, v in vae_state_dict.items()}

    # Convert text encoder 1
    text_enc_dict = convert_openai_text_enc_state_dict(_tensors(components, "text_encoder", wrapped=True))
    text_enc_dict = {"conditioner.embedders.0.transformer." + k: v for k, v in text_enc_dict.items()}

    # Convert text encoder 2
    text_enc_2_dict = convert_openclip_text_enc_state_dict(_tensors(components, "text_encoder_2"))
    text_enc_2_dict = {"conditioner.embedders.1.model." + k: v for k, v in text_enc_2_dict.items()}
    # We call the `.T.contiguous()` to match what's done in
    # https://github.com/huggingface/diffusers/blob/84905ca7287876b925b6bf8e9bb92fec21c78764/src/diffusers/loaders/single_file_utils.py#L1085
    text_enc_2_dict["conditioner.embedders.1.model.text_projection"] = text_enc_2_dict.pop(
        "conditioner.embedders.1.model.text_projection.weight"
    ).T.contiguous()

    # Put together new checkpoint
    return {**unet_state_dict, **vae_state_dict, **text_enc_dict, **text_enc_2_dict}


def sd_single_file_state_dict(components: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The original single-file state dict of an SD 1.x pipeline's `components` (a refusal test's foreign file):
    diffusers' SD 1.x script (convert_diffusers_to_original_stable_diffusion.py) maps the UNet and the VAE as the
    SDXL one does, and keeps the text encoder's keys under `cond_stage_model.transformer.`."""
    unet = convert_unet_state_dict(_tensors(components, "unet"), _levels(components, "unet"))
    vae = convert_vae_state_dict(_tensors(components, "vae"), _levels(components, "vae"))
    text = _tensors(components, "text_encoder", wrapped=True)
    return {**{"model.diffusion_model." + k: v for k, v in unet.items()},
            **{"first_stage_model." + k: v for k, v in vae.items()},
            **{"cond_stage_model.transformer." + k: v for k, v in text.items()}}  # fmt: skip


def write_sdxl_single_file(components: dict[str, Any], path: str | Path, drop: tuple[str, ...] = ()) -> Path:
    """Write `components` (an SDXL pipeline's; an SD 1.x one's without `text_encoder_2`) as one original-layout
    `.safetensors` checkpoint at `path`, without the keys starting with one of `drop` (a truncated file)."""
    from safetensors.torch import save_file

    state = (sdxl_single_file_state_dict if "text_encoder_2" in components else sd_single_file_state_dict)(components)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v for k, v in state.items() if not (drop and k.startswith(drop))}, str(path))
    return path
