"""Textual inversion on a pair: the file formats, diffusers parity, both models see the token, removal, refusals."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

from divdistill import HybridPipeline
from divdistill.control.embeddings import (
    EmbeddingError,
    load_embeddings,
    loaded_tokens,
    read_embedding,
    unload_embeddings,
)
from divdistill.testing.tiny import tiny_text_encoder
from pairs import BaseForFirstCalls, sd_pair, sdxl_pair

WIDTH = 32  # the tiny CLIP encoders'
SIZE = {"height": 64, "width": 64}


def vectors(count: int, seed: int, width: int = WIDTH) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed))


def hybrid(base, distilled) -> HybridPipeline:
    pipe = HybridPipeline(base, distilled)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def with_own_text_side(pipeline: StableDiffusionPipeline, encoder: torch.nn.Module) -> StableDiffusionPipeline:
    """`pipeline` with its own text encoder and a copy of its tokenizer (a pair that does not share them)."""
    own = {"text_encoder": encoder, "tokenizer": copy.deepcopy(pipeline.tokenizer)}
    return StableDiffusionPipeline(**{**pipeline.components, **own, "requires_safety_checker": False})


def embeds(pipeline, prompt: str) -> torch.Tensor:
    return pipeline.encode_prompt(prompt, "cpu", 1, False)[0]


def row(pipeline, token: str, encoder: str = "text_encoder", tokenizer: str = "tokenizer") -> torch.Tensor:
    index = getattr(pipeline, tokenizer).convert_tokens_to_ids(token)
    return getattr(pipeline, encoder).get_input_embeddings().weight[index]


# --------------------------------------------------------------------------------------------- formats
def write(kind: str, folder: Path, vec: torch.Tensor) -> Path:
    """An embedding file as each tool writes it (token '<cat>' where the format names one)."""
    if kind == "diffusers-safetensors":
        save_file({"<cat>": vec.contiguous()}, folder / "learned_embeds.safetensors")
        return folder / "learned_embeds.safetensors"
    if kind == "diffusers-bin":
        torch.save({"<cat>": vec}, folder / "learned_embeds.bin")
        return folder / "learned_embeds.bin"
    if kind == "diffusers-folder":
        save_file({"<cat>": vec.contiguous()}, folder / "learned_embeds.safetensors")
        return folder
    if kind == "a1111-pt":  # stable-diffusion-webui's textual_inversion.py save()
        data = {"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": "<cat>", "step": 3000,
                "sd_checkpoint": "abc123", "sd_checkpoint_name": "v1-5"}  # fmt: skip
        torch.save(data, folder / "cat.pt")
        return folder / "cat.pt"
    assert kind == "a1111-safetensors"
    save_file({"emb_params": vec.contiguous()}, folder / "<cat>.safetensors")  # the token is the file's stem
    return folder / "<cat>.safetensors"


FORMATS = ["diffusers-safetensors", "diffusers-bin", "diffusers-folder", "a1111-pt", "a1111-safetensors"]


@pytest.mark.parametrize("kind", FORMATS)
def test_every_format_loads_its_token_once_into_the_shared_encoder(kind: str, tmp_path: Path) -> None:
    base, distilled = sd_pair()
    pipe = hybrid(base, distilled)
    vec = vectors(2, seed=1)
    before = len(base.tokenizer)
    tokens = load_embeddings(pipe, write(kind, tmp_path, vec))
    assert tokens == ["<cat>", "<cat>_1"]
    assert len(base.tokenizer) == before + 2  # once: the distilled pipeline holds the same tokenizer
    assert distilled.tokenizer is base.tokenizer and distilled.text_encoder is base.text_encoder
    assert torch.equal(row(base, "<cat>"), vec[0]) and torch.equal(row(base, "<cat>_1"), vec[1])
    assert base.maybe_convert_prompt("a <cat> toy", base.tokenizer) == "a <cat> <cat>_1 toy"


def test_token_override_and_a_tensor_needs_a_token(tmp_path: Path) -> None:
    base, distilled = sd_pair()
    pipe = hybrid(base, distilled)
    assert load_embeddings(pipe, write("a1111-pt", tmp_path, vectors(1, 2)), token="<kitty>") == ["<kitty>"]
    assert "<cat>" not in base.tokenizer.get_vocab()
    with pytest.raises(EmbeddingError) as error:
        read_embedding(vectors(1, 3))
    assert str(error.value) == "<Tensor> names no token; pass token='<my-token>'"
    assert load_embeddings(pipe, vectors(1, 3)[0], token="<raw>") == ["<raw>"]


# --------------------------------------------------------------------------------------------- parity
def test_pair_equals_diffusers_own_load_textual_inversion_bit_for_bit(tmp_path: Path) -> None:
    """Distilled alone (bitwise) and the hybrid (base step 1 sees the token too) against diffusers' pipelines
    that loaded the same file themselves."""
    path = write("diffusers-safetensors", tmp_path, vectors(3, seed=4))
    prompt, kwargs = "a <cat> in a hat", {"output_type": "np", "num_inference_steps": 4, **SIZE}
    base, distilled = sd_pair()
    pipe = hybrid(base, distilled)
    load_embeddings(pipe, path)
    ref_base, ref_distilled = sd_pair()  # the same weights, built afresh
    ref_distilled.load_textual_inversion(str(path))  # diffusers, into the (shared) tokenizer and encoder

    ours = pipe(prompt, base_steps=0, guidance_scale=0.0, generator=torch.Generator().manual_seed(0), **kwargs)
    theirs = ref_distilled(prompt, guidance_scale=0.0, generator=torch.Generator().manual_seed(0), **kwargs)
    np.testing.assert_array_equal(ours.images, theirs.images)

    ours = pipe(prompt, base_steps=1, base_guidance_scale=7.5, guidance_scale=0.0,
                generator=torch.Generator().manual_seed(1), **kwargs)  # fmt: skip
    BaseForFirstCalls(ref_base, ref_distilled, 1, 7.5, prompt)
    theirs = ref_distilled(prompt, guidance_scale=0.0, generator=torch.Generator().manual_seed(1), **kwargs)
    assert np.abs(ours.images - theirs.images).max() <= 1e-4 * np.abs(theirs.images).max()
    assert not torch.equal(embeds(base, prompt), embeds(base, "a cat in a hat"))


def test_sdxl_two_encoder_file_goes_to_both_encoders_as_diffusers_docs_load_it(tmp_path: Path) -> None:
    clip_l, clip_g = vectors(2, seed=5), vectors(2, seed=6)
    save_file({"clip_l": clip_l, "clip_g": clip_g}, tmp_path / "web_y2k.safetensors")
    base, distilled = sdxl_pair()
    pipe = hybrid(base, distilled)
    assert load_embeddings(pipe, tmp_path / "web_y2k.safetensors", token="<s0>") == ["<s0>", "<s0>_1"]
    assert torch.equal(row(base, "<s0>_1"), clip_l[1])
    assert torch.equal(row(base, "<s0>_1", "text_encoder_2", "tokenizer_2"), clip_g[1])

    reference, _ = sdxl_pair()  # diffusers' documented SDXL recipe (unload_textual_inversion's docstring)
    reference.load_textual_inversion(clip_l, token="<s0>", text_encoder=reference.text_encoder,
                                     tokenizer=reference.tokenizer)  # fmt: skip
    reference.load_textual_inversion(clip_g, token="<s0>", text_encoder=reference.text_encoder_2,
                                     tokenizer=reference.tokenizer_2)  # fmt: skip
    settings = {"device": "cpu", "num_images_per_prompt": 1, "do_classifier_free_guidance": False}
    for ours, theirs in zip(distilled.encode_prompt("<s0> a cat", **settings),
                            reference.encode_prompt("<s0> a cat", **settings)):  # fmt: skip
        if ours is not None:
            assert torch.equal(ours, theirs)


def test_a_pair_that_does_not_share_encoders_gets_the_token_in_both_reverse_transfer(tmp_path: Path) -> None:
    """An embedding trained with the distilled model's own (different) encoder, applied to the base too."""
    base, shared = sd_pair()
    distilled = with_own_text_side(shared, tiny_text_encoder(seed=9))
    pipe = hybrid(base, distilled)
    references = [
        StableDiffusionPipeline(**{**model.components, "text_encoder": copy.deepcopy(model.text_encoder),
                                   "tokenizer": copy.deepcopy(model.tokenizer), "requires_safety_checker": False})
        for model in (distilled, base)
    ]  # fmt: skip
    path = write("diffusers-safetensors", tmp_path, vectors(1, seed=7))
    assert load_embeddings(pipe, path) == ["<cat>"]
    for model, reference in zip((distilled, base), references):
        reference.load_textual_inversion(str(path))
        assert torch.equal(embeds(model, "a <cat>"), embeds(reference, "a <cat>"))
    assert not torch.equal(embeds(base, "a <cat>"), embeds(distilled, "a <cat>"))  # two encoders, one token each
    unload_embeddings(pipe, ["<cat>"])
    assert "<cat>" not in base.tokenizer.get_vocab() and "<cat>" not in distilled.tokenizer.get_vocab()


