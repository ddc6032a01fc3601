"""Embedding cache: every image is embedded once per backend, and the result is kept next to the images.

Layout (ROOT is an image folder, KEY a backend's cache key such as `pixel-64` or `dreamsim-ensemble`):

    ROOT/.embeddings/KEY.safetensors                 the merged cache
    ROOT/.embeddings/KEY.part-<time>-<pid>-<token>.safetensors
                                                     what a run added since the last merge (one file per flush,
                                                     written atomically; several processes never share a file)

Each file holds, per backend output (`features`, `logits`, or `distance` for pairwise backends), a tensor with
one row per content hash, and in its safetensors metadata the row keys (SHA-256 of the image file, or
"SHA_A|SHA_B" for a pair) and a table `relative path -> [size, mtime_ns, sha256]`. A file whose size and
modification time match its entry is trusted without reading it; otherwise it is hashed again, so a touched but
unchanged image is not re-embedded and a changed one is. Rows are content-addressed: copies of one image share a
row. `merge()` (run by one process after all have flushed) folds the part files into the merged file and forgets
files that no longer exist.

`embed_missing` fills the cache for a list of files (the share of one process under `accelerate launch`),
batched, flushing every `flush_every` images so an interrupted run keeps its work; `pairwise_missing` does the
same for the pairs of image groups with a pairwise backend (LPIPS). A clip file (a video pair's .mp4 / .gif) is
one row too: the mean of its sampled frames' embeddings or pair distances, or for a whole-clip backend (motion)
what it computes on all frames (`divdistill.metrics.video`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from divdistill.images import atomic_write, sheet_indices
from divdistill.tensorfiles import safetensors_bytes

FORMAT = "divdistill-embeddings/1"
CACHE_DIR = ".embeddings"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class FileStamp:
    size: int
    mtime_ns: int
    sha256: str


def file_stamp(path: Path, data: bytes | None = None) -> FileStamp:
    """Size, modification time and SHA-256 of a file (`data`: its bytes, if already read)."""
    info = path.stat()
    if data is None:
        data = path.read_bytes()
    return FileStamp(info.st_size, info.st_mtime_ns, hashlib.sha256(data).hexdigest())


class ImageReadError(ValueError):
    """An image file that does not decode (truncated, corrupt, not an image): bad input, named in the message."""


def load_image(source: Path | bytes) -> torch.Tensor:
    """An image file (or its bytes) as float [3, H, W] in [0, 1] (RGB; alpha dropped, grey expanded).

    A file that does not decode is an ImageReadError naming it: PIL's own messages ("image file is truncated")
    do not say which of thousands of files it was.
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as error:  # PIL raises all three for broken files
        if isinstance(source, bytes):
            raise
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ImageReadError(
            f"not a readable image ({source}): {reason}; replace or delete the file (generate remakes a job "
            "whose images are missing)"
        ) from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


def pair_key(sha_a: str, sha_b: str) -> str:
    return "|".join(sorted((sha_a, sha_b)))


