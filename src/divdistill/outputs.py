"""What a call returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from divdistill.sampling import StepRecord


@dataclass
class HybridPipelineOutput:
    """Images like diffusers (PIL list, numpy array, or latents tensor) plus the record of the run.

    `steps` lists which model ran each step at which timestep and guidance; `nfe` is network evaluations
    per image (classifier-free guidance counts two); `seconds` is the wall time of the whole call
    (prompt encoding, every step including the base model's, and decoding). `trajectory` holds every step's
    x_t and x0-hat when the call asked for it (`return_trajectory=True`), else None.
    """

    images: Any
    steps: list[StepRecord] = field(default_factory=list)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    trajectory: Any = None

    @property
    def frames(self) -> Any:
        """The clips of a video pair (`images`, named as diffusers' `WanPipelineOutput.frames`)."""
        return self.images

    @property
    def nfe(self) -> float:
        """Per image; the adaptive switch's images differ, so theirs is the mean (`divdistill.diversity`)."""
        per_image = self.settings.get("adaptive", {}).get("nfe_per_image")
        if per_image:
            return sum(per_image) / len(per_image)
        return sum(record.nfe for record in self.steps)

    @property
    def nfe_by_model(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for record in self.steps:
            totals[record.model] = totals.get(record.model, 0) + record.nfe
        return totals

    def record(self) -> dict[str, Any]:
        """JSON-ready description of the run."""
        return {
            "settings": self.settings,
            "seconds": self.seconds,
            "nfe": self.nfe,
            "nfe_by_model": self.nfe_by_model,
            "steps": [r.to_dict() for r in self.steps],
        }
