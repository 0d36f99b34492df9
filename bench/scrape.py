"""metrics: what a Prometheus scrape of `/metrics` costs while the service is busy serving, next
to the same scrape on an idle service."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Final

from .client import Scrape, gc_paused, get, scrape, session
from .context import Context, Scenario
from .report import Claim, Outcome, Row, heading, say
from .rounds import CONNECTIONS
from .stats import median, ms, percentile
from .wrk import run_wrk

NAME: Final = "metrics"
PATH: Final = "/acc/"
TARGET_P50: Final = 0.005
IDLE_SCRAPES: Final = 50
INTERVAL: Final = 0.25
RAMP: Final = 0.5  # seconds wrk gets to reach full load before the first scrape


@dataclass(frozen=True, slots=True)
class _Size:
    load: float  # seconds of wrk load
    scrapes: int  # scrapes during it, one per INTERVAL


FULL: Final = _Size(load=6.0, scrapes=20)
SMOKE: Final = _Size(load=1.0, scrapes=2)


async def _scrapes(url: str, count: int, interval: float) -> list[Scrape]:
    """`count` scrapes on one kept-alive connection, one every `interval` s (or back to back)."""
    found: list[Scrape] = []
    async with session(limit=1) as client:
        await get(client, url, "/livez")  # opens the connection outside the timing
        with gc_paused():
            next_at = time.perf_counter()
            for _ in range(count):
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                found.append(await scrape(client, url))
                next_at += interval
    if bad := [s.status for s in found if s.status != 200]:
        raise RuntimeError(f"/metrics answered {bad}")
    return found


def _row(variant: str, found: list[Scrape], seconds: float) -> Row:
    latencies = [s.latency for s in found]
    return Row(
        scenario=NAME,
        variant=variant,
        rate=len(found) / seconds,
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        errors=0,
        details={
            "scrapes": len(found),
            "max_seconds": max(latencies),
            "bytes_per_scrape": median([s.size for s in found]),
        },
    )


async def run(ctx: Context) -> Outcome:
    size = SMOKE if ctx.smoke else FULL
    heading(
        f"{NAME}: GET /metrics (gzip accepted) every {INTERVAL:g} s while wrk -t1 -c{CONNECTIONS} "
        f"loads {PATH} (cached), and {IDLE_SCRAPES} times on an idle service"
    )
    service = await ctx.start_service(NAME, CACHE_TTL_SECONDS="3600")
    async with session(limit=1) as client:
        await get(client, service.url, PATH, gzip_ok=False)  # fills the cache
    started, cpu = time.perf_counter(), service.cpu_seconds()
    idle = await _scrapes(service.url, IDLE_SCRAPES, 0.0)
    # Nothing else runs on the idle service: its CPU time is the scrapes' (and one /livez).
    cpu_per_scrape = (service.cpu_seconds() - cpu) / IDLE_SCRAPES
    idle_seconds = time.perf_counter() - started

    before = await ctx.read_status()
    load = asyncio.create_task(run_wrk(service.url + PATH, size.load, CONNECTIONS))
    try:
        await asyncio.sleep(RAMP)
        started = time.perf_counter()
        busy = await _scrapes(service.url, size.scrapes, INTERVAL)
        busy_seconds = time.perf_counter() - started
        wrk = await load
    finally:
        if not load.done():  # a failed scrape: wrk must not outlive the scenario
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
    status = await ctx.read_status() - before
    service.check_alive()
    ctx.processes.stop(service)

    idle_p50 = percentile([s.latency for s in idle], 50)
    busy_latencies = [s.latency for s in busy]
    busy_p50 = percentile(busy_latencies, 50)
    size_busy = median([s.size for s in busy])
    say(
        f"  idle:       {len(idle)} scrapes, p50 {ms(idle_p50)}, "
        f"max {ms(max(s.latency for s in idle))}, {median([s.size for s in idle]):,.0f} B each, "
        f"{ms(cpu_per_scrape)} of service CPU each"
    )
    say(
        f"  under load: {len(busy)} scrapes, p50 {ms(busy_p50)}, max {ms(max(busy_latencies))}, "
        f"{size_busy:,.0f} B each; wrk {wrk.requests_per_second:.0f} req/s, "
        f"{wrk.errors} errors"
    )
    rows = [
        _row("/metrics scrape, idle", idle, idle_seconds),
        _row("/metrics scrape, under load", busy, busy_seconds),
        Row(
            scenario=NAME,
            variant=f"{PATH} wrk load during the scrapes",
            rate=wrk.requests_per_second,
            p50=wrk.p50,
            p99=wrk.p99,
            errors=wrk.errors,
            selects=status.selects,
            connections=status.connections,
            details={"requests": wrk.requests, **status.as_json()},
        ),
    ]
    return Outcome(
        rows=rows,
        claims=[
            Claim(
                NAME,
                "median /metrics latency under load",
                f"{ms(busy_p50)} (max {ms(max(busy_latencies))}, {size_busy:,.0f} B; "
                f"idle median {ms(idle_p50)})",
                f"< {ms(TARGET_P50)}",
                busy_p50 < TARGET_P50,
            ),
            Claim(
                NAME,
                "service CPU per /metrics scrape (idle service)",
                ms(cpu_per_scrape),
                f"< {ms(TARGET_P50)}",
                cpu_per_scrape < TARGET_P50,
            ),
        ],
    )


def _seconds(smoke: bool) -> float:
    return (SMOKE if smoke else FULL).load + 3


SCENARIO: Final = Scenario(NAME, run, _seconds, needs_wrk=True)
