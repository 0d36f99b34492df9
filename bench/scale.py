"""scale: how the cost of a cold `GET /user/` grows with the table. Per size, in a database of
the scenario's own: the table read straight through each driver (the floor); on a fresh service
one cold load (its time, /livez and a cached hit meanwhile, RSS), then a dashboard polling it
every second (CPU to keep it fresh); on another fresh service 50 identical cold requests at once
(first answer, SELECTs)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import math
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp
import orjson

from . import data, rawfetch
from .client import Answer, gc_paused, get, scrape, session
from .context import Context, Scenario
from .database import GrowingDatabase
from .dbstatus import Delta
from .processes import Server
from .report import Claim, Outcome, Row, heading, say, text_table
from .stats import counts, mb, ms

NAME: Final = "scale"
FULL_SIZES: Final = (10_000, 100_000, 300_000, 1_000_000)
SMOKE_SIZES: Final = (10_000,)
SERVICE_DRIVERS: Final = ("asyncmy",)  # the fastest raw fetch; scenario() takes others
SEED: Final = 20240602
RAW_REPEATS: Final = 3
TABS: Final = 50
POLL_EVERY: Final = 0.005
RSS_EVERY: Final = 0.020
DASHBOARD_EVERY: Final = 1.0
FULL_UPKEEP: Final = 20.0
SMOKE_UPKEEP: Final = 6.0
LIST_PATH: Final = "/user/"
HIT_PATH: Final = "/acc/"
LIVEZ_PATH: Final = "/livez"
LIST_RESOURCE: Final = "user"
# A generous guess of the JSON bytes per row: the cache budget is set before the first load.
BODY_PER_ROW: Final = 250
BUDGET_BODIES: Final = 4
DEFAULT_CACHE_MAX_BYTES: Final = 67_108_864
ANSWER_TIMEOUT: Final = 600.0  # the client's, per request: never the limit of a cold load
SETTLE: Final = 0.5
ERROR_CHARS: Final = 300
TARGET_COLD_RATIO: Final = 3.0
TARGET_STALL: Final = 0.020
TARGET_CORE: Final = 0.10
CORE_ROWS: Final = 100_000  # the size the % core target is set for


@dataclass(frozen=True, slots=True)
class _Polls:
    """One client's polls of a path during the cold load."""

    latencies: list[float]
    bad: int  # answers other than 200

    @property
    def worst(self) -> float:
        return max(self.latencies, default=math.nan)


@dataclass(frozen=True, slots=True)
class _ColdLoad:
    seconds: float  # from sending the request to its last byte
    status: int
    x_cache: str
    etag: str | None
    encoding: str  # Content-Encoding: gzip, or identity when gzip was asked for but not sent
    received_bytes: int
    body_bytes: int  # decompressed: the JSON
    rows: int | None  # in the JSON array; None when the body is none
    error: str  # the body's start when it is no list
    livez: _Polls
    hit: _Polls
    baseline_rss: int
    sampled_rss: int  # highest VmRSS sample during the load
    peak_rss: int  # VmHWM after the load
    db: Delta
    queries: float  # the service's own count of its list queries


@dataclass(frozen=True, slots=True)
class _Burst:
    first: float  # seconds from the release to the first complete answer (NaN: none)
    last: float
    complete: int  # answers 200 with the cold load's byte count
    statuses: list[int]
    encodings: list[str]
    db: Delta
    queries: float  # the service's own count of its list queries


@dataclass(frozen=True, slots=True)
class _Upkeep:
    seconds: float
    cpu: float  # service CPU seconds (user + system) in the window
    loads: float  # loads of the list the service completed in the window
    statuses: list[int]
    db: Delta

    @property
    def core(self) -> float:
        return self.cpu / self.seconds

    @property
    def per_refresh(self) -> float:
        return self.cpu / self.loads if self.loads else math.nan