# --------------------------------------------------------------------------------------------- removal
def test_unload_restores_the_pair_and_keeps_the_other_embeddings() -> None:
    from divdistill.pocket import pocket_pipeline

    pipe = pocket_pipeline()
    encoder, tokenizer = pipe.base.text_encoder, pipe.base.tokenizer
    weight, plain = encoder.get_input_embeddings().weight.clone(), embeds(pipe.base, "a red circle")
    state = torch.get_rng_state()
    first = load_embeddings(pipe, {"<big>": vectors(2, 8, width=64)})
    second = load_embeddings(pipe, {"<dot>": vectors(1, 9, width=64)})
    assert torch.equal(torch.get_rng_state(), state)  # transformers' resize drew from a forked RNG
    assert loaded_tokens(pipe) == ["<big>", "<big>_1", "<dot>"]
    with_dot = embeds(pipe.distilled, "a <dot> circle")
    unload_embeddings(pipe, ["<big>"])  # its <big>_1 goes with it
    assert loaded_tokens(pipe) == second
    assert torch.equal(embeds(pipe.distilled, "a <dot> circle"), with_dot)
    with pytest.raises(EmbeddingError) as error:
        unload_embeddings(pipe, first)
    assert str(error.value) == "no embedding token '<big>' in the pair's tokenizer; loaded: <dot>"
    unload_embeddings(pipe, second)
    assert len(tokenizer) == 584 and encoder.config.vocab_size == 584
    assert torch.equal(encoder.get_input_embeddings().weight, weight)
    assert torch.equal(embeds(pipe.base, "a red circle"), plain)


