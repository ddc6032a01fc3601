"""The family registry is the one place that knows the families: everything else asks a `Family`.

An ast walk over the library finds any comparison with a family name or with the name (or a prefix of the
name) of a family's diffusers class, and any mapping keyed by family names, outside `divdistill.families` and
`divdistill.presets` (the data that names each preset's family). Also: registration, lookups, and the diffusers
helpers the families call instead of copying them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from divdistill.families import FAMILIES, Family, SDFamily, family_of_network, get_family, register_family

SRC = Path(__file__).resolve().parents[1] / "src" / "divdistill"
#: Where family knowledge lives; testing/ builds tiny pipelines of each family by design (test support).
OWNERS = ("families", "presets", "testing")


def _family_words() -> tuple[set[str], tuple[str, ...]]:
    names = {family.name for family in FAMILIES}
    classes = tuple({c for family in FAMILIES for c in (family.pipeline_class, family.network_class)})
    return names, classes


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [s for element in node.elts for s in _strings(element)]
    return []


def _offences(tree: ast.AST, names: set[str], classes: tuple[str, ...]) -> list[str]:
    def family_specific(text: str) -> bool:
        return text in names or (len(text) >= 3 and any(c.startswith(text) for c in classes))

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            texts = [s for part in (node.left, *node.comparators) for s in _strings(part)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
            "startswith",
            "endswith",
        ):
            texts = [s for arg in node.args for s in _strings(arg)]
        elif isinstance(node, ast.Dict):
            texts = [s for key in node.keys if key is not None for s in _strings(key) if s in names]
        else:
            continue
        found += [f"line {node.lineno}: {text!r}" for text in texts if family_specific(text)]
    return found


def test_no_module_outside_the_registry_names_a_family() -> None:
    names, classes = _family_words()
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative.startswith(OWNERS):
            continue
        found = _offences(ast.parse(path.read_text()), names, classes)
        if found:
            offenders[relative] = found
    assert offenders == {}


def test_the_walk_would_catch_the_old_registries() -> None:
    """The check is not vacuous: the spellings this refactor removed are all caught."""
    names, classes = _family_words()
    old = """
FAMILY_CLASSES = {"sdxl": ("StableDiffusionXLPipeline", "UNet2DConditionModel")}
a = "unet" if FAMILY_CLASSES[family][1].startswith("UNet") else "transformer"
b = family.name not in ("sd", "sdxl")
c = family in {"flux": "FluxPipeline"}
d = type(module).__name__ == "FluxTransformer2DModel"
"""
    lines = {offence.split(":")[0] for offence in _offences(ast.parse(old), names, classes)}
    assert lines == {f"line {n}" for n in range(2, 7)}


def test_register_and_look_up_families() -> None:
    assert [f.name for f in FAMILIES][:5] == ["sdxl", "sd", "pixart", "sd3", "flux"]  # then issue 15's
    assert {"flux2", "sana"} <= {f.name for f in FAMILIES}
    assert get_family("flux").network_component == "transformer"
    assert all(get_family(name).slider is not None for name in ("sd", "pixart", "sd3", "flux"))
    assert get_family("sana").slider is None
    assert get_family("flux").kohya.rewrites_tensors and not get_family("sdxl").kohya.rewrites_tensors
    assert get_family("sd3").text_components == (
        "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2", "tokenizer_3",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown model family 'sd4'; known families: sdxl, sd, pixart"):
        get_family("sd4")
    with pytest.raises(ValueError, match="already registered"):
        register_family(SDFamily())


def test_a_new_family_registers_in_one_place() -> None:
    class ToyFamily(SDFamily):
        name = "toy"
        pipeline_class = "StableDiffusionPipeline"

        def matches(self, pipe):
            return getattr(pipe, "toy", False)

    toy = register_family(ToyFamily())
    try:
        assert get_family("toy") is toy
        assert isinstance(toy, Family)
    finally:
        FAMILIES.remove(toy)


def test_a_bare_network_finds_its_family() -> None:
    from divdistill.testing.tiny import tiny_sd_unet

    assert family_of_network(tiny_sd_unet()).network_class == "UNet2DConditionModel"
    assert family_of_network(torch.nn.Linear(2, 2)) is None


def test_families_call_diffusers_helpers_instead_of_copies() -> None:
    """The LCM w-embedding and FLUX's latent packing are diffusers' own functions, called as its pipelines do."""
    from diffusers import FluxPipeline, LatentConsistencyModelPipeline

    from divdistill.families.transformer import latent_image_ids, pack_latents, unpack_latents
    from divdistill.families.unet import guidance_embedding

    w = torch.tensor(8.0 - 1).repeat(3)
    expected = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=256)
    assert torch.equal(guidance_embedding(8.0, 3, 256, "cpu", torch.float32), expected)

    latents = torch.randn(2, 16, 8, 12, generator=torch.Generator().manual_seed(0))
    packed = pack_latents(latents)
    assert torch.equal(packed, FluxPipeline._pack_latents(latents, 2, 16, 8, 12))
    assert torch.equal(unpack_latents(packed, 8, 12), latents)
    assert torch.equal(
        unpack_latents(packed, 8, 12), FluxPipeline._unpack_latents(packed, 8 * 8, 12 * 8, vae_scale_factor=8)
    )
    ids = FluxPipeline._prepare_latent_image_ids(2, 4, 6, "cpu", torch.float32)
    assert torch.equal(latent_image_ids(8, 12, "cpu", torch.float32), ids)


def test_presets_come_from_the_registry_and_entry_points() -> None:
    """The pocket preset arrives through its entry point; the presets package never imports divdistill.pocket."""
    from divdistill import presets

    assert "pocket" in presets.PRESETS
    trees = [ast.parse(path.read_text()) for path in sorted((SRC / "presets").glob("*.py"))]
    assert len(trees) >= 2
    imports = [node for tree in trees for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [node.module for node in imports if (node.module or "").startswith("divdistill.pocket")]
    assert all(get_family(preset.family) for preset in presets.PRESETS.values())