@dataclass(frozen=True, slots=True)
class _Result:
    rows: int
    driver: str
    driver_known: bool  # False: the service warned DB_DRIVER is no setting of its
    budget: int  # CACHE_MAX_BYTES
    raw: dict[str, rawfetch.RawFetch]
    cold: _ColdLoad
    upkeep: _Upkeep
    burst: _Burst

    @property
    def loaded(self) -> bool:
        """The cold load answered 200 with every row."""
        return self.cold.status == 200 and self.cold.rows == self.rows

    @property
    def fastest_raw(self) -> float:
        return min(r.seconds for r in self.raw.values())

    @property
    def rss_limit(self) -> int:
        return self.cold.baseline_rss + self.budget + 2 * self.cold.body_bytes

    @property
    def errors(self) -> int:
        cold, upkeep = self.cold, self.upkeep
        return (
            (cold.status != 200)
            + cold.livez.bad
            + cold.hit.bad
            + sum(1 for s in upkeep.statuses if s not in (200, 304))
            + TABS
            - self.burst.complete
        )


def _budget(rows: int) -> int:
    return max(DEFAULT_CACHE_MAX_BYTES, BUDGET_BODIES * BODY_PER_ROW * rows)


async def _start(ctx: Context, db: GrowingDatabase, driver: str, budget: int, label: str) -> Server:
    """A fresh service on `db` with default settings but the driver and the budget."""
    env = {
        **db.service_env(),
        "DB_DRIVER": driver,
        "CACHE_MAX_BYTES": str(budget),
        # The whole list is what is measured: the default limit refuses the bigger sizes.
        "MAX_LIST_BYTES": str(budget),
    }
    server = ctx.processes.service(env, label)
    await server.wait_ready()
    return server


def _knows_driver(server: Server) -> bool:
    """False when the service logged DB_DRIVER as an unknown variable (and so ignored it)."""
    lines = server.log.read_text(encoding="utf-8", errors="replace").splitlines()
    return not any("unknown_setting" in line and "DB_DRIVER" in line for line in lines)


async def _expect_ok(client: aiohttp.ClientSession, url: str, path: str) -> None:
    answer = await get(client, url, path)
    if answer.status != 200:
        raise RuntimeError(f"warm-up GET {path} answered {answer.status}, expected 200")


async def _poll(client: aiohttp.ClientSession, url: str, path: str, stop: asyncio.Event) -> _Polls:
    latencies: list[float] = []
    bad = 0
    while not stop.is_set():
        answer = await get(client, url, path)
        latencies.append(answer.latency)
        bad += answer.status != 200
        await asyncio.sleep(POLL_EVERY)
    return _Polls(latencies, bad)


async def _watch_rss(server: Server, stop: asyncio.Event) -> int:
    highest = 0
    while not stop.is_set():
        highest = max(highest, server.memory().rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=RSS_EVERY)
    return highest


def _unpack(answer: Answer) -> tuple[int, int | None, str]:
    """The decompressed body's bytes; the rows of its JSON array, or None and the body's first
    characters when it is none (an error's words)."""
    raw = gzip.decompress(answer.body) if answer.encoding == "gzip" else answer.body
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, list):
        return len(raw), len(value), ""
    return len(raw), None, raw[:ERROR_CHARS].decode("utf-8", errors="replace")


async def _cold_load(ctx: Context, server: Server) -> _ColdLoad:
    """One cold GET of the list, while /livez and a cached hit are polled and RSS sampled."""
    clients = [session(1, ANSWER_TIMEOUT) for _ in range(3)]
    load, livez, hit = clients
    try:
        for client, path in ((load, LIVEZ_PATH), (livez, LIVEZ_PATH), (hit, HIT_PATH)):
            await _expect_ok(client, server.url, path)
        await asyncio.sleep(SETTLE)
        baseline = server.memory().rss
        queries = await _queries(load, server.url)
        before = await ctx.read_status()
        stop = asyncio.Event()
        with gc_paused():
            polls = (
                asyncio.create_task(_poll(livez, server.url, LIVEZ_PATH, stop)),
                asyncio.create_task(_poll(hit, server.url, HIT_PATH, stop)),
            )
            rss = asyncio.create_task(_watch_rss(server, stop))
            try:
                answer = await get(load, server.url, LIST_PATH)
            finally:
                stop.set()
                livez_polls, hit_polls = await asyncio.gather(*polls)
                sampled = await rss
        delta = await ctx.read_status() - before
        peak = server.memory().peak
        queries = await _queries(load, server.url) - queries
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    body_bytes, rows, error = _unpack(answer)
    return _ColdLoad(
        answer.latency,
        answer.status,
        answer.x_cache,
        answer.etag,
        answer.encoding or "identity",
        len(answer.body),
        body_bytes,
        rows,
        error,
        livez_polls,
        hit_polls,
        baseline,
        sampled,
        peak,
        delta,
        queries,
    )