# --------------------------------------------------------------------------------------------- refusals
def test_refusals_in_one_line_before_anything_changes(tmp_path: Path) -> None:
    base, distilled = sd_pair()
    pipe = hybrid(base, distilled)
    load_embeddings(pipe, {"<cat>": vectors(1, 1)})
    size = len(base.tokenizer)
    cases = [
        ({"<cat>": vectors(1, 2)}, None,
         "token '<cat>' is already in the vocabulary of the pair's tokenizer; pass token= with a new name "
         "(e.g. '<cat-ti>'), or unload it first"),
        ({"<x>": vectors(1, 2)}, "a",  # an ordinary word: adding it would rewrite every prompt saying "a"
         "token 'a' is already in the vocabulary of the pair's tokenizer; pass token= with a new name "
         "(e.g. '<a-ti>'), or unload it first"),
        ({"<wide>": vectors(1, 2, width=48)}, None,
         "<dict>: embedding width 48 does not fit the pair's text_encoder (width 32); it was trained for another "
         "text encoder"),
        ({"clip_l": vectors(1, 2), "clip_g": vectors(1, 3)}, "<xl>",
         "<dict> is an SDXL two-encoder embedding (clip_l, clip_g) but this sd pair has one text encoder; use an "
         "embedding trained for this model"),
        ({"a": vectors(1, 2), "b": vectors(1, 3)}, None,
         "<dict>: not a textual-inversion file (keys a, b); expected {token: tensor} (diffusers), string_to_param "
         "or emb_params (A1111), or clip_l + clip_g (SDXL)"),
    ]  # fmt: skip
    for source, token, message in cases:
        with pytest.raises(EmbeddingError) as error:
            load_embeddings(pipe, source, token=token)
        assert str(error.value) == message
    assert len(base.tokenizer) == size
    with pytest.raises(EmbeddingError) as error:
        load_embeddings(pipe, tmp_path / "missing.safetensors")
    assert str(error.value) == f"no embedding file {tmp_path / 'missing.safetensors'}; check the path"

    xl = hybrid(*sdxl_pair())
    with pytest.raises(EmbeddingError) as error:
        load_embeddings(xl, {"<one>": vectors(1, 4)})
    assert str(error.value) == ("<dict> holds one embedding (32 wide) but this sdxl pair has 2 text encoders; it "
                                "needs a two-encoder file (clip_l and clip_g)")  # fmt: skip


def test_a_token_one_side_already_has_leaves_the_other_side_unchanged() -> None:
    base, shared = sd_pair()
    distilled = with_own_text_side(shared, copy.deepcopy(base.text_encoder))
    distilled.load_textual_inversion({"<cat>": vectors(1, 1)[0]})
    pipe = hybrid(base, distilled)
    size = len(base.tokenizer)
    with pytest.raises(EmbeddingError, match="already in the vocabulary"):
        load_embeddings(pipe, {"<cat>": vectors(1, 2)})
    assert len(base.tokenizer) == size and "<cat>" not in base.tokenizer.get_vocab()


def test_families_without_embedding_tokens_are_refused() -> None:
    from dit_pairs import pixart_pair

    pipe = pixart_pair().hybrid()
    with pytest.raises(EmbeddingError) as error:
        load_embeddings(pipe, {"<cat>": vectors(1, 1)})
    assert str(error.value) == ("textual inversion: PixArtAlphaPipeline (pixart) does not read embedding tokens "
                                "(diffusers' TextualInversionLoaderMixin); SD and SDXL pairs do")  # fmt: skip
