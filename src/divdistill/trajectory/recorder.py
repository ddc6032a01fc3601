"""The recorder's former home: it moved to `divdistill.recording` (below the pipeline, which records with it).

Kept as a re-export for one release; import from `divdistill.recording` or `divdistill.trajectory`.
"""

from divdistill.recording import (
    FORMAT_VERSION,
    META_FILE,
    TENSORS_FILE,
    Trajectory,
    TrajectoryRecorder,
    chain_callbacks,
    default_label,
)

__all__ = [
    "FORMAT_VERSION",
    "META_FILE",
    "TENSORS_FILE",
    "Trajectory",
    "TrajectoryRecorder",
    "chain_callbacks",
    "default_label",
]