async def _queries(client: aiohttp.ClientSession, url: str) -> float:
    """The list's statements the service has run: Com_select counts every client's."""
    return (await scrape(client, url)).total("cmapi_db_query_seconds_count", resource=LIST_RESOURCE)


async def _loads(client: aiohttp.ClientSession, url: str) -> float:
    return (await scrape(client, url)).total(
        "cmapi_cache_load_seconds_count", resource=LIST_RESOURCE
    )


async def _settle(client: aiohttp.ClientSession, url: str) -> None:
    """Wait until no cache load runs, so that the window holds whole refreshes only."""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while (await scrape(client, url)).value("cmapi_cache_loads_in_flight") > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"a cache load still ran {ANSWER_TIMEOUT:g} s after the polls")
        await asyncio.sleep(0.05)


async def _upkeep(ctx: Context, server: Server, etag: str | None, seconds: float) -> _Upkeep:
    """One dashboard revalidating the list every DASHBOARD_EVERY s for `seconds` (default TTL):
    the service's CPU over the window, and the loads of the list it completed."""
    async with session(1, ANSWER_TIMEOUT) as client:
        loads = await _loads(client, server.url)
        before = await ctx.read_status()
        cpu = server.cpu_seconds()
        started = time.perf_counter()
        statuses: list[int] = []
        for tick in range(math.ceil(seconds / DASHBOARD_EVERY)):
            await asyncio.sleep(max(0.0, started + tick * DASHBOARD_EVERY - time.perf_counter()))
            answer = await get(client, server.url, LIST_PATH, if_none_match=etag)
            etag = answer.etag or etag
            statuses.append(answer.status)
        await asyncio.sleep(max(0.0, started + seconds - time.perf_counter()))
        await _settle(client, server.url)
        cpu = server.cpu_seconds() - cpu
        elapsed = time.perf_counter() - started
        delta = await ctx.read_status() - before
        loads = await _loads(client, server.url) - loads
    return _Upkeep(elapsed, cpu, loads, statuses, delta)


@dataclass(frozen=True, slots=True)
class _Drained:
    status: int
    encoding: str
    size: int  # bytes received
    finished: float  # perf_counter at the last byte

    def complete(self, sizes: dict[str, int]) -> bool:
        """200 with the byte count `sizes` holds for its encoding; without one (a gzip answer
        where the cold load got identity), its status alone decides."""
        return self.status == 200 and sizes.get(self.encoding, self.size) == self.size


async def _drain(client: aiohttp.ClientSession, url: str) -> _Drained:
    """GET the list with gzip accepted, its body counted and dropped (TABS copies of a big list
    would fill the memory)."""
    async with client.get(url + LIST_PATH, headers={"Accept-Encoding": "gzip"}) as resp:
        size = 0
        async for chunk in resp.content.iter_chunked(1 << 20):
            size += len(chunk)
        encoding = resp.headers.get("Content-Encoding", "identity")
        return _Drained(resp.status, encoding, size, time.perf_counter())


