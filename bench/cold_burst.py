"""cold-burst: 400 requests for two uncached lists at the same instant cost two SELECTs, and
nobody waits much longer than the query itself."""

from __future__ import annotations

import asyncio
import time
from typing import Final

import aiohttp

from . import data
from .client import Answer, gc_paused, get, session
from .context import Context
from .processes import PROBE_PATH
from .report import Claim, heading, say
from .stats import counts, ms, percentile

NAME: Final = "cold-burst"
PER_PATH: Final = 200
EXPECTED_ROWS: Final = {"/acc/": data.ACC_ROWS, "/user/": data.USER_ROWS}
SLACK: Final = 0.100  # seconds allowed on top of the query time
QUERY_REPEATS: Final = 5


async def _warm(client: aiohttp.ClientSession, url: str) -> None:
    async with client.get(url + PROBE_PATH) as resp:
        await resp.read()
        if resp.status != 404:
            raise RuntimeError(f"warm-up GET {PROBE_PATH} answered {resp.status}, expected 404")


async def run(ctx: Context) -> list[Claim]:
    heading(f"{NAME}: {2 * PER_PATH} connections, {PER_PATH} x /acc/ + {PER_PATH} x /user/ at once")
    service = await ctx.start_service("cold-burst")
    paths = ["/acc/"] * PER_PATH + ["/user/"] * PER_PATH
    # One session (so one TCP connection) per request, each opened and used once beforehand.
    clients = [session(limit=1) for _ in paths]
    try:
        await asyncio.gather(*(_warm(c, service.url) for c in clients))
        go = asyncio.Event()

        async def one(client: aiohttp.ClientSession, path: str) -> Answer:
            await go.wait()
            return await get(client, service.url, path)

        with gc_paused():
            tasks = [asyncio.create_task(one(c, p)) for c, p in zip(clients, paths, strict=True)]
            await asyncio.sleep(0.1)  # every task is now parked on the event
            before = await ctx.counters()
            fired = time.perf_counter()
            go.set()
            answers = await asyncio.gather(*tasks)
            after = await ctx.counters()
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    service.check_alive()
    ctx.processes.stop(service)

    selects = ctx.selects(before, after)
    user_body = next((a for a in answers if a.path == "/user/" and a.status == 200), None)
    if user_body is None:
        raise RuntimeError(f"no GET /user/ answered 200: {counts([a.status for a in answers])}")
    columns = list(user_body.json()[0])  # the exposed columns, in the service's order
    sql = f"SELECT {', '.join(f'`{c}`' for c in columns)} FROM `user` ORDER BY `id`"
    query = await asyncio.to_thread(ctx.db.time_query, sql, QUERY_REPEATS)
    relayed = await asyncio.to_thread(ctx.db.time_query, sql, QUERY_REPEATS, ctx.relay.address)

    complete = [a.status == 200 and a.rows() == EXPECTED_ROWS[a.path] for a in answers]
    latencies = [a.latency for a in answers]
    since_fire = max(a.finished for a in answers) - fired
    say(
        f"  SELECTs sent by the service: {selects.service} (expected 2); "
        f"Com_select delta on the server (all clients): {selects.server}"
    )
    say(f"  statuses: {counts([a.status for a in answers])}")
    for path in EXPECTED_ROWS:
        mine = [a for a in answers if a.path == path]
        whole = sum(1 for a, ok in zip(answers, complete, strict=True) if ok and a.path == path)
        sizes = counts([f"{len(a.body):,}B/{a.encoding or 'identity'}" for a in mine])
        say(
            f"  {path:7} bodies {sizes}; X-Cache: {counts([a.x_cache for a in mine])}; "
            f"p50 {ms(percentile([a.latency for a in mine], 50))}, "
            f"max {ms(max(a.latency for a in mine))}; "
            f"complete {whole}/{len(mine)}"
        )
    say(
        f"  all: p50 {ms(percentile(latencies, 50))}, max {ms(max(latencies))}, "
        f"last byte {ms(since_fire)} after the start signal"
    )
    say(
        f"  /user/ SELECT run directly with PyMySQL: {ms(query)} (median of {QUERY_REPEATS}); "
        f"through the counting relay the service uses: {ms(relayed)}"
    )
    limit = query + SLACK
    return [
        Claim(
            NAME,
            "SELECTs for 400 cold requests",
            f"{selects.service} (server Com_select {selects.server})",
            "== 2",
            selects.service == 2,
        ),
        Claim(
            NAME,
            "max latency vs /user/ query time",
            f"{ms(max(latencies))} (query {ms(query)})",
            f"<= query + {SLACK * 1000:.0f} ms = {ms(limit)}",
            max(latencies) <= limit,
        ),
        Claim(
            NAME,
            "answers 200 with every row",
            f"{sum(complete)}/{len(answers)}",
            f"{len(answers)}/{len(answers)}",
            all(complete),
        ),
    ]
