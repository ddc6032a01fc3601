"""File names of a generate output folder: the one place they are spelled (readers such as
`divdistill.evaluation.imagesets` import them from here; nothing here imports torch).

    OUT/000_seed0.png, ...        one PNG per image (index zero-padded to the job's size, seed)
    OUT/000_seed0.mp4, ...        a video pair's clips instead: MP4, or GIF with its PNG frames in
                                  OUT/000_seed0_frames/ (`divdistill.videos`, `divdistill.jobs.samples`)
    OUT/contact_sheet.png         the job's images in a grid (jobs of more than one image)
    OUT/run.json                  the job's sidecar, written last: its presence marks the job finished
    OUT/manifest.json             a prompt file's jobs (one folder each), rebuilt from their sidecars
"""

from __future__ import annotations

import re

SIDECAR = "run.json"
MANIFEST = "manifest.json"
CONTACT_SHEET = "contact_sheet.png"
IMAGE_NAME = re.compile(r"(\d+)_seed(\d+)\.(?:png|mp4|gif)")


def image_name(index: int, seed: int, count: int, suffix: str = ".png") -> str:
    """Image `index` (of `count`) with `seed`: '007_seed7.png' (at least three digits, more for large jobs); a
    clip's `suffix` is '.mp4' or '.gif'."""
    return f"{index:0{max(3, len(str(count - 1)))}d}_seed{seed}{suffix}"
