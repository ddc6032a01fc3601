"""Control distillation: LoRAs and Concept Sliders moved between base and distilled models, trained, measured.

    from divdistill.control import AdaptedPipeline

    adapted = AdaptedPipeline(pipe)                                   # pipe: a HybridPipeline
    adapted.add("age_slider.pt", scale=2.0, on="both", start=700)     # any supported format (see formats)
    images = adapted("a photo of a person").images

Modules: `formats` (read, resolve and write LoRA files), `apply` (adapters on a hybrid pair), `train`
(`divdistill slider train`), `evaluate` (`divdistill control eval`).
"""

from divdistill.adapter_spec import parse_lora_arg
from divdistill.control.apply import AdaptedPipeline, AppliedAdapter, apply_adapters
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

__all__ = [
    "FORMATS",
    "AdaptedPipeline",
    "AdapterFormatError",
    "AdapterMismatchError",
    "AppliedAdapter",
    "LoraFile",
    "LoraLayer",
    "MatchReport",
    "apply_adapters",
    "detect_format",
    "parse_lora_arg",
    "read_lora",
    "resolve",
    "save_lora",
]
