"""Image sets: the images of one mode (or one folder made elsewhere), grouped by prompt, with their speed record.

A folder written by `divdistill generate` is read through its JSON files: `manifest.json` (a prompt file's jobs),
or a `run.json` (one prompt), or the `run.json` files found below it; each job is one group (one prompt, its
seeds) and carries the wall time, NFE and peak memory of the calls that made it. Any other folder is one group of
every image below it (.png, .jpg, .jpeg, .webp, .bmp; hidden folders and `contact_sheet.png` skipped), or clip
(.mp4, .gif; a GIF clip's `<stem>_frames/` PNG frames are part of it, not images of their own).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divdistill.jobs.layout import CONTACT_SHEET, MANIFEST, SIDECAR
from divdistill.metrics.cache import IMAGE_SUFFIXES
from divdistill.metrics.video import CLIP_SUFFIXES
from divdistill.videos import FRAMES_FOLDER


@dataclass
class ImageGroup:
    """The images of one prompt (paths relative to the set's root)."""

    id: str
    prompt: str | None
    files: list[str]
    seeds: list[int] | None = None
    sidecar: dict[str, Any] | None = None


@dataclass
class ImageSet:
    """The images of one mode or folder, grouped by prompt."""

    name: str
    root: Path
    groups: list[ImageGroup]
    spec: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def files(self) -> list[str]:
        return [f for group in self.groups for f in group.files]

    @property
    def sidecars(self) -> list[dict[str, Any]]:
        return [g.sidecar for g in self.groups if g.sidecar is not None]

    def settings(self) -> dict[str, Any]:
        """The resolved sampling settings of the first job (empty for folders made elsewhere)."""
        for sidecar in self.sidecars:
            return dict(sidecar.get("settings") or {})
        return {}

    def sampling(self) -> dict[str, Any]:
        """Model, steps, base steps and base guidance, as the ablation plots and the FID table need them."""
        sidecars = self.sidecars
        if not sidecars:
            return {}
        first = sidecars[0]
        settings = first.get("settings") or {}
        steps = first.get("steps") or []
        base = [s for s in steps if s.get("model") == "base"]
        mode = settings.get("mode")
        if mode == "distilled" or (steps and not base):
            base_steps: int | None = 0
        elif mode in ("hybrid", "reverse"):
            base_steps = settings.get("base_steps")
        else:
            base_steps = None
        return {
            "mode": mode,
            "steps": len(steps) or None,
            "base_steps": base_steps,
            "base_guidance_scale": base[0].get("guidance_scale") if base else None,
            "guidance_scale": settings.get("guidance_scale"),
            "segments": settings.get("segments"),
            "model": (first.get("model") or {}).get("name"),
        }

    def speed(self) -> dict[str, Any]:
        """Seconds per image (whole pipeline), NFE per image and peak memory, from the jobs' run.json files.

        seconds_per_image is the median over pipeline calls of (call seconds / images in the call), weighted by
        images, so the first call's warm-up does not dominate small runs; seconds_per_image_mean includes it.
        """
        samples: list[tuple[float, int]] = []  # (seconds per image of a call, images of this job in it)
        total_seconds = 0.0
        total_images = 0
        nfe: list[float] = []
        peaks: list[dict[str, Any]] = []
        for sidecar in self.sidecars:
            images = len(sidecar.get("images") or [])
            for call in sidecar.get("calls") or []:
                batch = max(int(call.get("batch_size") or 1), 1)
                mine = len(call.get("images") or [])
                seconds = float(call.get("seconds") or 0.0)
                samples.append((seconds / batch, mine))
                total_seconds += seconds * mine / batch
            total_images += images
            if sidecar.get("nfe") is not None:
                nfe.extend([float(sidecar["nfe"])] * images)
            if isinstance(sidecar.get("peak_memory"), dict):
                peaks.append(sidecar["peak_memory"])
        if not samples:
            return {}
        peak = max(peaks, key=lambda p: p.get("bytes") or 0) if peaks else {}
        return {
            "seconds_per_image": _weighted_median(samples),
            "seconds_per_image_mean": total_seconds / total_images if total_images else math.nan,
            "nfe_per_image": sum(nfe) / len(nfe) if nfe else math.nan,
            "peak_memory_bytes": peak.get("bytes"),
            "peak_memory_mb": peak["bytes"] / 2**20 if peak.get("bytes") else None,
            "peak_memory_kind": peak.get("kind"),
            "images_timed": total_images,
        }


def _weighted_median(samples: list[tuple[float, int]]) -> float:
    ordered = sorted((value, weight) for value, weight in samples if weight > 0)
    total = sum(weight for _, weight in ordered)
    if not total:
        return math.nan
    running = 0
    for value, weight in ordered:
        running += weight
        if running * 2 >= total:
            return value
    return ordered[-1][0]  # pragma: no cover


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _group_from_sidecar(root: Path, folder: Path, sidecar: dict[str, Any], default_id: str) -> ImageGroup | None:
    files = [image.get("file") for image in sidecar.get("images") or []]
    if not files or not all(isinstance(f, str) and (folder / f).is_file() for f in files):
        return None  # unfinished job
    prefix = folder.relative_to(root).as_posix()
    rel = [f if prefix == "." else f"{prefix}/{f}" for f in files]
    job = sidecar.get("job") or {}
    return ImageGroup(
        id=str(job.get("id") or default_id),
        prompt=sidecar.get("prompt"),
        files=rel,
        seeds=[image.get("seed") for image in sidecar.get("images") or []],
        sidecar=sidecar,
    )


def image_files(root: Path) -> list[str]:
    """Every image or clip below `root` (sorted relative paths; hidden entries, contact sheets and the PNG frames
    of GIF clips skipped)."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or path.name == CONTACT_SHEET or _clip_frame(path):
            continue
        if path.suffix.lower() in (*IMAGE_SUFFIXES, *CLIP_SUFFIXES) and path.is_file():
            found.append(rel.as_posix())
    return sorted(found)


def _clip_frame(path: Path) -> bool:
    """A PNG frame of a GIF clip (`000_seed0_frames/000.png` next to `000_seed0.gif`)."""
    name = path.parent.name
    return name.endswith(FRAMES_FOLDER) and path.parent.with_name(name[: -len(FRAMES_FOLDER)] + ".gif").is_file()


def scan_image_set(root: str | Path, name: str | None = None, spec: str | None = None) -> ImageSet:
    """The image set in `root` (see the module doc); FileNotFoundError when it holds no images."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {str(root)!r} does not exist.")
    name = name or root.resolve().name
    groups: list[ImageGroup] = []
    manifest = _read_json(root / MANIFEST)
    if manifest is not None and isinstance(manifest.get("jobs"), list):
        for job in manifest["jobs"]:
            sidecar_path = root / str(job.get("sidecar", ""))
            sidecar = _read_json(sidecar_path) if job.get("sidecar") else None
            if sidecar is not None:
                group = _group_from_sidecar(root, sidecar_path.parent, sidecar, str(job.get("id")))
                if group is not None:
                    groups.append(group)
    elif (root / SIDECAR).is_file():
        sidecar = _read_json(root / SIDECAR)
        group = _group_from_sidecar(root, root, sidecar, "prompt") if sidecar else None
        groups = [group] if group else []
    else:
        for path in sorted(root.rglob(SIDECAR)):
            rel = path.relative_to(root)
            if any(part.startswith(".") for part in rel.parts):
                continue
            sidecar = _read_json(path)
            group = _group_from_sidecar(root, path.parent, sidecar, path.parent.name) if sidecar else None
            if group is not None:
                groups.append(group)
    if not groups:
        files = image_files(root)
        if files:
            groups = [ImageGroup(id="all", prompt=None, files=files)]
    if not groups:
        raise FileNotFoundError(f"No images found in {str(root)!r}.")
    return ImageSet(name=name, root=root, groups=groups, spec=spec)
