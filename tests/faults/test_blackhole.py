"""A network that drops everything (the proxy holds every byte, handshakes included) and one
that is merely slow. In the black hole every request is answered 503 within the configured
acquire and query time-outs, nothing waits forever, /readyz stays 200 and names the time-out,
and the service recovers by itself once packets flow again; a delay below the time-outs costs
time, not answers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from .conftest import (
    SOON,
    Answer,
    FaultReport,
    MariaDBView,
    Scrape,
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
QUERY_TIMEOUT = 1.0
ENV: Final = {
    "DB_ACQUIRE_TIMEOUT": str(ACQUIRE_TIMEOUT),
    "DB_QUERY_TIMEOUT": str(QUERY_TIMEOUT),
    "DB_CONNECTION_TIMEOUT": "1",
    "DB_POOL_SIZE": "4",
    "DB_POOL_MIN_SIZE": "2",
    "CACHE_TTL_SECONDS": "0",
}
# Waiting for a connection, then for the query, plus slack for a noisy machine.
ANSWER_BOUND = ACQUIRE_TIMEOUT + QUERY_TIMEOUT + 1.5
CLIENTS = 8
ROUNDS = 3


async def test_delay_below_the_time_outs_still_answers(
    proxy: FaultProxy,
    start_cmapi: StartCmApi,
    mariadb: MariaDBView,
    fault_report: FaultReport,
) -> None:
    cmapi = await start_cmapi(proxy.port, **ENV)
    paths = UncachedPaths()
    before = await settled(cmapi, mariadb)
    proxy.set_mode(Mode.DELAY, delay_ms=150)
    answers = []
    for _ in range(4):
        path, after, limit = paths.next()
        answer = await cmapi.get(path)
        assert_page(answer, after, limit)
        assert answer.seconds >= 0.3  # the query and its rows each waited once
        answers.append(answer)
    final = await settled(cmapi, mariadb)

    # The service measured the same: every query slower than 0.25 s, none beyond 1 s.
    def bucket(scrape: Scrape, le: str) -> float:
        return scrape.value("cmapi_db_query_seconds_bucket", resource="user", le=le)

    assert bucket(final, "0.25") - bucket(before, "0.25") == 0
    assert bucket(final, "1.0") - bucket(before, "1.0") == 4
    assert final.query_errors("user") == 0
    assert final.opened == before.opened  # the slow connections were kept, not replaced
    fault_report.record(
        "delay_150ms",
        clients=tally(answers),
        slowest_s=round(max(a.seconds for a in answers), 3),
        recovery_s=None,
        leaked_connections=mariadb.leaked(cmapi.user, final),
    )
    assert await cmapi.stop() == 0


async def test_blackhole_answers_503_within_the_time_outs_then_recovers(
    proxy: FaultProxy,
    start_cmapi: StartCmApi,
    mariadb: MariaDBView,
    fault_report: FaultReport,
) -> None:
    cmapi = await start_cmapi(proxy.port, **ENV)
    paths = UncachedPaths()
    for _ in range(3):
        path, after, limit = paths.next()
        assert_page(await cmapi.get(path), after, limit)
    before = await settled(cmapi, mariadb)
    assert before.pool_total == before.idle == 2  # the warm minimum, nothing else
    status = mariadb.status("Aborted_clients", "Aborted_connects")

    proxy.set_mode(Mode.BLACKHOLE)

    async def client() -> list[Answer]:
        return [await cmapi.get(paths.next()[0]) for _ in range(ROUNDS)]

    holed = [
        a for answers in await asyncio.gather(*(client() for _ in range(CLIENTS))) for a in answers
    ]
    for answer in holed:
        assert_unavailable(answer)
    seconds = [a.seconds for a in holed]
    # Every request got its 503 within the time-outs: none waited for the network.
    assert max(seconds) < ANSWER_BOUND, sorted(seconds)
    during = await cmapi.scrape()  # /metrics never needs the database
    assert during.in_use == 0
    assert during.pending == 0
    # Still ready (the hole is every replica's), answered without waiting, the cause named.
    readyz = await cmapi.get("/readyz?verbose")
    assert readyz.status == 200, readyz.describe()
    assert readyz.seconds < 1.0
    database = next(c for c in readyz.json()["checks"] if c["name"] == "database")
    assert database["status"] == "degraded"
    assert "time-out: no answer to " in database["message"], database
    assert during.value("cmapi_db_up") == 0
    assert proxy.open_connections() >= 2  # held by the hole, not forwarded

    proxy.set_mode(Mode.PASS)
    opened = time.monotonic()
    first_ok: list[float] = []

    async def answered() -> bool:
        path, after, limit = paths.next()
        answer = await cmapi.get(path)
        if answer.status == 200:
            assert_page(answer, after, limit)
            first_ok.append(answer.sent + answer.seconds - opened)
            return True
        assert_unavailable(answer)
        return False

    await eventually(answered, SOON, "an answer once packets flow")
    keys = [paths.next() for _ in range(10)]
    recovered = await asyncio.gather(*(cmapi.get(path) for path, _, _ in keys))
    for answer, (_, after, limit) in zip(recovered, keys, strict=True):
        assert_page(answer, after, limit)
    assert (await cmapi.scrape()).value("cmapi_db_up") == 1

    final = await settled(cmapi, mariadb)
    await eventually(
        lambda: proxy.open_connections() == final.pool_total, SOON, "held connections gone"
    )
    failed = CLIENTS * ROUNDS
    assert final.query_errors("user") - before.query_errors("user") == failed
    assert final.http("/user/", 503) - before.http("/user/", 503) == failed
    # The two idle connections each took one query into the hole, waited out the query
    # time-out, and were closed for it (later requests got no connection: "pool", or the
    # failed handshake: "connection").
    timeouts = final.query_errors("user", "timeout") - before.query_errors("user", "timeout")
    assert timeouts == 2
    assert final.closed("timeout") - before.closed("timeout") == 2
    closed = int(final.total("cmapi_db_connections_closed_total"))
    assert final.opened - closed == final.pool_total
    # MariaDB learnt of every abandoned session and handshake once the hole let their end
    # through: the two timed-out sessions as aborted clients, each handshake the service gave
    # up on as an aborted connect.
    connect_errors = int(
        final.value("cmapi_db_connect_errors_total") - before.value("cmapi_db_connect_errors_total")
    )
    assert connect_errors >= 1
    aborted: dict[str, int] = {}

    def seen_by_mariadb() -> bool:
        now = mariadb.status("Aborted_clients", "Aborted_connects")
        aborted.update({name: now[name] - status[name] for name in now})
        return aborted == {"Aborted_clients": 2, "Aborted_connects": connect_errors}

    await eventually(seen_by_mariadb, SOON, "MariaDB's view of the aborts", lambda: aborted)
    fault_report.record(
        "blackhole",
        clients=tally(holed),
        max_answer_s=round(max(seconds), 3),
        bound_s=ANSWER_BOUND,
        query_errors_by_kind={
            kind: final.query_errors("user", kind) - before.query_errors("user", kind)
            for kind in ("timeout", "pool", "connection")
        },
        connect_errors=connect_errors,
        mariadb_aborted=aborted,
        recovery_s=round(first_ok[0], 3),
        leaked_connections=mariadb.leaked(cmapi.user, final),
    )
    assert await cmapi.stop() == 0