async def _burst(ctx: Context, server: Server, cold: _ColdLoad) -> _Burst:
    """TABS identical cold GETs of the list, each on its own warm connection, released at once;
    complete when 200 with the cold load's byte count for that encoding."""
    clients = [session(1, ANSWER_TIMEOUT) for _ in range(TABS)]
    try:
        await asyncio.gather(*(_expect_ok(c, server.url, LIVEZ_PATH) for c in clients))
        go = asyncio.Event()

        async def one(client: aiohttp.ClientSession) -> _Drained:
            await go.wait()
            return await _drain(client, server.url)

        with gc_paused():
            tasks = [asyncio.create_task(one(c)) for c in clients]
            await asyncio.sleep(0.1)  # every task is now parked on the event
            queries = await _queries(clients[0], server.url)
            before = await ctx.read_status()
            fired = time.perf_counter()
            go.set()
            answers = await asyncio.gather(*tasks)
            delta = await ctx.read_status() - before
            queries = await _queries(clients[0], server.url) - queries
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    sizes = {"identity": cold.body_bytes, cold.encoding: cold.received_bytes}
    done = [a.finished - fired for a in answers if a.complete(sizes)]
    return _Burst(
        min(done, default=math.nan),
        max(done, default=math.nan),
        len(done),
        [a.status for a in answers],
        [a.encoding for a in answers],
        delta,
        queries,
    )


async def _raw(db: GrowingDatabase) -> dict[str, rawfetch.RawFetch]:
    sql = rawfetch.select_all("user", data.USER_COLUMNS)
    fetched = {}
    for driver in rawfetch.DRIVERS:
        fetched[driver] = got = await rawfetch.measure(driver, db.addr, db.name, sql, RAW_REPEATS)
        runs = ", ".join(f"{s:.3f}" for s in got.runs)
        say(f"    raw fetch {driver}: {got.seconds:.3f} s (runs {runs}), {got.rows:,} rows")
    return fetched


async def _measure(
    ctx: Context,
    db: GrowingDatabase,
    driver: str,
    raw: dict[str, rawfetch.RawFetch],
    upkeep_seconds: float,
) -> _Result:
    budget = _budget(db.user_rows)
    label = f"{NAME}-{db.user_rows}-{driver}"
    server = await _start(ctx, db, driver, budget, f"{label}-load")
    known = _knows_driver(server)
    if not known:
        say(f"    WARNING: the service ignored DB_DRIVER={driver} (unknown setting)")
    cold = await _cold_load(ctx, server)
    _describe_cold(cold)
    upkeep = await _upkeep(ctx, server, cold.etag, upkeep_seconds)
    _describe_upkeep(upkeep)
    server.check_alive()
    ctx.processes.stop(server)
    server = await _start(ctx, db, driver, budget, f"{label}-burst")
    burst = await _burst(ctx, server, cold)
    server.check_alive()
    ctx.processes.stop(server)
    _describe_burst(burst)
    return _Result(db.user_rows, driver, known, budget, raw, cold, upkeep, burst)


def _warn_if_shared(what: str, db: Delta, queries: float) -> None:
    """Com_select counts every client of the server: say when it saw more than the service."""
    if db.selects != queries:
        say(
            f"    WARNING: {what}: the database counted {db.selects} SELECTs, the service ran "
            f"{queries:g}: another client used the database server meanwhile"
        )


def _describe_cold(cold: _ColdLoad) -> None:
    say(
        f"    cold load: {cold.status} {cold.x_cache}, {cold.seconds:.3f} s, "
        f"{mb(cold.body_bytes)} JSON received as {mb(cold.received_bytes)} {cold.encoding}, "
        f"{cold.rows} rows; "
        f"database: {cold.db.describe()}; service: {cold.queries:g} {LIST_RESOURCE} queries"
    )
    if cold.error:
        say(f"    cold load answered: {cold.error}")
    _warn_if_shared("cold load", cold.db, cold.queries)
    say(
        f"    meanwhile: {LIVEZ_PATH} worst {ms(cold.livez.worst)} of {len(cold.livez.latencies)}"
        f", {HIT_PATH} hit worst {ms(cold.hit.worst)} of {len(cold.hit.latencies)}; RSS "
        f"{mb(cold.baseline_rss)} before, peak {mb(cold.peak_rss)} (highest sample "
        f"{mb(cold.sampled_rss)})"
    )


