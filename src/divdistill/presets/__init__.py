"""Named model pairs with the settings their authors publish.

Data only: repo ids, weight files, scheduler, timesteps, resolution and guidance. `divdistill.loading` turns a
preset into a HybridPipeline. Sources: the model cards of DMD2 (tianweiy/DMD2), SDXL-Lightning
(ByteDance/SDXL-Lightning), SDXL-Turbo and SD-Turbo (stabilityai), LCM-SDXL (latent-consistency/lcm-sdxl),
PixArt-alpha and PixArt-LCM (PixArt-alpha), Stable Diffusion 3.5 Large and Large Turbo (stabilityai),
FLUX.1-dev and FLUX.1-schnell (black-forest-labs), and the scheduler configs those repos publish.

Modules: `preset` (the record), `pairs` (two-network pairs), `students` (LoRA students, one network), `recent`
(the 2025-26 families), `video` (Wan 2.1 / 2.2 and their distillation LoRAs). Other packages add presets
through the `divdistill.presets` entry point.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points

from divdistill.presets.pairs import TWO_NETWORK
from divdistill.presets.preset import (
    FLUX_DEV,
    HYPER_SD,
    PIXART_ALPHA,
    SD15_BASE,
    SD21_BASE,
    SD35_LARGE,
    SDXL_BASE,
    Preset,
)
from divdistill.presets.recent import RECENT
from divdistill.presets.students import LORA_STUDENTS
from divdistill.presets.video import VIDEO

#: Entry-point group through which packages add presets: each entry names a callable returning Presets (the
#: shipped pocket pair registers itself so, `divdistill.pocket.plugin:presets`).
PRESET_GROUP = "divdistill.presets"

_BUILT_IN: dict[str, Preset] = {p.name: p for p in (*TWO_NETWORK, *LORA_STUDENTS, *RECENT, *VIDEO)}


class PresetRegistry(Mapping[str, Preset]):
    """The presets by name: the built-in ones, then those entry points add, read on first use.

    Discovery is lazy so that importing this module (argument parsing, `divdistill --help`) loads no plugin, and
    this module never imports one: a plugin imports `Preset` from here, not the other way round.
    """

    def __init__(self, built_in: dict[str, Preset], group: str) -> None:
        self._presets = dict(built_in)
        self._group = group
        self._discovered = False

    def _all(self) -> dict[str, Preset]:
        if not self._discovered:
            self._discovered = True
            for point in entry_points(group=self._group):
                for preset in point.load()():
                    if preset.name in self._presets:
                        raise ValueError(f"the preset {preset.name!r} of entry point {point.value} is already defined")
                    self._presets[preset.name] = preset
        return self._presets

    def __getitem__(self, name: str) -> Preset:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


PRESETS: Mapping[str, Preset] = PresetRegistry(_BUILT_IN, PRESET_GROUP)


def get_preset(name: str) -> Preset:
    """Look up a preset, with the list of known names in the error."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.") from None


__all__ = [
    "FLUX_DEV",
    "HYPER_SD",
    "PIXART_ALPHA",
    "PRESETS",
    "PRESET_GROUP",
    "SD15_BASE",
    "SD21_BASE",
    "SD35_LARGE",
    "SDXL_BASE",
    "Preset",
    "PresetRegistry",
    "get_preset",
]
