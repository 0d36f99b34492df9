"""MariaDB is stopped and started again while 20 clients poll: a cached list (/acc/) keeps
answering 200 from the cache (X-Cache: STALE), uncached pages answer 503 at once with the JSON
error and Retry-After (never a hang, never an empty list), /readyz stays 200 while ?verbose
names the outage, and a few seconds after the restart every request succeeds on fresh
connections, none of them dead, each one known to MariaDB.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Final

from devtools.mariadb import PrivateMariaDB

from .conftest import (
    SOON,
    Answer,
    CmApi,
    FaultReport,
    MariaDBView,
    StartCmApi,
    UncachedPaths,
    assert_page,
    assert_unavailable,
    eventually,
    settled,
    tally,
)

CLIENTS = 20
PACE = 0.2  # seconds between one client's rounds: a dashboard's polling, sped up
POOL_SIZE = 4
ENV: Final = {
    "DB_POOL_SIZE": str(POOL_SIZE),
    "DB_ACQUIRE_TIMEOUT": "1",
    "DB_QUERY_TIMEOUT": "2",
    "DB_CONNECTION_TIMEOUT": "1",
    # /acc/ is loaded once a second, and served from the cache while the database fails.
    "CACHE_TTL_SECONDS": "1",
    "CACHE_STALE_WHILE_REVALIDATE_SECONDS": "0",
    "CACHE_STALE_IF_ERROR_SECONDS": "300",
}
# The longest a 503 may take: a connection attempt or acquire, then a query, plus slack.
UNAVAILABLE_LIMIT = 1 + 2 + 2.0
# "Within a few seconds after the restart every request succeeds again."
RECOVERY_LIMIT = 3.0


@dataclass
class Polling:
    """What 20 polling clients and a readiness prober got."""

    acc: list[Answer] = field(default_factory=list)
    pages: list[tuple[Answer, int, int]] = field(default_factory=list)
    readyz: list[Answer] = field(default_factory=list)

    def since(self, moment: float) -> list[Answer]:
        return [a for a in [*self.acc, *(p[0] for p in self.pages)] if a.sent >= moment]


async def poll(cmapi: CmApi, polling: Polling, stop: asyncio.Event) -> None:
    paths = UncachedPaths()

    async def client() -> None:
        while not stop.is_set():
            polling.acc.append(await cmapi.get("/acc/"))
            path, after, limit = paths.next()
            polling.pages.append((await cmapi.get(path), after, limit))
            await asyncio.sleep(PACE)

    async def prober() -> None:
        while not stop.is_set():
            polling.readyz.append(await cmapi.get("/readyz?verbose"))
            await asyncio.sleep(0.1)

    await asyncio.gather(prober(), *(client() for _ in range(CLIENTS)))


async def test_database_restart_under_load(
    private_db: PrivateMariaDB,
    start_cmapi: StartCmApi,
    mariadb: MariaDBView,
    fault_report: FaultReport,
) -> None:
    cmapi = await start_cmapi(private_db.address.port, **ENV)
    polling, stop = Polling(), asyncio.Event()
    load = asyncio.create_task(poll(cmapi, polling, stop))
    try:
        await eventually(lambda: len(polling.pages) >= 2 * CLIENTS, SOON, "warm-up")
        warm = polling.since(0)
        assert all(a.status == 200 for a in warm), tally(warm)

        stopping = time.monotonic()
        await asyncio.to_thread(private_db.stop_server)
        down = time.monotonic()
        # Nothing can succeed from here to the restart: what this scrape counts came before.
        at_down = await cmapi.scrape()

        def outage_seen() -> bool:
            late = [a for a in polling.readyz if a.sent >= down]
            failed = [p for p, _, _ in polling.pages if p.sent >= down and p.status == 503]
            stale = [a for a in polling.acc if a.sent >= down and a.x_cache == "STALE"]
            degraded = any(_database(a)["status"] == "degraded" for a in late)
            return degraded and min(len(failed), len(stale)) >= CLIENTS

        await eventually(outage_seen, SOON, "the outage seen by clients and /readyz?verbose")

        await asyncio.to_thread(private_db.start_server)
        up = time.monotonic()
        selects_at_up = mariadb.selects
        ready = up + await eventually(
            lambda: any(_database(a)["status"] == "ok" for a in polling.readyz if a.sent >= up),
            SOON,
            "/readyz?verbose: the database up again",
        )
        # Leave the clients a window in which every request must succeed.
        window = up + RECOVERY_LIMIT
        await eventually(
            lambda: len(polling.since(max(window, ready))) >= 2 * CLIENTS, SOON, "recovered load"
        )
    finally:
        stop.set()
        await load

    everything = [*polling.acc, *(p[0] for p in polling.pages), *polling.readyz]
    assert all(a.status is not None for a in everything), [
        a.describe() for a in everything if a.status is None
    ]

    # The cached list never failed: fresh before and after, STALE while the database was away,
    # always the same rows.
    assert all(a.status == 200 for a in polling.acc), tally(polling.acc)
    assert len({a.body for a in polling.acc}) == 1
    assert len(polling.acc[0].json()) == 5
    stale = [a for a in polling.acc if a.x_cache == "STALE"]
    assert stale
    assert all(stopping <= a.sent < up + RECOVERY_LIMIT for a in stale)

    # Uncached pages: the full page, or a prompt 503 with the JSON error while it was down.
    failed = []
    for answer, after, limit in polling.pages:
        if answer.status == 503:
            assert_unavailable(answer)
            assert stopping <= answer.sent < up + RECOVERY_LIMIT, answer.describe()
            assert answer.seconds < UNAVAILABLE_LIMIT, answer.describe()
            failed.append(answer)
        else:
            assert_page(answer, after, limit)
    assert len(failed) >= CLIENTS
    fast = statistics.median(a.seconds for a in failed)
    assert fast < 0.5  # a refused connection is reported at once, not after a time-out

    # After the restart: every request succeeds, and nothing is served stale any more.
    recovered = polling.since(up + RECOVERY_LIMIT)
    assert recovered
    assert all(a.status == 200 and a.x_cache != "STALE" for a in recovered), tally(recovered)

    # /readyz: 200 throughout (the database is every replica's); ?verbose names the outage
    # (refused while the server is down) from its start until the first answer after it.
    probes = polling.readyz
    assert all(a.status == 200 for a in probes), tally(probes)
    assert all(_database(a)["status"] == "ok" for a in probes if a.sent < stopping)
    degraded = [_database(a) for a in probes if _database(a)["status"] == "degraded"]
    assert degraded
    assert any("refused: " in d["message"] for d in degraded), degraded
    assert all(_database(a)["status"] == "ok" for a in probes if a.sent >= ready)

    # What the service counted is what clients saw.
    final = await settled(cmapi, mariadb)
    assert final.http("/user/", 503) == len(failed)
    assert final.query_errors("user") == len(failed)
    assert final.value("cmapi_cache_requests_total", resource="acc", result="stale") == len(stale)
    assert final.value("cmapi_ready") == 1
    assert final.value("cmapi_db_up") == 1
    assert final.closed("broken") >= 1  # the connections the shutdown killed
    # Only statements in flight when the server went away ran twice (their retries refused at
    # once): from then on a failure was the latest outcome, so no request cost two attempts.
    retried = {
        outcome: sum(final.retries(r, outcome) for r in ("acc", "user"))
        for outcome in ("succeeded", "failed")
    }
    assert retried["failed"] <= POOL_SIZE
    closed = int(final.total("cmapi_db_connections_closed_total"))
    assert final.opened - closed == final.pool_total  # every connection accounted for

    # MariaDB (restarted: its counters start at zero) ran exactly the SELECTs the service
    # reports as answered since, plus this test's own: no query lost or sent twice.
    since_up = sum(final.queries(r) - at_down.queries(r) for r in ("acc", "user"))
    com_select = mariadb.status("Com_select")["Com_select"]
    assert com_select == since_up + mariadb.selects - selects_at_up

    # No dead connection is left in the pool: a burst that takes every one of them succeeds
    # and finds none broken.
    paths = UncachedPaths()
    keys = [paths.next() for _ in range(POOL_SIZE)]
    burst = await asyncio.gather(*(cmapi.get(path) for path, _, _ in keys))
    for answer, (_, after, limit) in zip(burst, keys, strict=True):
        assert_page(answer, after, limit)
    again = await settled(cmapi, mariadb)
    assert again.closed("broken") == final.closed("broken")
    sessions = mariadb.sessions(cmapi.user)
    assert len(sessions) == again.pool_total <= POOL_SIZE

    pages = [p[0] for p in polling.pages]
    last_failure = max(a.sent for a in failed)
    recovery = max(0.0, min(a.sent for a in pages if a.sent > last_failure) - up)
    fault_report.record(
        "db_restart",
        clients=CLIENTS,
        acc=tally(polling.acc),
        uncached=tally(pages),
        readyz=tally(probes),
        readyz_degraded=len(degraded),
        outage_s=round(up - stopping, 3),
        median_503_s=round(fast, 4),
        max_503_s=round(max(a.seconds for a in failed), 4),
        database_up_again_after_restart_s=round(ready - up, 3),
        recovery_s=round(recovery, 3),
        closed_broken=again.closed("broken"),
        retried=retried,
        leaked_connections=len(sessions) - again.pool_total,
        warm_answers=len(warm),
    )
    assert await cmapi.stop() == 0
    await eventually(lambda: not mariadb.sessions(cmapi.user), SOON, "sessions closed at exit")


def _database(probe: Answer) -> dict[str, str]:
    """The database check of a /readyz?verbose answer."""
    checks: list[dict[str, str]] = probe.json()["checks"]
    return next(c for c in checks if c["name"] == "database")
