"""divdistill: diversity and control distillation for diffusion models (Gandikota & Bau, 2025)."""

from divdistill.defaults import SamplingDefaults
from divdistill.families import PairMismatchError
from divdistill.outputs import HybridPipelineOutput
from divdistill.pipeline import HybridPipeline
from divdistill.sampling import StepInfo, StepRecord
from divdistill.schedule import Segment

__version__ = "0.1.0"

__all__ = [
    "HybridPipeline",
    "HybridPipelineOutput",
    "PairMismatchError",
    "SamplingDefaults",
    "Segment",
    "StepInfo",
    "StepRecord",
    "__version__",
]
