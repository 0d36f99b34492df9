"""polling: dashboard tabs revalidating with If-None-Match, as browsers do under no-cache, are
answered fast (mostly 304) and cost the database at most one SELECT per list per TTL."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Final

import aiohttp

from .client import Answer, gc_paused, get, session
from .context import Context, SelectCount
from .report import Claim, heading, say
from .stats import counts, ms, percentile

NAME: Final = "polling"
TABS: Final = 200
PATHS: Final = ("/acc/", "/user/")
TTL: Final = 5.0  # the service's default CACHE_TTL_SECONDS, which this scenario runs with
TARGET_P99: Final = 0.010
TARGET_PER_TTL: Final = 2
# How long after a STALE answer (which starts a background refresh) a slow request is counted as
# overlapping that refresh; a /user/ refresh keeps the service busy for tens of milliseconds.
REFRESH_WINDOW: Final = 0.25


@dataclass(frozen=True, slots=True)
class _Window:
    start: float  # seconds since the first poll could start
    end: float
    selects: SelectCount


async def _tab(
    client: aiohttp.ClientSession, url: str, phase: float, interval: float, duration: float
) -> list[Answer]:
    """One browser tab: both lists every `interval` s from `phase` on, each revalidating with
    the ETag of its previous answer."""
    answers: list[Answer] = []
    etags: dict[str, str | None] = dict.fromkeys(PATHS)
    start = time.perf_counter()
    poll = phase
    while poll < duration:
        await asyncio.sleep(max(0.0, start + poll - time.perf_counter()))
        got = await asyncio.gather(
            *(get(client, url, path, if_none_match=etags[path]) for path in PATHS)
        )
        for answer in got:
            if answer.etag is not None:
                etags[answer.path] = answer.etag
        answers += got
        poll += interval
    return answers


async def _sample_selects(
    ctx: Context, stop: asyncio.Event, start: float, first: tuple[int, int]
) -> list[_Window]:
    """SELECT counts over consecutive TTL-long windows from `start` (when the counters read
    `first`) until `stop` is set."""
    windows: list[_Window] = []
    last_time, last_count = start, first
    while not stop.is_set():
        next_time = last_time + TTL
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_time - time.perf_counter()))
        now, count = time.perf_counter(), await ctx.counters()
        windows.append(_Window(last_time - start, now - start, ctx.selects(last_count, count)))
        last_time, last_count = now, count
    return windows


def _explain_slow(answers: list[Answer]) -> None:
    """Say which slow answers waited for a load, or ran while a background refresh did."""
    slow = [a for a in answers if a.latency >= TARGET_P99]
    if not slow:
        return
    refreshes = [a.finished for a in answers if a.x_cache == "STALE"]
    waited = [a for a in slow if a.x_cache in ("MISS", "COALESCED")]
    overlapping = [
        a
        for a in slow
        if a not in waited and any(a.started - REFRESH_WINDOW <= t <= a.finished for t in refreshes)
    ]
    say(
        f"  {len(slow)} answers took >= {ms(TARGET_P99)}: {len(waited)} waited for a load "
        f"(MISS/COALESCED), {len(overlapping)} began within {REFRESH_WINDOW * 1000:.0f} ms after "
        f"a STALE answer started a background refresh, {len(slow) - len(waited) - len(overlapping)}"
        " other"
    )


async def run(ctx: Context) -> list[Claim]:
    interval, duration = (5.0, 10.0) if ctx.quick else (30.0, 60.0)
    heading(
        f"{NAME}: {TABS} tabs poll {' and '.join(PATHS)} every {interval:g} s for {duration:g} s "
        "with If-None-Match (default cache settings, TTL 5 s)"
    )
    service = await ctx.start_service("polling")
    rng = random.Random(7)
    # A tab's connections: browsers keep up to 6 per host.
    clients = [session(limit=6) for _ in range(TABS)]
    stop = asyncio.Event()
    try:
        with gc_paused():
            first = await ctx.counters()
            start = time.perf_counter()
            sampler = asyncio.create_task(_sample_selects(ctx, stop, start, first))
            per_tab = await asyncio.gather(
                *(
                    _tab(c, service.url, rng.uniform(0, interval), interval, duration)
                    for c in clients
                )
            )
            stop.set()
            windows = await sampler
    finally:
        stop.set()
        await asyncio.gather(*(c.close() for c in clients))
    service.check_alive()
    ctx.processes.stop(service)

    answers = [a for tab in per_tab for a in tab]
    latencies = [a.latency for a in answers]
    total = sum(w.selects.service for w in windows)
    total_server = sum(w.selects.server for w in windows)
    # The last window is cut short by the end of the run; it still counts in full.
    worst = max(w.selects.service for w in windows)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    say(f"  requests: {len(answers)}; statuses: {counts([a.status for a in answers])}")
    for path in PATHS:
        mine = [a for a in answers if a.path == path]
        say(
            f"  {path:7} X-Cache: {counts([a.x_cache for a in mine])}; "
            f"statuses: {counts([a.status for a in mine])}; "
            f"p50 {ms(percentile([a.latency for a in mine], 50))}, "
            f"p99 {ms(percentile([a.latency for a in mine], 99))}, "
            f"max {ms(max(a.latency for a in mine))}"
        )
    say(f"  all: p50 {ms(p50)}, p99 {ms(p99)}, max {ms(max(latencies))}")
    say(
        f"  SELECTs sent by the service: {total} in {windows[-1].end:.1f} s; per {TTL:g} s "
        "window: " + " ".join(str(w.selects.service) for w in windows)
    )
    say(
        f"  Com_select on the server (all clients): {total_server}; per window: "
        + " ".join(str(w.selects.server) for w in windows)
    )
    _explain_slow(answers)
    bad = [a for a in answers if a.status not in (200, 304)]
    return [
        Claim(
            NAME,
            "p99 latency",
            f"{ms(p99)} (p50 {ms(p50)}, {len(answers)} requests)",
            f"< {ms(TARGET_P99)}",
            p99 < TARGET_P99,
        ),
        Claim(
            NAME,
            f"SELECTs per {TTL:g} s window (max)",
            f"{worst} (total {total} in {len(windows)} windows; server Com_select {total_server})",
            f"<= {TARGET_PER_TTL}",
            worst <= TARGET_PER_TTL,
        ),
        Claim(
            NAME,
            "answers 200 or 304",
            f"{len(answers) - len(bad)}/{len(answers)}",
            f"{len(answers)}/{len(answers)}",
            not bad,
        ),
    ]
