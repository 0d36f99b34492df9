"""Every scenario, in the order a run takes them."""

from __future__ import annotations

from typing import Final

from . import cold_burst, hit, memory, no_cache, polling, scale, scrape
from .context import Scenario

SCENARIOS: Final[tuple[Scenario, ...]] = (
    hit.SCENARIO,
    no_cache.SCENARIO,
    *cold_burst.SCENARIOS,
    polling.SCENARIO,
    memory.SCENARIO,
    scrape.SCENARIO,
    scale.SCENARIO,
)
NAMES: Final = tuple(s.name for s in SCENARIOS)
