"""polling: dashboard tabs revalidating with If-None-Match, as browsers do under no-cache, are
answered fast (mostly 304), never wait for a refresh, and cost the database at most one SELECT
per list per TTL."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Final

import aiohttp

from .client import Answer, gc_paused, get, session
from .context import Context, Scenario
from .dbstatus import Delta, Status
from .report import Claim, Outcome, Row, heading, say
from .stats import counts, ms, percentile

NAME: Final = "polling"
PATHS: Final = ("/acc/", "/user/")
TTL: Final = 5.0  # the service's default CACHE_TTL_SECONDS, which this scenario runs with
TARGET_P99: Final = 0.010
TARGET_PER_TTL: Final = len(PATHS)  # one SELECT per list per TTL
WAITED: Final = ("MISS", "COALESCED")  # X-Cache of an answer that waited for a query
# How long after a STALE answer (which starts a background refresh) a slow request is counted as
# overlapping that refresh: well beyond a /user/ refresh (bench/README.md has its figure).
REFRESH_WINDOW: Final = 0.25


@dataclass(frozen=True, slots=True)
class _Size:
    tabs: int
    interval: float  # seconds between a tab's polls
    duration: float


FULL: Final = _Size(tabs=200, interval=30.0, duration=60.0)
SMOKE: Final = _Size(tabs=2, interval=1.0, duration=3.0)


@dataclass(frozen=True, slots=True)
class _Window:
    start: float  # seconds since the first poll could start
    end: float
    status: Delta


async def _tab(
    client: aiohttp.ClientSession, url: str, phase: float, size: _Size
) -> list[list[Answer]]:
    """One browser tab: both lists every `interval` s from `phase` on, each revalidating with
    the ETag of its previous answer; the answers of each poll."""
    polls: list[list[Answer]] = []
    etags: dict[str, str | None] = dict.fromkeys(PATHS)
    start = time.perf_counter()
    poll = phase
    while poll < size.duration:
        await asyncio.sleep(max(0.0, start + poll - time.perf_counter()))
        got = await asyncio.gather(
            *(get(client, url, path, if_none_match=etags[path]) for path in PATHS)
        )
        for answer in got:
            if answer.etag is not None:
                etags[answer.path] = answer.etag
        polls.append(got)
        poll += size.interval
    return polls


async def _sample(ctx: Context, stop: asyncio.Event, start: float, first: Status) -> list[_Window]:
    """The database's counters over consecutive TTL-long windows from `start` (when they read
    `first`) until `stop` is set, all from the one status connection."""
    windows: list[_Window] = []
    last_time, last = start, first
    while not stop.is_set():
        next_time = last_time + TTL
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_time - time.perf_counter()))
        now, status = time.perf_counter(), await ctx.read_status()
        windows.append(_Window(last_time - start, now - start, status - last))
        last_time, last = now, status
    return windows


def _explain_slow(answers: list[Answer]) -> None:
    """Say which slow answers waited for a load, or ran while a background refresh did."""
    slow = [a for a in answers if a.latency >= TARGET_P99]
    if not slow:
        return
    refreshes = [a.finished for a in answers if a.x_cache == "STALE"]
    waited = [a for a in slow if a.x_cache in WAITED]
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


async def run(ctx: Context) -> Outcome:
    size = SMOKE if ctx.smoke else FULL
    heading(
        f"{NAME}: {size.tabs} tabs poll {' and '.join(PATHS)} every {size.interval:g} s for "
        f"{size.duration:g} s with If-None-Match (default cache settings, TTL {TTL:g} s)"
    )
    service = await ctx.start_service(NAME)
    rng = random.Random(7)
    # A tab's connections: browsers keep up to 6 per host.
    clients = [session(limit=6) for _ in range(size.tabs)]
    stop = asyncio.Event()
    try:
        with gc_paused():
            first = await ctx.read_status()
            start = time.perf_counter()
            sampler = asyncio.create_task(_sample(ctx, stop, start, first))
            per_tab = await asyncio.gather(
                *(_tab(c, service.url, rng.uniform(0, size.interval), size) for c in clients)
            )
            stop.set()
            windows = await sampler
    finally:
        stop.set()
        await asyncio.gather(*(c.close() for c in clients))
    service.check_alive()
    ctx.processes.stop(service)

    answers = [a for tab in per_tab for poll in tab for a in poll]
    # A tab's first poll finds the cache as the other tabs left it; every later one should be
    # served at once from memory (HIT or STALE) while refreshes run in the background.
    later = [a for tab in per_tab for poll in tab[1:] for a in poll]
    waited = [a for a in later if a.x_cache in WAITED]
    latencies = [a.latency for a in answers]
    total = windows[0].status
    for window in windows[1:]:
        total += window.status
    # The last window is cut short by the end of the run; it still counts in full.
    worst = max(w.status.selects for w in windows)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    bad = [a for a in answers if a.status not in (200, 304)]
    elapsed = windows[-1].end
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
        f"  SELECTs: {total.selects} in {elapsed:.1f} s; per {TTL:g} s window: "
        + " ".join(str(w.status.selects) for w in windows)
        + f"; connections opened: {total.connections}"
    )
    say(
        f"  after each tab's first poll: {len(later)} answers, {len(waited)} waited for a query "
        f"(X-Cache {counts([a.x_cache for a in waited]) or 'MISS/COALESCED: none'})"
    )
    _explain_slow(answers)
    row = Row(
        scenario=NAME,
        variant=f"service, {size.tabs} tabs",
        rate=len(answers) / elapsed,
        p50=p50,
        p99=p99,
        errors=len(bad),
        selects=total.selects,
        connections=total.connections,
        details={
            "requests": len(answers),
            "seconds": elapsed,
            "max_seconds": max(latencies),
            "x_cache": counts([a.x_cache for a in answers]),
            "statuses": counts([a.status for a in answers]),
            "selects_per_window": [w.status.selects for w in windows],
            **total.as_json(),
        },
    )
    return Outcome(
        rows=[row],
        claims=[
            Claim(
                NAME,
                "p99 latency",
                f"{ms(p99)} (p50 {ms(p50)}, {len(answers)} requests)",
                f"< {ms(TARGET_P99)}",
                p99 < TARGET_P99,
            ),
            Claim(
                NAME,
                "answers that waited for a query after a tab's first poll",
                f"{len(waited)} of {len(later)}",
                "== 0",
                not waited,
            ),
            Claim(
                NAME,
                f"SELECTs per {TTL:g} s window (max)",
                f"{worst} (total {total.selects} in {len(windows)} windows)",
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
        ],
    )


def _seconds(smoke: bool) -> float:
    return (SMOKE if smoke else FULL).duration + 2


SCENARIO: Final = Scenario(NAME, run, _seconds)