class EmbeddingCache:
    """The cache of one backend (`key`) for the images under `root` (see the module doc).

    `folder` overrides where the files go (default ROOT/.embeddings); `persist=False` keeps everything in
    memory (nothing written).
    """

    def __init__(self, root: str | Path, key: str, folder: str | Path | None = None, persist: bool = True):
        self.root = Path(root)
        self.key = key
        self.folder = Path(folder) if folder is not None else self.root / CACHE_DIR
        self.persist = persist
        self.rows: dict[str, dict[str, torch.Tensor]] = {}
        self.files: dict[str, FileStamp] = {}
        self._pending_files: dict[str, FileStamp] = {}
        self._pending_rows: dict[str, dict[str, torch.Tensor]] = {}
        self._loaded_parts: list[Path] = []
        self.reload()

    # ------------------------------------------------------------------------------------------- files
    @property
    def merged_path(self) -> Path:
        return self.folder / f"{self.key}.safetensors"

    def part_paths(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.key}.part-*.safetensors")) if self.folder.is_dir() else []

    def reload(self) -> None:
        """Read the merged file and every part file (later entries win)."""
        self.rows, self.files, self._loaded_parts = {}, {}, []
        if not self.persist:
            return
        if self.merged_path.is_file():
            self._read(self.merged_path)
        for part in self.part_paths():
            if self._read(part):
                self._loaded_parts.append(part)

    def _read(self, path: Path) -> bool:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                if meta.get("format") != FORMAT:
                    return False
                keys = json.loads(meta.get("rows", "[]"))
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            files = json.loads(meta.get("files", "{}"))
        except Exception:  # a damaged file (e.g. from a full disk): ignore it, its rows are recomputed
            return False
        for index, row in enumerate(keys):
            self.rows[row] = {name: tensor[index] for name, tensor in tensors.items()}
        for rel, (size, mtime_ns, sha) in files.items():
            self.files[rel] = FileStamp(int(size), int(mtime_ns), str(sha))
        return True

    def _write(self, path: Path, rows: dict[str, dict[str, torch.Tensor]], files: dict[str, FileStamp]) -> None:
        keys = list(rows)
        outputs = sorted({name for row in rows.values() for name in row})
        tensors = {name: torch.stack([rows[k][name] for k in keys]).contiguous() for name in outputs}
        meta = {
            "format": FORMAT,
            "key": self.key,
            "rows": json.dumps(keys),
            "files": json.dumps({rel: [s.size, s.mtime_ns, s.sha256] for rel, s in files.items()}),
        }
        with atomic_write(path) as handle:
            handle.write(safetensors_bytes(tensors, meta))

    # ------------------------------------------------------------------------------------------- lookups
    def stamps(self, rels: Iterable[str]) -> dict[str, FileStamp]:
        """Each file's stamp: the stored one when size and mtime still match, else freshly hashed."""
        out = {}
        for rel in rels:
            path = self.root / rel
            info = path.stat()
            known = self.files.get(rel) or self._pending_files.get(rel)
            if known is not None and known.size == info.st_size and known.mtime_ns == info.st_mtime_ns:
                out[rel] = known
                continue
            stamp = file_stamp(path)
            out[rel] = stamp
            self._pending_files[rel] = stamp
        return out

    def has(self, row: str) -> bool:
        return row in self.rows or row in self._pending_rows

    def row(self, row: str) -> dict[str, torch.Tensor]:
        return self._pending_rows.get(row) or self.rows[row]

    def get(self, rels: Sequence[str], output: str = "features") -> torch.Tensor:
        """[len(rels), ...] rows of `output` for these files, in order (KeyError for one not embedded)."""
        stamps = self.stamps(rels)
        missing = [rel for rel in rels if not self.has(stamps[rel].sha256)]
        if missing:
            raise KeyError(f"{len(missing)} images have no {self.key!r} embedding yet (first: {missing[0]}).")
        if not rels:
            return torch.zeros(0)
        return torch.stack([self.row(stamps[rel].sha256)[output] for rel in rels])

    def add(self, rows: dict[str, dict[str, torch.Tensor]], stamps: dict[str, FileStamp] | None = None) -> None:
        self._pending_rows.update(rows)
        self._pending_files.update(stamps or {})

    def flush(self) -> Path | None:
        """Write what was added (and any re-hashed stamps) as a new part file; return it (None: nothing new)."""
        if not self._pending_rows and not self._pending_files:
            return None
        rows, files = self._pending_rows, self._pending_files
        self._pending_rows, self._pending_files = {}, {}
        self.rows.update(rows)
        self.files.update(files)
        if not self.persist:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        # Named in time order, so reading the parts sorted by name lets the newest entry of a file win.
        path = self.folder / f"{self.key}.part-{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}.safetensors"
        self._write(path, rows, files)
        self._loaded_parts.append(path)
        return path

    def merge(self) -> None:
        """Fold every part file into the merged file (one process, after the others flushed)."""
        self.flush()
        if not self.persist:
            return
        self.reload()
        parts = list(self._loaded_parts)
        files = {rel: s for rel, s in self.files.items() if (self.root / rel).is_file()}
        if not parts and files == self.files:
            return
        used = {s.sha256 for s in files.values()}
        rows = {key: row for key, row in self.rows.items() if all(part in used for part in key.split("|"))}
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write(self.merged_path, rows, files)
        for part in parts:
            with contextlib.suppress(OSError):
                part.unlink()
        self.rows, self.files, self._loaded_parts = rows, files, []


# ----------------------------------------------------------------------------------------------- filling
def load_frames(path: Path) -> torch.Tensor:
    """What a file is scored on, float [K, 3, H, W]: an image (K = 1), or a clip's EVAL_FRAMES sampled frames."""
    from divdistill.metrics.video import is_clip_file, load_clip_frames

    return load_clip_frames(path) if is_clip_file(path) else load_image(path)[None]


