"""Safetensors files are byte-identical for identical inputs (safetensors' own metadata order is not)."""

from __future__ import annotations

import torch
from safetensors import safe_open
from safetensors.torch import save

from divdistill.control.formats import LoraLayer, save_lora
from divdistill.tensorfiles import canonical_header, safetensors_bytes

METADATA = {"format": "pt", "zeta": "1", "alpha": 'ä "quoted" \n', "beta": '{"json": [1, 2]}'}


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"b.weight": torch.randn(3, 5, generator=generator), "a.half": torch.randn(7, generator=generator).half()}


def test_safetensors_itself_orders_metadata_differently_between_saves() -> None:
    """The premise: if safetensors ever makes its bytes deterministic, this fails and the module can go."""
    assert len({save(_tensors(), metadata=METADATA) for _ in range(40)}) > 1


def test_the_same_inputs_give_the_same_bytes_and_read_back_unchanged(tmp_path) -> None:
    blobs = {safetensors_bytes(_tensors(), METADATA) for _ in range(40)}
    assert len(blobs) == 1
    blob = blobs.pop()
    assert len(blob) == len(save(_tensors(), metadata=METADATA))  # same header length, tensors where they were
    path = tmp_path / "x.safetensors"
    path.write_bytes(blob)
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == METADATA
        for name, tensor in _tensors().items():
            assert torch.equal(handle.get_tensor(name), tensor)


def test_a_single_key_header_is_left_as_safetensors_wrote_it() -> None:
    blob = save(_tensors(), metadata={"format": "pt"})
    assert canonical_header(blob) is blob


def test_save_lora_writes_the_same_file_twice(tmp_path) -> None:
    generator = torch.Generator().manual_seed(1)
    layers = {
        f"block.{i}.to_q": LoraLayer(
            f"block.{i}.to_q", torch.randn(2, 6, generator=generator), torch.randn(6, 2, generator=generator), 1.0 + i
        )
        for i in range(3)
    }
    files = [save_lora(layers, tmp_path / f"{n}.safetensors", info={"n": 1}).read_bytes() for n in range(12)]
    assert len(set(files)) == 1
