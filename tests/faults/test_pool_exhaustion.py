"""More concurrent uncached requests than connections (DB_POOL_SIZE=1) while the one query is
slow: the others wait DB_ACQUIRE_TIMEOUT for a connection, then get 503 with Retry-After; the
pool's gauges and counters show the queue and the time-outs, MariaDB sees a single query, and
afterwards nothing is left in use.
"""

from __future__ import annotations

import asyncio
import time

from .conftest import (
    SOON,
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
from .proxy import FaultProxy, Mode

ACQUIRE_TIMEOUT = 1.0
DELAY_MS = 800  # per chunk: the one query holds the connection for at least 1.6 s
REQUESTS = 8


async def test_waiters_time_out_with_503_and_the_pool_drains(
    proxy: FaultProxy,
    start_cmapi: StartCmApi,
    mariadb: MariaDBView,
    fault_report: FaultReport,
) -> None:
    cmapi = await start_cmapi(
        proxy.port,
        DB_POOL_SIZE="1",
        DB_ACQUIRE_TIMEOUT=str(ACQUIRE_TIMEOUT),
        DB_QUERY_TIMEOUT="5",
        CACHE_TTL_SECONDS="0",
    )
    paths = UncachedPaths()
    path, after, limit = paths.next()
    assert_page(await cmapi.get(path), after, limit)
    before = await settled(cmapi, mariadb)
    assert before.pool_total == 1
    status, selects = mariadb.status("Com_select"), mariadb.selects

    proxy.set_mode(Mode.DELAY, delay_ms=DELAY_MS)
    keys = [paths.next() for _ in range(REQUESTS)]
    requests = [asyncio.create_task(cmapi.get(path)) for path, _, _ in keys]
    seen: list[tuple[int, int]] = []

    async def saturated() -> bool:
        scrape = await cmapi.scrape()
        seen.append((scrape.in_use, scrape.pending))
        return seen[-1] == (1, REQUESTS - 1)

    # One request holds the connection, every other one is queued for it.
    await eventually(saturated, SOON, "the queue seen in the gauges", lambda: seen[-5:])
    answers = await asyncio.gather(*requests)
    proxy.set_mode(Mode.PASS)

    served = [(a, k) for a, k in zip(answers, keys, strict=True) if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    assert len(served) == 1, tally(answers)
    answer, (_, after, limit) = served[0]
    assert_page(answer, after, limit)
    assert answer.seconds >= 2 * DELAY_MS / 1000
    for answer in refused:
        assert_unavailable(answer)
        assert answer.json()["error"]["message"] == "no database connection free within 1 s"
        # Waited its acquire time-out, no more (and was not refused before it either).
        assert ACQUIRE_TIMEOUT - 0.05 <= answer.seconds < ACQUIRE_TIMEOUT + 1.5

    drained = time.monotonic()
    done = await settled(cmapi, mariadb)
    settle_s = time.monotonic() - drained
    waiters = REQUESTS - 1
    assert (
        done.value("cmapi_db_pool_acquire_timeouts_total")
        - before.value("cmapi_db_pool_acquire_timeouts_total")
        == waiters
    )
    assert done.query_errors("user", "pool") - before.query_errors("user", "pool") == waiters
    assert done.http("/user/", 503) - before.http("/user/", 503) == waiters
    assert done.opened == before.opened  # the pool never grew past its one connection
    assert done.pool_total == 1 == len(mariadb.sessions(cmapi.user))
    # Only the request that got the connection reached the database.
    com_select = mariadb.status("Com_select")["Com_select"] - status["Com_select"]
    assert com_select == 1 + mariadb.selects - selects

    # And it serves normally again.
    normal = []
    for _ in range(3):
        path, after, limit = paths.next()
        normal.append(await cmapi.get(path))
        assert_page(normal[-1], after, limit)
    burst_end = max(a.sent + a.seconds for a in answers)
    fault_report.record(
        "pool_exhaustion",
        pool_size=1,
        clients=tally(answers),
        peak_in_use_pending=list(seen[-1]),
        acquire_timeouts=waiters,
        burst_s=round(max(a.seconds for a in answers), 3),
        in_use_zero_after_s=round(settle_s, 3),
        recovery_s=round(normal[0].sent + normal[0].seconds - burst_end, 3),
        leaked_connections=mariadb.leaked(cmapi.user, done),
    )
    assert await cmapi.stop() == 0
