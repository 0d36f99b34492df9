"""memory: with many distinct large answers the cache stays within its byte budget, and the
process's resident memory stays within the budget plus a fixed allowance."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Final

import aiohttp

from . import data
from .client import get, session
from .context import Context
from .processes import Server
from .report import Claim, heading, say
from .stats import counts, mb

NAME: Final = "memory"
BUDGET: Final = 64 * 1024 * 1024  # the service's default CACHE_MAX_BYTES, which this runs with
ALLOWANCE: Final = 60_000_000  # bytes of RSS allowed on top of the budget
CONCURRENCY: Final = 20
MAX_LIMIT: Final = 1000  # the service's default MAX_PAGE_SIZE


def _keys(count: int, rng: random.Random) -> list[str]:
    """`count` distinct /user/ pages, mostly large: limit 100..1000, after 0..users-limit."""
    seen: set[tuple[int, int]] = set()
    while len(seen) < count:
        limit = rng.randint(100, MAX_LIMIT)
        seen.add((rng.randint(0, data.USER_ROWS - limit), limit))
    keys = [f"/user/?limit={limit}&after={after}" for after, limit in seen]
    rng.shuffle(keys)
    return keys


async def _drive(url: str, keys: list[str]) -> tuple[list[int], int]:
    """GET every key with CONCURRENCY requests in flight; the statuses and bytes received."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in keys:
        queue.put_nowait(key)
    statuses: list[int] = []
    received = 0

    async def worker(client: aiohttp.ClientSession) -> None:
        nonlocal received
        while not queue.empty():
            answer = await get(client, url, queue.get_nowait(), gzip_ok=False)
            statuses.append(answer.status)
            received += len(answer.body)

    async with session(limit=CONCURRENCY) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
    return statuses, received


async def _watch(server: Server, stop: asyncio.Event, samples: list[int]) -> None:
    while not stop.is_set():
        samples.append(server.memory().rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


async def run(ctx: Context) -> list[Claim]:
    count = 2_000 if ctx.quick else 10_000
    heading(
        f"{NAME}: {count:,} distinct /user/?limit=L&after=K pages, {CONCURRENCY} in flight, "
        f"cache budget {mb(BUDGET)} (default)"
    )
    service = await ctx.start_service("memory")
    async with session(limit=2) as client:
        for path in ("/acc/", "/user/", "/acc/1", "/user/1", "/acc/", "/user/"):
            await get(client, service.url, path)
            await get(client, service.url, path, gzip_ok=False)
    await asyncio.sleep(0.5)
    baseline = service.memory()
    before = await ctx.counters()
    keys = _keys(count, random.Random(11))
    samples: list[int] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(service, stop, samples))
    started = time.perf_counter()
    try:
        statuses, received = await _drive(service.url, keys)
    finally:
        stop.set()
        await watcher
    elapsed = time.perf_counter() - started
    selects = ctx.selects(before, await ctx.counters())
    service.check_alive()
    await asyncio.sleep(0.5)
    final = service.memory()
    ctx.processes.stop(service)

    limit = BUDGET + ALLOWANCE
    say(
        f"  {len(statuses):,} requests in {elapsed:.1f} s, statuses: {counts(statuses)}, "
        f"{mb(received)} of bodies received, {selects.service:,} SELECTs by the service "
        f"(Com_select on the server {selects.server:,})"
    )
    say(f"  RSS after warm-up (baseline): {mb(baseline.rss)}")
    say(f"  RSS at the end:               {mb(final.rss)}  (growth {mb(final.rss - baseline.rss)})")
    say(
        f"  peak RSS (VmHWM):             {mb(final.peak)}  (growth {mb(final.peak - baseline.rss)}"
        f"; highest 0.5 s sample {mb(max(samples, default=0))})"
    )
    say(f"  budget {mb(BUDGET)} + allowance {mb(ALLOWANCE)} = {mb(limit)}")
    ok = [s for s in statuses if s == 200]
    growth = final.peak - baseline.rss
    return [
        Claim(
            NAME,
            "peak RSS vs cache budget",
            f"{mb(final.peak)} (baseline {mb(baseline.rss)}, growth {mb(growth)})",
            f"<= budget + {mb(ALLOWANCE)} = {mb(limit)}",
            final.peak <= limit,
        ),
        Claim(
            NAME,
            "answers 200",
            f"{len(ok):,}/{len(statuses):,}",
            f"{count:,}/{count:,}",
            len(ok) == count,
        ),
    ]
