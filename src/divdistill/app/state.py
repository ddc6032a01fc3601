"""What the app holds between clicks: the pair (loaded once, or the error that loading raised), its best
diversity metric, the shared sampling settings, and the sample cache keyed by (pair, prompt, seed, variant).

The cache is why moving a slider or ticking one more variant does not resample what is known: every image the
app made is a PNG in `cache_dir/images/` named by the digest of everything that decides it (pair, prompt, seed,
variant, sampling settings, adapters), and its NFE and seconds are kept in memory. The Evaluator scores those
files as an `ImageSet`, so the app's diversity numbers are `divdistill.evaluate`'s for the same images.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divdistill.images import save_image_atomic
from divdistill.metrics import installed
from divdistill.trajectory.plan import TraceSampling

#: A pair's own evaluator beats a general perceptual metric on it (the pocket demo's headline space, "attr").
PAIR_METRICS: dict[str, str] = {"pocket": "pocket-attr"}
#: Otherwise the first installed of these (the Evaluator's own order for `diversity`); pixel is the fallback.
GENERAL_METRICS = ("dreamsim", "lpips", "pixel")


def best_metric(pair: str | None) -> str:
    """The diversity backend the app reports for `pair`: its own evaluator's, else DreamSim/LPIPS if installed,
    else the labelled pixel fallback."""
    own = PAIR_METRICS.get(pair or "")
    if own is not None and installed(own):
        return own
    return next(name for name in GENERAL_METRICS if name == "pixel" or installed(name))


@dataclass(frozen=True)
class Sample:
    """One cached image: its file and what making it cost (per image of the call that made it)."""

    path: Path
    nfe: int
    seconds: float


@dataclass(frozen=True)
class AppSampling:
    """The Compare tab's shared settings (None: the pair's default): distilled steps, base steps, base guidance.

    A variant's own options (`base@steps25`, `hybrid:1@cfg2`) win over these, as in `divdistill trace`."""

    steps: int | None = None
    base_num_inference_steps: int | None = None
    base_guidance_scale: float | None = None

    def trace_sampling(self) -> TraceSampling:
        return TraceSampling(steps=self.steps, base_num_inference_steps=self.base_num_inference_steps,
                             base_guidance_scale=self.base_guidance_scale)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "base_steps": self.base_num_inference_steps, "base_cfg": self.base_guidance_scale}


def sample_key(pair: str, prompt: str, seed: int, variant: str, sampling: AppSampling, extra: Any = None) -> str:
    """The digest naming one sample: (pair, prompt, seed, variant) plus the settings that change its pixels."""
    text = json.dumps([pair, prompt, int(seed), variant, sampling.to_json(), extra], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class AppState:
    """The app's pair and caches. `load()` returns the HybridPipeline; it runs once, on first need (or at start
    with `preload`), and an error it raises (missing weights offline, ...) is kept and shown in the page."""

    load: Callable[[], Any]
    name: str = "pair"
    cache_dir: Path | None = None
    metric: str | None = None
    samples: dict[str, Sample] = field(default_factory=dict)
    views: dict[Any, Any] = field(default_factory=dict)  # trajectory views, by (prompt, seed, variant, sampling)
    lock: threading.RLock = field(default_factory=threading.RLock)  # one pipeline call at a time
    _pipe: Any = None
    _error: BaseException | None = None

    def __post_init__(self) -> None:
        if self.cache_dir is None:
            self.cache_dir = Path(tempfile.mkdtemp(prefix="divdistill-app-"))
        self.cache_dir = Path(self.cache_dir)
        (self.cache_dir / "images").mkdir(parents=True, exist_ok=True)

    @property
    def images_dir(self) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / "images"

    @property
    def pipe(self) -> Any:
        """The pair (loaded on first use); re-raises the loading error every time it is asked for."""
        with self.lock:
            if self._pipe is None:
                if self._error is not None:
                    raise self._error
                try:
                    self._pipe = self.load()
                except Exception as error:
                    self._error = error
                    raise
                self._pipe.set_progress_bar_config(disable=True)
                self.name = getattr(self._pipe, "name", None) or self.name
            return self._pipe

    def preload(self) -> str | None:
        """Load the pair now; returns the error's message instead of raising (the app starts either way)."""
        try:
            self.pipe  # noqa: B018 (loads)
        except Exception as error:
            return message(error)
        return None

    @property
    def metric_name(self) -> str:
        """The diversity backend (`best_metric` of the pair unless given)."""
        if self.metric is None:
            self.metric = best_metric(self.name)
        return self.metric

    def store(self, key: str, image: Any, nfe: int, seconds: float) -> Sample:
        sample = Sample(save_image_atomic(image, self.images_dir / f"{key}.png"), int(nfe), float(seconds))
        self.samples[key] = sample
        return sample


def message(error: BaseException) -> str:
    """The library's message of an error as one line (what the page shows)."""
    return " ".join(str(error).split()) or type(error).__name__
