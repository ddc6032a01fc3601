"""Parsing of `FILE[:SCALE]` adapter arguments, kept free of torch so the CLI can parse arguments cheaply."""

from __future__ import annotations


def parse_lora_arg(text: str) -> tuple[str, float]:
    """'FILE' -> (FILE, 1.0); 'FILE:-1.5' -> (FILE, -1.5). A colon followed by no number belongs to the path."""
    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            return path, float(tail)
        except ValueError:
            pass
    return text, 1.0
