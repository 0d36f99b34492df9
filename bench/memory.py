"""memory: with many distinct large answers the cache stays within its byte budget, and the
process's resident memory stays within the budget plus a fixed allowance."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Final

import aiohttp

from .client import get, scrape, session
from .context import Context, Scenario
from .processes import Server
from .report import Claim, Outcome, Row, heading, say
from .stats import counts, mb, percentile

NAME: Final = "memory"
ALLOWANCE: Final = 60_000_000  # bytes of RSS allowed on top of the cache budget
CONCURRENCY: Final = 20
MAX_LIMIT: Final = 1000  # the service's default MAX_PAGE_SIZE
MIN_LIMIT: Final = 100
SAMPLE_EVERY: Final = 0.5
FULL_KEYS: Final = 10_000
SMOKE_KEYS: Final = 200


@dataclass(slots=True)
class _Samples:
    rss: list[int]
    cache_bytes: list[float]


def _keys(count: int, users: int, rng: random.Random) -> list[str]:
    """Up to `count` distinct /user/ pages, mostly large: limit 100..1000, after 0..users-limit
    (fewer when the table has fewer distinct pages)."""
    high, low = min(MAX_LIMIT, users), min(MIN_LIMIT, users)
    possible = sum(users - limit + 1 for limit in range(low, high + 1))
    seen: set[tuple[int, int]] = set()
    while len(seen) < min(count, possible):
        limit = rng.randint(low, high)
        seen.add((rng.randint(0, users - limit), limit))
    keys = [f"/user/?limit={limit}&after={after}" for after, limit in seen]
    rng.shuffle(keys)
    return keys


async def _drive(url: str, keys: list[str]) -> tuple[list[int], list[float], int]:
    """GET every key with CONCURRENCY requests in flight, without gzip; the statuses, the
    latencies and the bytes received."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in keys:
        queue.put_nowait(key)
    statuses: list[int] = []
    latencies: list[float] = []
    received = 0

    async def worker(client: aiohttp.ClientSession) -> None:
        nonlocal received
        while not queue.empty():
            answer = await get(client, url, queue.get_nowait(), gzip_ok=False)
            statuses.append(answer.status)
            latencies.append(answer.latency)
            received += len(answer.body)

    async with session(limit=CONCURRENCY) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
    return statuses, latencies, received


async def _watch(server: Server, stop: asyncio.Event, samples: _Samples) -> None:
    """RSS and the cache's own byte count, side by side, until `stop`."""
    async with session(limit=1) as client:
        while not stop.is_set():
            samples.rss.append(server.memory().rss)
            samples.cache_bytes.append(
                (await scrape(client, server.url)).value("cmapi_cache_bytes")
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=SAMPLE_EVERY)


async def run(ctx: Context) -> Outcome:
    count = SMOKE_KEYS if ctx.smoke else FULL_KEYS
    keys = _keys(count, ctx.db.user_rows, random.Random(11))
    heading(
        f"{NAME}: {len(keys):,} distinct /user/?limit=L&after=K pages, {CONCURRENCY} in flight, "
        "default cache budget"
    )
    service = await ctx.start_service(NAME)
    async with session(limit=2) as client:
        for path in ("/acc/", "/user/", "/acc/1", "/user/1"):
            await get(client, service.url, path)
            await get(client, service.url, path, gzip_ok=False)
        budget = (await scrape(client, service.url)).value("cmapi_cache_max_bytes")
    await asyncio.sleep(0.5)
    baseline = service.memory()
    samples = _Samples([], [])
    stop = asyncio.Event()
    before = await ctx.read_status()
    watcher = asyncio.create_task(_watch(service, stop, samples))
    started = time.perf_counter()
    try:
        statuses, latencies, received = await _drive(service.url, keys)
    finally:
        stop.set()
        await watcher
    elapsed = time.perf_counter() - started
    status = await ctx.read_status() - before
    service.check_alive()
    await asyncio.sleep(0.5)
    final = service.memory()
    async with session(limit=1) as client:
        cache_end = (await scrape(client, service.url)).value("cmapi_cache_bytes")
    ctx.processes.stop(service)

    limit = budget + ALLOWANCE
    cache_max = max([*samples.cache_bytes, cache_end])
    say(
        f"  {len(statuses):,} requests in {elapsed:.1f} s, statuses: {counts(statuses)}, "
        f"{mb(received)} of bodies received; database: {status.selects:,} SELECTs, "
        f"{status.connections} connections opened"
    )
    say(f"  cache budget (cmapi_cache_max_bytes): {mb(budget)}")
    say(
        f"  cache bytes (cmapi_cache_bytes): highest of {len(samples.cache_bytes)} samples "
        f"{mb(max(samples.cache_bytes, default=0))}, at the end {mb(cache_end)}"
    )
    say(f"  RSS after warm-up (baseline): {mb(baseline.rss)}")
    say(f"  RSS at the end:               {mb(final.rss)}  (growth {mb(final.rss - baseline.rss)})")
    say(
        f"  peak RSS (VmHWM):             {mb(final.peak)}  (growth {mb(final.peak - baseline.rss)}"
        f"; highest {SAMPLE_EVERY:g} s sample {mb(max(samples.rss, default=0))})"
    )
    say(f"  budget {mb(budget)} + allowance {mb(ALLOWANCE)} = {mb(limit)}")
    ok = [s for s in statuses if s == 200]
    row = Row(
        scenario=NAME,
        variant=f"service, {len(keys):,} keys",
        rate=len(statuses) / elapsed,
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        errors=len(statuses) - len(ok),
        selects=status.selects,
        connections=status.connections,
        details={
            "requests": len(statuses),
            "bytes_received": received,
            "cache_budget_bytes": budget,
            "cache_bytes_max": cache_max,
            "cache_bytes_end": cache_end,
            "rss_baseline_bytes": baseline.rss,
            "rss_end_bytes": final.rss,
            "rss_peak_bytes": final.peak,
            **status.as_json(),
        },
    )
    return Outcome(
        rows=[row],
        claims=[
            Claim(
                NAME,
                "peak RSS vs cache budget",
                f"{mb(final.peak)} (baseline {mb(baseline.rss)}, "
                f"growth {mb(final.peak - baseline.rss)})",
                f"<= budget + {mb(ALLOWANCE)} = {mb(limit)}",
                final.peak <= limit,
            ),
            Claim(
                NAME,
                "cache bytes vs budget",
                f"{mb(cache_max)} (highest sample or end)",
                f"<= {mb(budget)}",
                cache_max <= budget,
            ),
            Claim(
                NAME,
                "answers 200",
                f"{len(ok):,}/{len(statuses):,}",
                f"{len(keys):,}/{len(keys):,}",
                len(ok) == len(keys),
            ),
        ],
    )


def _seconds(smoke: bool) -> float:
    # Only for the progress line: start-up and warm-up plus a per-page cost (see bench/README.md).
    return 3 + (SMOKE_KEYS if smoke else FULL_KEYS) * 0.008


SCENARIO: Final = Scenario(NAME, run, _seconds)
