"""Safetensors bytes that depend only on their content.

Why: `safetensors.torch.save` keeps the metadata in a Rust HashMap, whose iteration order is seeded per map, so
one file saved twice with two or more metadata keys can come out with its `__metadata__` entries in another order:
same size, other bytes, another sha256. That breaks what divdistill promises about files (a LoRA, a slider, an
embedding cache or a hub-cache file written twice from the same inputs is the same file) and made the testing
rig's "same seed, same hub bytes" check fail now and then. `safetensors_bytes` saves with safetensors and then
writes the header again with the metadata keys sorted; the tensors' part is untouched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch

_LENGTH_BYTES = 8  # the safetensors header starts with its length as a little-endian u64


def canonical_header(blob: bytes) -> bytes:
    """`blob` (a safetensors file's bytes) with its `__metadata__` keys in sorted order, same length."""
    length = int.from_bytes(blob[:_LENGTH_BYTES], "little")
    header = json.loads(blob[_LENGTH_BYTES : _LENGTH_BYTES + length])
    metadata = header.get("__metadata__")
    if not metadata or len(metadata) < 2:
        return blob
    header["__metadata__"] = dict(sorted(metadata.items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > length:  # the same entries in another order cannot be longer; keep safetensors' own bytes
        return blob
    text += b" " * (length - len(text))  # safetensors pads the header with spaces to keep tensors aligned
    return blob[:_LENGTH_BYTES] + text + blob[_LENGTH_BYTES + length :]


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """`safetensors.torch.save(tensors, metadata)`, byte-identical for identical inputs (see the module doc)."""
    from safetensors.torch import save

    return canonical_header(save(dict(tensors), metadata=dict(metadata) if metadata is not None else None))


__all__ = ["canonical_header", "safetensors_bytes"]
