"""Settings fingerprints: a short digest of whatever decides a run's outputs, and a readable diff of two settings.

A resumed run must not mix its images with those of other settings in one folder. The settings (a JSON-ready
dict: pair, dtype, sampling, sizes, adapters, ...) are stored with the outputs together with their fingerprint;
a rerun compares them and, when they differ, says which entries differ rather than only that something does.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

_MISSING = object()


def fingerprint(settings: Any) -> str:
    """SHA-256 (first 16 hex digits) of `settings` as canonical JSON: the same for equal settings in any order."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def differences(stored: Any, current: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, stored value, current value) for every entry that differs; a key missing on one side has the
    value `None` there. Lists are compared whole (one entry), dicts key by key."""
    if isinstance(stored, dict) and isinstance(current, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(stored) | set(current), key=str):
            a, b = stored.get(key, _MISSING), current.get(key, _MISSING)
            name = f"{prefix}.{key}" if prefix else str(key)
            if a is _MISSING or b is _MISSING:
                if (None if a is _MISSING else a) != (None if b is _MISSING else b):
                    out.append((name, None if a is _MISSING else a, None if b is _MISSING else b))
            else:
                out.extend(differences(a, b, name))
        return out
    return [] if stored == current else [(prefix or "settings", stored, current)]


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_differences(stored: Any, current: Any, limit: int = 4) -> str:
    """'sampling.guidance_scale: 1.0 there, 1.5 now; num_images: 4 there, 8 now' (at most `limit` entries)."""
    found = differences(stored, current)
    parts = [f"{key}: {_short(a)} there, {_short(b)} now" for key, a, b in found[:limit]]
    if len(found) > limit:
        parts.append(f"and {len(found) - limit} more")
    return "; ".join(parts) if parts else "no difference"
