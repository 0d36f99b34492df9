"""cold-burst-N: N browser tabs open at once on a fresh service, each asking for /acc/ and /user/:
2N requests for two uncached lists cost two SELECTs, and nobody waits much longer than the
query itself. The same burst against the limit reference (same gzip bytes) shows how long this
machine needs just to deliver 2N answers."""

from __future__ import annotations

import asyncio
import gzip
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Final

import aiohttp

from .client import Answer, gc_paused, get, session
from .context import Context, Scenario
from .dbstatus import Delta, Status
from .report import Claim, Outcome, Row, heading, say
from .stats import counts, ms, percentile

PATHS: Final = ("/acc/", "/user/")
SMOKE_TABS: Final = 50
QUERY_REPEATS: Final = 5
# Descriptors this process needs besides the burst's sockets: logs, pipes, the status
# connection, the event loop's own.
FD_MARGIN: Final = 200
WARM_PATH: Final = "/livez"


@dataclass(frozen=True, slots=True)
class _Burst:
    answers: list[Answer]
    fired: float  # perf_counter when the requests were released
    status: Delta
    complete: list[bool]  # per answer: 200 with every row

    @property
    def seconds(self) -> float:
        """From the release to the last byte of the last answer."""
        return max(a.finished for a in self.answers) - self.fired

    @property
    def rate(self) -> float:
        return len(self.answers) / self.seconds

    def row(self, scenario: str, variant: str) -> Row:
        latencies = [a.latency for a in self.answers]
        bad = self.complete.count(False)
        return Row(
            scenario=scenario,
            variant=variant,
            rate=self.rate,
            p50=percentile(latencies, 50),
            p99=percentile(latencies, 99),
            errors=bad,
            selects=self.status.selects,
            connections=self.status.connections,
            details={
                "requests": len(self.answers),
                "max_seconds": max(latencies),
                "last_byte_after_release_seconds": self.seconds,
                "x_cache": counts([a.x_cache for a in self.answers]),
                **self.status.as_json(),
            },
        )


async def _warm(client: aiohttp.ClientSession, url: str) -> None:
    async with client.get(url + WARM_PATH) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"warm-up GET {WARM_PATH} answered {resp.status}, expected 200")


async def _burst(
    url: str, tabs: int, rows: dict[str, int], read_status: Callable[[], Awaitable[Status]]
) -> _Burst:
    """2 x `tabs` requests with gzip accepted, as browsers send, each on its own keep-alive
    connection that was opened (and used once) beforehand, released at the same instant. Each
    answer is then decompressed and parsed: complete when 200 with `rows[path]` rows."""
    paths = [path for path in PATHS for _ in range(tabs)]
    clients = [session(limit=1) for _ in paths]
    try:
        await asyncio.gather(*(_warm(c, url) for c in clients))
        go = asyncio.Event()

        async def one(client: aiohttp.ClientSession, path: str) -> Answer:
            await go.wait()
            return await get(client, url, path)

        with gc_paused():
            tasks = [asyncio.create_task(one(c, p)) for c, p in zip(clients, paths, strict=True)]
            await asyncio.sleep(0.1)  # every task is now parked on the event
            before = await read_status()
            fired = time.perf_counter()
            go.set()
            answers = await asyncio.gather(*tasks)
            after = await read_status()
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    return _Burst(answers, fired, after - before, _complete(answers, rows))


def _complete(answers: list[Answer], rows: dict[str, int]) -> list[bool]:
    """Per answer: 200 with every row. Each distinct body is decompressed and parsed once (the
    answers of one cache entry are the same bytes), which keeps 2,000 answers of a megabyte
    quick to check."""
    counted: dict[tuple[str, str | None, bytes], int | None] = {}
    complete = []
    for answer in answers:
        key = (answer.path, answer.encoding, answer.body)
        if key not in counted:
            counted[key] = answer.rows()
        complete.append(answer.status == 200 and counted[key] == rows[answer.path])
    return complete


def _describe(label: str, burst: _Burst) -> None:
    complete = burst.complete
    latencies = [a.latency for a in burst.answers]
    say(f"  {label}: statuses {counts([a.status for a in burst.answers])}")
    for path in PATHS:
        mine = [a for a in burst.answers if a.path == path]
        whole = sum(
            1 for a, ok in zip(burst.answers, complete, strict=True) if ok and a.path == path
        )
        sizes = counts([f"{len(a.body):,}B/{a.encoding or 'identity'}" for a in mine])
        say(
            f"    {path:7} bodies {sizes}; X-Cache: {counts([a.x_cache for a in mine])}; "
            f"p50 {ms(percentile([a.latency for a in mine], 50))}, "
            f"max {ms(max(a.latency for a in mine))}; complete {whole}/{len(mine)}"
        )
    say(
        f"    all: p50 {ms(percentile(latencies, 50))}, p99 {ms(percentile(latencies, 99))}, "
        f"max {ms(max(latencies))}, last byte {ms(burst.seconds)} after the release; "
        f"database: {burst.status.selects} SELECTs, {burst.status.connections} connections opened"
    )