def _describe_upkeep(upkeep: _Upkeep) -> None:
    say(
        f"    dashboard: {len(upkeep.statuses)} polls ({counts(upkeep.statuses)}) in "
        f"{upkeep.seconds:.1f} s, {upkeep.loads:g} loads, {upkeep.db.selects} SELECTs, "
        f"{upkeep.cpu:.3f} CPU s = {upkeep.core:.1%} of a core"
    )
    _warn_if_shared("dashboard", upkeep.db, upkeep.loads)


def _describe_burst(burst: _Burst) -> None:
    say(
        f"    {TABS} cold requests at once: first complete after {burst.first:.3f} s, last "
        f"{burst.last:.3f} s, {burst.complete}/{TABS} complete ({counts(burst.statuses)}, "
        f"{counts(burst.encodings)}); database: {burst.db.describe()}"
        f"; service: {burst.queries:g} {LIST_RESOURCE} queries"
    )
    _warn_if_shared(f"{TABS} cold requests", burst.db, burst.queries)


async def _size(
    ctx: Context,
    db: GrowingDatabase,
    rows: int,
    drivers: Sequence[str],
    upkeep_seconds: float,
) -> list[_Result]:
    started = time.perf_counter()
    await asyncio.to_thread(db.grow, rows)
    say(f"  {rows:,} rows in user (grown in {time.perf_counter() - started:.1f} s)")
    raw = await _raw(db)
    return [await _measure(ctx, db, driver, raw, upkeep_seconds) for driver in drivers]


TABLE_HEADER: Final = (
    "rows",
    "driver",
    "body MB",
    *(f"raw fetch {d} s" for d in rawfetch.DRIVERS),
    "cold load s",
    "first waiter s",
    "worst /livez ms",
    "worst hit ms",
    "baseline RSS MB",
    "peak RSS MB",
    "CPU per refresh s",
    "% core to keep fresh",
    f"SELECTs for {TABS} cold requests",
)


def _cells(r: _Result) -> tuple[str, ...]:
    return (
        f"{r.rows:,}",
        r.driver if r.driver_known else f"{r.driver} (ignored)",
        f"{r.cold.body_bytes / 1e6:.1f}",
        *(f"{r.raw[d].seconds:.3f}" for d in rawfetch.DRIVERS),
        f"{r.cold.seconds:.3f}",
        _fixed(r.burst.first, 3),
        f"{r.cold.livez.worst * 1000:.1f}",
        f"{r.cold.hit.worst * 1000:.1f}",
        f"{r.cold.baseline_rss / 1e6:.1f}",
        f"{r.cold.peak_rss / 1e6:.1f}",
        _fixed(r.upkeep.per_refresh, 3),
        f"{r.upkeep.core:.1%}",
        str(r.burst.db.selects),
    )


def _fixed(value: float, decimals: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{decimals}f}"


