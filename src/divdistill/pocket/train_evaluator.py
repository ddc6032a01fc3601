"""Train the pocket evaluator on freshly rendered world images.

Each step renders a new batch (deterministic by seed and step) and degrades it mildly (a random blur mix and
Gaussian noise), so the evaluator also reads the slightly soft images a small generator produces. Loss:
cross-entropy for shape and colour, MSE on the standardised size, position and background.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from divdistill.pocket.evaluator import (
    REGRESSION_CENTRE,
    REGRESSION_SCALE,
    EvaluatorConfig,
    PocketEvaluator,
    accuracy,
)
from divdistill.pocket.training import Phase, StepRandom, derive_seed, run_phase, training_device, warmup_cosine
from divdistill.pocket.world import sample_world


@dataclass
class EvaluatorTrainConfig:
    seed: int = 0
    width: int = 32
    steps: int = 1500
    batch: int = 128
    lr: float = 2e-3
    warmup: int = 50
    blur: float = 0.5  # largest weight of the blurred copy mixed in
    noise: float = 0.03  # largest Gaussian noise std
    checkpoint_every: int = 250
    eval_samples: int = 2048

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def degrade(images: torch.Tensor, rnd: StepRandom, blur: float, noise: float) -> torch.Tensor:
    """Mix each image with a 3x3 box-blurred copy and add Gaussian noise (random strengths per image)."""
    n = images.shape[0]
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    weight = rnd.rand((n, 1, 1, 1), images.device) * blur
    sigma = rnd.rand((n, 1, 1, 1), images.device) * noise
    out = images * (1 - weight) + blurred * weight + sigma * rnd.randn(images.shape, images.device)
    return out.clamp(0, 1)


class EvaluatorTrainer:
    def __init__(self, out: str | Path, config: EvaluatorTrainConfig | None = None, device: str | None = "auto"):
        self.out = Path(out)
        self.config = config or EvaluatorTrainConfig()
        self.device = training_device(device)
        self.out.mkdir(parents=True, exist_ok=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.config.seed, "evaluator-init") % (2**31))
            self.model = PocketEvaluator(EvaluatorConfig(width=self.config.width)).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr, weight_decay=1e-4)
        (self.out / "train_config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")

    def step(self, i: int) -> dict[str, float]:
        c = self.config
        rnd = StepRandom(c.seed, "evaluator", i)
        batch = sample_world(c.batch, rnd.world_seed())
        images = degrade(batch.images.to(self.device), rnd, c.blur, c.noise)
        a = batch.attributes
        target = (torch.stack([a.size, a.x, a.y, a.background], 1) - REGRESSION_CENTRE) / REGRESSION_SCALE
        out = self.model(images)
        shape_loss = F.cross_entropy(out["shape"], a.shape.to(self.device))
        colour_loss = F.cross_entropy(out["colour"], a.colour.to(self.device))
        regression_loss = F.mse_loss(out["regression"], target.to(self.device))
        loss = shape_loss + colour_loss + regression_loss
        for group in self.optimizer.param_groups:
            group["lr"] = c.lr * warmup_cosine(i, c.steps, c.warmup, floor=0.02)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {
            "loss": loss.item(),
            "shape": shape_loss.item(),
            "colour": colour_loss.item(),
            "regression": regression_loss.item(),
        }

    def phase(self) -> Phase:
        return Phase(
            name="evaluator",
            steps=self.config.steps,
            step=self.step,
            state=lambda: {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()},
            load=self._load,
            columns=["loss", "shape", "colour", "regression"],
            every=self.config.checkpoint_every,
        )

    def _load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def run(self, resume: bool = False, stop_after: int | None = None, quiet: bool = False) -> Path | None:
        done = run_phase(self.phase(), self.out, resume, self.device, stop_after, quiet)
        if done < self.config.steps:
            return None
        self.model.eval()
        metrics = accuracy(self.model, n=self.config.eval_samples) if self.config.eval_samples else {}
        return self.model.cpu().save(self.out / "evaluator", metrics=metrics)


def train_evaluator(
    out: str | Path,
    config: EvaluatorTrainConfig | None = None,
    device: str | None = "auto",
    resume: bool = False,
    quiet: bool = False,
    **overrides: Any,
) -> Path | None:
    """Train the evaluator into `out` (checkpoints, log, and the final folder `out/evaluator`)."""
    config = replace(config or EvaluatorTrainConfig(), **overrides)
    return EvaluatorTrainer(out, config, device).run(resume=resume, quiet=quiet)
