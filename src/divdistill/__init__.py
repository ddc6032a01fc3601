"""divdistill: diversity and control distillation for diffusion models (Gandikota & Bau, 2025).

The public names are loaded on first use (PEP 562): `import divdistill` and `divdistill --help` stay free of
torch and diffusers, which take seconds to import; `from divdistill import HybridPipeline` works as usual.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it (imported when the name is first looked up).
_LAZY: dict[str, str] = {
    "HybridPipeline": "divdistill.pipeline",
    "HybridPipelineOutput": "divdistill.outputs",
    "PairMismatchError": "divdistill.families",
    "SamplingDefaults": "divdistill.defaults",
    "Segment": "divdistill.schedule",
    "StepInfo": "divdistill.sampling",
    "StepRecord": "divdistill.sampling",
    "TraceResult": "divdistill.trajectory.run",
    "Variant": "divdistill.variant",
    "VariantsEvaluation": "divdistill.evaluation.variants",
    "evaluate": "divdistill.evaluation.variants",
    "parse_variant": "divdistill.variant",
    "trace": "divdistill.trajectory.run",
}

if TYPE_CHECKING:
    from divdistill.defaults import SamplingDefaults
    from divdistill.evaluation.variants import VariantsEvaluation, evaluate
    from divdistill.families import PairMismatchError
    from divdistill.outputs import HybridPipelineOutput
    from divdistill.pipeline import HybridPipeline
    from divdistill.sampling import StepInfo, StepRecord
    from divdistill.schedule import Segment
    from divdistill.trajectory.run import TraceResult, trace
    from divdistill.variant import Variant, parse_variant

__all__ = [
    "HybridPipeline",
    "HybridPipelineOutput",
    "PairMismatchError",
    "SamplingDefaults",
    "Segment",
    "StepInfo",
    "StepRecord",
    "TraceResult",
    "Variant",
    "VariantsEvaluation",
    "__version__",
    "evaluate",
    "parse_variant",
    "trace",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'divdistill' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """The public names (loaded or not) and the module's own dunders, not its helper imports."""
    return sorted(set(__all__) | {name for name in globals() if name.startswith("__")})
