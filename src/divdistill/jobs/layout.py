"""File names of a generate output folder: the one place they are spelled (readers such as
`divdistill.evaluation.imagesets` import them from here; nothing here imports torch).

    OUT/000_seed0.png, ...        one PNG per image (index zero-padded to the job's size, seed)
    OUT/contact_sheet.png         the job's images in a grid (jobs of more than one image)
    OUT/run.json                  the job's sidecar, written last: its presence marks the job finished
    OUT/manifest.json             a prompt file's jobs (one folder each), rebuilt from their sidecars
"""

from __future__ import annotations

import re

SIDECAR = "run.json"
MANIFEST = "manifest.json"
CONTACT_SHEET = "contact_sheet.png"
IMAGE_NAME = re.compile(r"(\d+)_seed(\d+)\.png")


def image_name(index: int, seed: int, count: int) -> str:
    """Image `index` (of `count`) with `seed`: '007_seed7.png' (at least three digits, more for large jobs)."""
    return f"{index:0{max(3, len(str(count - 1)))}d}_seed{seed}.png"
