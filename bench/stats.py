"""Small statistics and formatting helpers shared by the scenarios."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was actually observed."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def mb(size: float) -> str:
    """Bytes as decimal megabytes (10^6), the unit of the memory targets."""
    return f"{size / 1e6:.1f} MB"


def counts(items: Sequence[object]) -> str:
    """`{a: 3, b: 1}` as "a=3 b=1", most frequent first."""
    tally: dict[str, int] = {}
    for item in items:
        tally[str(item)] = tally.get(str(item), 0) + 1
    return " ".join(f"{k}={v}" for k, v in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0])))