def _bodies(burst: _Burst) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The service's plain and gzip bytes per path, from the burst's answers."""
    plain: dict[str, bytes] = {}
    packed: dict[str, bytes] = {}
    for answer in burst.answers:
        if answer.status == 200 and answer.encoding == "gzip" and answer.path not in packed:
            packed[answer.path] = answer.body
            plain[answer.path] = gzip.decompress(answer.body)
    if set(packed) != set(PATHS):
        raise RuntimeError(f"no gzip answer 200 for {sorted(set(PATHS) - set(packed))}")
    return plain, packed


async def _query_time(ctx: Context, burst: _Burst) -> float:
    """The /user/ list SELECT run directly (median of QUERY_REPEATS), with the columns the
    service served, in its order."""
    user = next(a for a in burst.answers if a.path == "/user/" and a.status == 200)
    columns = list(user.json()[0])
    sql = f"SELECT {', '.join(f'`{c}`' for c in columns)} FROM `user` ORDER BY `id`"
    return await asyncio.to_thread(ctx.db.time_query, sql, QUERY_REPEATS)


def _check_open_files(name: str, connections: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if connections + FD_MARGIN > soft:
        raise RuntimeError(
            f"{name} needs {connections} + {FD_MARGIN} open files but the limit is {soft} "
            f"(hard {hard}); raise it (ulimit -n, limits.conf, LimitNOFILE=) and rerun"
        )


def scenario(tabs: int, slack: float) -> Scenario:
    """cold-burst-<tabs>: max latency may exceed the query time by `slack` seconds."""
    name = f"cold-burst-{tabs}"

    async def run(ctx: Context) -> Outcome:
        n = SMOKE_TABS if ctx.smoke else tabs
        _check_open_files(name, 2 * n)
        heading(
            f"{name}: {n} tabs x {len(PATHS)} lists = {2 * n} requests at once on {2 * n} "
            "open connections, gzip accepted, fresh service (default settings)"
        )
        service = await ctx.start_service(name)
        burst = await _burst(service.url, n, ctx.db.rows, ctx.read_status)
        service.check_alive()
        ctx.processes.stop(service)
        _describe("service", burst)
        if not any(a.path == "/user/" and a.status == 200 for a in burst.answers):
            raise RuntimeError("no GET /user/ answered 200")
        query = await _query_time(ctx, burst)

        plain, packed = _bodies(burst)
        reference = await ctx.start_reference(name, plain, packed)
        floor = await _burst(reference.url, n, ctx.db.rows, ctx.read_status)
        ctx.processes.stop(reference)
        _describe("limit reference, same gzip bytes (delivery floor)", floor)
        if not all(floor.complete):
            say("  WARNING: the limit reference did not deliver every answer; no floor")
        say(f"  /user/ SELECT run directly with PyMySQL: {ms(query)} (median of {QUERY_REPEATS})")

        rows = [
            replace(
                burst.row(name, "service"),
                ratio=burst.rate / floor.rate,
                ratio_to="limit reference",
            ),
            floor.row(name, "limit reference (delivery floor)"),
        ]
        complete = burst.complete
        worst = max(a.latency for a in burst.answers)
        limit = query + slack
        return Outcome(
            rows=rows,
            claims=[
                Claim(
                    name,
                    f"SELECTs for {2 * n} cold requests",
                    str(burst.status.selects),
                    "== 2",
                    burst.status.selects == 2,
                ),
                Claim(
                    name,
                    "max latency vs /user/ query time",
                    f"{ms(worst)} (query {ms(query)}; delivery floor max "
                    f"{ms(max(a.latency for a in floor.answers))})",
                    f"<= query + {slack * 1000:.0f} ms = {ms(limit)}",
                    worst <= limit,
                ),
                Claim(
                    name,
                    "answers 200 with every row",
                    f"{sum(complete)}/{len(complete)}",
                    f"{len(complete)}/{len(complete)}",
                    all(complete),
                ),
            ],
        )

    def seconds(smoke: bool) -> float:
        n = SMOKE_TABS if smoke else tabs
        # Two process starts, 2 x 2n connections, the query timing, the checks.
        return 4 + n / 125

    return Scenario(name, run, seconds)


SCENARIOS: Final = (scenario(200, 0.100), scenario(1000, 0.300))
