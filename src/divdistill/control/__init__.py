"""Control distillation: LoRAs and Concept Sliders moved between base and distilled models, trained, measured.

    from divdistill.control import AdaptedPipeline

    adapted = AdaptedPipeline(pipe)                                   # pipe: a HybridPipeline
    adapted.add("age_slider.pt", scale=2.0, on="both", start=700)     # any supported format (see formats)
    images = adapted("a photo of a person").images

Modules: `formats` (read, resolve and write LoRA files), `apply` (adapters on a hybrid pair), `kinds` (deltas,
Custom Diffusion and textual inversion next to LoRAs: `delta`, `svd`, `patch`, `custom_diffusion`,
`embeddings`), `train` (`divdistill slider train`), `evaluate` (`divdistill control eval`).
"""

from divdistill.adapter_spec import parse_lora_arg
from divdistill.control.apply import AdaptedPipeline, AppliedAdapter, apply_adapters
from divdistill.control.custom_diffusion import CustomDiffusionFile, read_custom_diffusion
from divdistill.control.delta import DeltaMismatchError, ParameterDelta, delta_from_finetune
from divdistill.control.embeddings import EmbeddingError, load_embeddings, read_embedding, unload_embeddings
from divdistill.control.formats import (
    FORMATS,
    AdapterFormatError,
    AdapterMismatchError,
    LoraFile,
    LoraLayer,
    MatchReport,
    detect_format,
    read_lora,
    resolve,
    save_lora,
)
from divdistill.control.kinds import KINDS, detect_kind
from divdistill.control.svd import delta_to_lora

__all__ = [
    "FORMATS",
    "KINDS",
    "AdaptedPipeline",
    "AdapterFormatError",
    "AdapterMismatchError",
    "AppliedAdapter",
    "CustomDiffusionFile",
    "DeltaMismatchError",
    "EmbeddingError",
    "LoraFile",
    "LoraLayer",
    "MatchReport",
    "ParameterDelta",
    "apply_adapters",
    "delta_from_finetune",
    "delta_to_lora",
    "detect_format",
    "detect_kind",
    "load_embeddings",
    "parse_lora_arg",
    "read_custom_diffusion",
    "read_embedding",
    "read_lora",
    "resolve",
    "save_lora",
    "unload_embeddings",
]