def _row(r: _Result) -> Row:
    return Row(
        scenario=NAME,
        variant=f"{r.rows:,} rows, {r.driver}",
        errors=r.errors,
        selects=r.burst.db.selects,
        connections=r.burst.db.connections,
        details={
            "rows": r.rows,
            "driver": r.driver,
            "driver_known_to_service": r.driver_known,
            "cache_max_bytes": r.budget,
            "max_list_bytes": r.budget,
            "body_bytes": r.cold.body_bytes,
            "received_bytes": r.cold.received_bytes,
            "content_encoding": r.cold.encoding,
            "raw_fetch_seconds": {d: f.seconds for d, f in r.raw.items()},
            "raw_fetch_runs_seconds": {d: f.runs for d, f in r.raw.items()},
            "cold_load_seconds": r.cold.seconds,
            "cold_load_status": r.cold.status,
            "cold_load_rows": r.cold.rows,
            "cold_load_selects": r.cold.db.selects,
            "cold_load_error": r.cold.error,
            "first_waiter_seconds": r.burst.first,
            "last_waiter_seconds": r.burst.last,
            "burst_complete": r.burst.complete,
            "burst_encodings": counts(r.burst.encodings),
            "burst_selects": r.burst.db.selects,
            "burst_connections_opened": r.burst.db.connections,
            "burst_service_queries": r.burst.queries,
            "cold_load_connections_opened": r.cold.db.connections,
            "cold_load_service_queries": r.cold.queries,
            "worst_livez_seconds": r.cold.livez.worst,
            "livez_polls": len(r.cold.livez.latencies),
            "worst_hit_seconds": r.cold.hit.worst,
            "hit_polls": len(r.cold.hit.latencies),
            "baseline_rss_bytes": r.cold.baseline_rss,
            "peak_rss_bytes": r.cold.peak_rss,
            "sampled_rss_max_bytes": r.cold.sampled_rss,
            "upkeep_seconds": r.upkeep.seconds,
            "upkeep_cpu_seconds": r.upkeep.cpu,
            "upkeep_loads": r.upkeep.loads,
            "upkeep_selects": r.upkeep.db.selects,
            "cpu_seconds_per_refresh": r.upkeep.per_refresh,
            "core_fraction_to_keep_fresh": r.upkeep.core,
        },
    )


def _raw_claim(r: _Result) -> Claim:
    fetched = r.raw.values()
    digests = {f.digest for f in fetched}
    return Claim(
        NAME,
        f"{' and '.join(r.raw)} return equal rows, {r.rows:,} rows",
        "; ".join(f"{f.driver} {f.rows:,} rows sha256 {f.digest[:12]}" for f in fetched),
        f"equal digests, {r.rows:,} rows each",
        len(digests) == 1 and all(f.rows == r.rows for f in fetched),
    )


def _claims(r: _Result, core_rows: int) -> list[Claim]:
    at = f"{r.rows:,} rows, {r.driver}"
    limit = TARGET_COLD_RATIO * r.fastest_raw
    stall = f"<= {ms(TARGET_STALL)}"
    claims = [
        Claim(
            NAME,
            f"cold load vs fastest raw fetch, {at}",
            f"{r.cold.seconds:.3f} s (fastest raw {r.fastest_raw:.3f} s)",
            f"<= {TARGET_COLD_RATIO:g} x raw = {limit:.3f} s",
            r.loaded and r.cold.seconds <= limit,
        ),
        Claim(
            NAME,
            f"worst {LIVEZ_PATH} during the cold load, {at}",
            ms(r.cold.livez.worst),
            stall,
            r.cold.livez.worst <= TARGET_STALL,
        ),
        Claim(
            NAME,
            f"worst cached {HIT_PATH} during the cold load, {at}",
            ms(r.cold.hit.worst),
            stall,
            r.cold.hit.worst <= TARGET_STALL,
        ),
        Claim(
            NAME,
            f"SELECTs for {TABS} cold requests, {at}",
            f"{r.burst.db.selects} (the service's own count of its {LIST_RESOURCE} queries: "
            f"{r.burst.queries:g}; single cold load: {r.cold.queries:g}, while the database "
            f"counted {r.cold.db.selects} SELECTs, the {HIT_PATH} poller's refreshes included)",
            "== 1",
            # During a long cold load the cached /acc/ expires and is refreshed: the database's
            # count is exact for the burst only, which runs nothing else.
            r.burst.db.selects == 1 and r.cold.queries == 1,
        ),
        Claim(
            NAME,
            f"peak RSS during the cold load, {at}",
            f"{mb(r.cold.peak_rss)} (baseline {mb(r.cold.baseline_rss)})",
            f"<= baseline + CACHE_MAX_BYTES + 2 x body = {mb(r.rss_limit)}",
            r.cold.peak_rss <= r.rss_limit,
        ),
        Claim(
            NAME,
            f"answers 200 with every row, {at}",
            f"cold load {r.cold.status} with {r.cold.rows} rows, {r.burst.complete}/{TABS} "
            f"burst answers complete, {r.errors} errors in all",
            f"200 with {r.rows:,} rows, {TABS}/{TABS}, 0 errors",
            r.loaded and r.errors == 0,
        ),
    ]
    if r.rows == core_rows:
        claims.append(
            Claim(
                NAME,
                f"share of a core to keep the list fresh, {at}",
                f"{r.upkeep.core:.1%} ({r.upkeep.cpu:.2f} CPU s in {r.upkeep.seconds:.1f} s, "
                f"{r.upkeep.loads:g} loads)",
                f"<= {TARGET_CORE:.0%}",
                r.upkeep.core <= TARGET_CORE,
            )
        )
    return claims


