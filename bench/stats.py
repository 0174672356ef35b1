"""Small statistics helpers: percentiles without numpy (the driver stays light)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation, like numpy's default."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def summary(values: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float | int]:
    """{"p50": .., "p95": .., "p99": .., "mean": .., "max": .., "n": ..}, rounded to 0.1."""
    out: dict[str, float | int] = {}
    for q in qs:
        value = percentile(values, q)
        out[f"p{q}"] = round(value, 1) if value is not None else None  # type: ignore[assignment]
    if values:
        out["mean"] = round(sum(values) / len(values), 1)
        out["max"] = round(max(values), 1)
    out["n"] = len(values)
    return out


def rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 3) if seconds > 0 else None