def _whole_clip_rows(cache: EmbeddingCache, batch: Sequence[tuple[str, str]], backend: Any) -> dict[str, Any]:
    """Rows of a backend that measures whole clips (motion); an image is refused naming it."""
    from divdistill.metrics.video import is_clip_file, load_clip

    for _, rel in batch:
        if not is_clip_file(rel):
            raise ValueError(f"the {backend.name} backend measures video clips; {rel} is an image (evaluate clips)")
    return {sha: backend.embed_clip(load_clip(cache.root / rel)) for sha, rel in batch}


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def embed_missing(
    cache: EmbeddingCache,
    rels: Sequence[str],
    backend: Any,
    flush_every: int = 256,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Embed the files among `rels` whose content the cache lacks (batched); return how many were embedded."""
    stamps = cache.stamps(rels)
    todo: dict[str, str] = {}  # sha -> one file with that content
    for rel in rels:
        sha = stamps[rel].sha256
        if not cache.has(sha) and sha not in todo:
            todo[sha] = rel

    def rows(batch: list[tuple[str, str]]) -> dict[str, dict[str, torch.Tensor]]:
        if getattr(backend, "whole_clip", False):
            return _whole_clip_rows(cache, batch, backend)
        frames = [load_frames(cache.root / rel) for _, rel in batch]  # one image, or a clip's sampled frames
        outputs = backend.embed(torch.stack([backend.prepare(f) for item in frames for f in item]))
        ends = torch.tensor([len(item) for item in frames]).cumsum(0).tolist()
        return {sha: {name: value[end - len(item) : end].mean(0) for name, value in outputs.items()}
                for (sha, _), item, end in zip(batch, frames, ends)}  # fmt: skip

    return _fill(cache, list(todo.items()), rows, backend.batch_size, flush_every, progress)


def _fill(cache: EmbeddingCache, items: list, rows: Callable[[list], dict[str, dict[str, torch.Tensor]]],
          batch_size: int, flush_every: int, progress: Callable[[int], None] | None) -> int:  # fmt: skip
    """Add `rows(batch)` to the cache for every batch of `items`, flushing every `flush_every` items (so a killed
    run keeps what it computed); return how many items were computed."""
    done = 0
    for chunk in _batches(items, max(flush_every, batch_size)):
        for batch in _batches(chunk, batch_size):
            cache.add(rows(batch))
            done += len(batch)
            if progress is not None:
                progress(len(batch))
        cache.flush()
    cache.flush()
    return done


def pairwise_missing(
    cache: EmbeddingCache,
    groups: Sequence[Sequence[str]],
    backend: Any,
    shard: tuple[int, int] = (0, 1),
    flush_every: int = 1024,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Compute the pair distances (i < j within each group) the cache lacks; return how many were computed.

    Pairs are split strided across `shard = (process_index, num_processes)`.
    """
    rels = sorted({rel for group in groups for rel in group})
    stamps = cache.stamps(rels)
    pairs: dict[str, tuple[str, str]] = {}
    for group in groups:
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                a, b = group[i], group[j]
                key = pair_key(stamps[a].sha256, stamps[b].sha256)
                if stamps[a].sha256 != stamps[b].sha256 and not cache.has(key) and key not in pairs:
                    pairs[key] = (a, b)
    items = list(pairs.items())[shard[0] :: shard[1]]
    prepared: dict[str, torch.Tensor] = {}

    def image(rel: str) -> torch.Tensor:
        """[K, 3, h, w] prepared: an image (K = 1) or a clip's sampled frames."""
        if rel not in prepared:
            prepared[rel] = torch.stack([backend.prepare(f) for f in load_frames(cache.root / rel)])
        return prepared[rel]

    def rows(batch: list[tuple[str, tuple[str, str]]]) -> dict[str, dict[str, torch.Tensor]]:
        pairs = [(image(x), image(y)) for _, (x, y) in batch]
        counts = [min(len(a), len(b)) for a, b in pairs]  # clips of unequal length: as many frames of each
        a = torch.cat([x[sheet_indices(len(x), k)] for (x, _), k in zip(pairs, counts)])
        b = torch.cat([y[sheet_indices(len(y), k)] for (_, y), k in zip(pairs, counts)])
        values = backend.distances(a, b).double().reshape(-1)
        ends = torch.tensor(counts).cumsum(0).tolist()
        return {key: {"distance": values[end - k : end].mean(0, keepdim=True).float()}
                for (key, _), k, end in zip(batch, counts, ends)}  # fmt: skip

    return _fill(cache, items, rows, backend.batch_size, flush_every, progress)


def pair_matrix(cache: EmbeddingCache, group: Sequence[str]) -> torch.Tensor:
    """[N, N] distances among `group` from the cache (0 between files of equal content)."""
    stamps = cache.stamps(group)
    n = len(group)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            sa, sb = stamps[group[i]].sha256, stamps[group[j]].sha256
            if sa != sb:
                matrix[i, j] = matrix[j, i] = cache.row(pair_key(sa, sb))["distance"].double().item()
    return matrix
