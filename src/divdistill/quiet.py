"""Known-harmless library notices, silenced narrowly: one message on one logger each, never a whole logger.

Every sampling run used to print, per image or per load, notices that say nothing about the run:

- transformers' "`CLIPImageProcessor` requires torchvision (not installed); falling back to ..." when diffusers'
  pipeline modules import the safety checker's image processor, which divdistill never runs;
- LCMScheduler's / TCDScheduler's "The custom timestep schedule contains the following timesteps which are not
  on the original training/distillation timestep schedule" on every `set_timesteps`, i.e. per image, for the
  timesteps the pair's authors publish (DMD2's and pocket's 999/749/499/249), which are silenced entirely
  (`published_timesteps`). For timesteps a caller chose it can matter, so it is shown once per distinct schedule
  instead of once per image.

Other warnings (a real misconfiguration, a missing file) pass untouched. The filters are logging.Filter objects
on the emitting loggers, installed by `install()` (idempotent; called where divdistill imports diffusers), and
removable with `uninstall()`. The safety-checker notice and the `torch_dtype` FutureWarning are not filtered but
fixed at their cause (`divdistill.loading`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

TORCHVISION_FALLBACK = "requires torchvision (not installed); falling back to"
CUSTOM_TIMESTEPS = "The custom timestep schedule contains the following timesteps which are not on the original"

_TRANSFORMERS_IMPORTS = "transformers.utils.import_utils"
_CUSTOM_TIMESTEP_LOGGERS = ("diffusers.schedulers.scheduling_lcm", "diffusers.schedulers.scheduling_tcd")


class _DropMessages(logging.Filter):
    """Drop records whose message contains one of `fragments`."""

    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


class _CustomTimesteps(logging.Filter):
    """The custom-timestep notice: dropped inside `published_timesteps()`, else shown once per distinct text."""

    def __init__(self) -> None:
        super().__init__()
        self.published = 0
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if CUSTOM_TIMESTEPS not in message:
            return True
        if self.published:
            return False
        fresh = message not in self.seen
        self.seen.add(message)
        return fresh


_TORCHVISION = _DropMessages(TORCHVISION_FALLBACK)
_TIMESTEPS = _CustomTimesteps()


def install() -> None:
    """Attach the filters (safe to call any number of times, before or after the libraries are imported)."""
    logger = logging.getLogger(_TRANSFORMERS_IMPORTS)
    if _TORCHVISION not in logger.filters:
        logger.addFilter(_TORCHVISION)
    for name in _CUSTOM_TIMESTEP_LOGGERS:
        logger = logging.getLogger(name)
        if _TIMESTEPS not in logger.filters:
            logger.addFilter(_TIMESTEPS)


def uninstall() -> None:
    """Remove the filters (for debugging: every notice is shown again)."""
    logging.getLogger(_TRANSFORMERS_IMPORTS).removeFilter(_TORCHVISION)
    for name in _CUSTOM_TIMESTEP_LOGGERS:
        logging.getLogger(name).removeFilter(_TIMESTEPS)


@contextmanager
def published_timesteps(active: bool = True) -> Iterator[None]:
    """Within this block (when `active`), the timesteps being set are the pair's published ones: no notice."""
    _TIMESTEPS.published += bool(active)
    try:
        yield
    finally:
        _TIMESTEPS.published -= bool(active)
