"""How the evaluation's files print numbers and text (shared by the tables, the plots and the HTML page)."""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any, digits: int = 3) -> str:
    if not finite(value):
        return "–"
    return f"{value:.{digits}f}"


def metric_digits(metric: str) -> int:
    return {"fid": 2, "is": 2, "clip-score": 2, "kid": 4}.get(metric, 3)


def short(text: str | None, width: int = 48) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"