def _outcome(results: list[_Result], sizes: Sequence[int]) -> Outcome:
    if results:
        heading(f"{NAME}: a cold {LIST_PATH} by table size")
        for line in text_table(TABLE_HEADER, [_cells(r) for r in results]):
            say(line)
    # Smoke runs no CORE_ROWS size: its one size stands in, so the claim's code runs.
    core_rows = CORE_ROWS if CORE_ROWS in sizes else max(sizes)
    claims: list[Claim] = []
    seen: set[int] = set()
    for r in results:
        if r.rows not in seen:
            seen.add(r.rows)
            claims.append(_raw_claim(r))
        claims += _claims(r, core_rows)
    return Outcome(rows=[_row(r) for r in results], claims=claims)


def scenario(drivers: Sequence[str] = SERVICE_DRIVERS) -> Scenario:
    """scale, with the service run once per DB_DRIVER value in `drivers`."""

    async def run(ctx: Context) -> Outcome:
        sizes = SMOKE_SIZES if ctx.smoke else FULL_SIZES
        upkeep = SMOKE_UPKEEP if ctx.smoke else FULL_UPKEEP
        heading(
            f"{NAME}: cold GET {LIST_PATH} (gzip) at {', '.join(f'{s:,}' for s in sizes)} user "
            f"rows; raw fetch with {' and '.join(rawfetch.DRIVERS)}; service with DB_DRIVER "
            f"{' and '.join(drivers)}, CACHE_MAX_BYTES and MAX_LIST_BYTES {BUDGET_BODIES} x a "
            "guessed body, other settings default (DB_QUERY_TIMEOUT 5 s included)"
        )
        db = GrowingDatabase(ctx.db.addr, data.ACC_ROWS, SEED, ctx.workdir)
        results: list[_Result] = []
        failed: list[Claim] = []
        try:
            await asyncio.to_thread(db.create, SEED)
            say(f"  database {db.name}: {db.acc_rows} acc rows")
            for rows in sizes:
                try:
                    results += await _size(ctx, db, rows, drivers, upkeep)
                except Exception as exc:
                    # The smaller sizes' figures stay reported; a bigger size would fail too.
                    say(f"  ERROR at {rows:,} rows: {type(exc).__name__}: {exc}")
                    traceback.print_exc()
                    failed.append(
                        Claim(NAME, f"{rows:,} rows measured", type(exc).__name__, "no error", None)
                    )
                    break
        finally:
            ctx.processes.stop_servers()
            db.drop()
        outcome = _outcome(results, sizes)
        outcome.claims += failed
        return outcome

    def seconds(smoke: bool) -> float:
        sizes = SMOKE_SIZES if smoke else FULL_SIZES
        upkeep = SMOKE_UPKEEP if smoke else FULL_UPKEEP
        # Per size: two service starts and the pauses, the dashboard window; per row: the rows
        # generated and loaded, eight raw reads, and per driver the loads, burst and checks.
        per_size = 4 + len(drivers) * (upkeep + 4)
        per_row = 55e-6 + 100e-6 + len(drivers) * 35e-6
        return sum(per_size + rows * per_row for rows in sizes)

    return Scenario(NAME, run, seconds)


SCENARIO: Final = scenario()
