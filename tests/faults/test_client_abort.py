"""1,000 clients give up while their query runs: each sends a request for a page of its own
(CACHE_TTL_SECONDS=0, distinct keys: one query each), then closes the socket, half with a FIN
and half with an RST, before the query can have answered.

What is true of the service (and asserted): aiohttp does not cancel a handler whose client left
(handler_cancellation is off), and the cache's single-flight shields a load from its waiters
anyway, so every query still runs to its end and returns its connection; none is cancelled,
none leaks, and the service goes on answering correctly.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter

from .conftest import (
    SOON,
    FaultReport,
    MariaDBView,
    StartCmApi,
    UncachedPaths,
    assert_page,
    eventually,
    settled,
)
from .proxy import FaultProxy, Mode, reset_connection

ABORTS = 1000
SLOTS = 6  # clients at a time; each of their queries runs a while after they left
POOL_SIZE = 20
DELAY_MS = 30  # per chunk: a query's round trip takes at least 60 ms
# Clients leave 10-45 ms after sending: always before the query can have answered.
GIVE_UP_S = (0.010, 0.045)


async def give_up(port: int, path: str, wait: float, *, reset: bool) -> str:
    """Send one request and leave after `wait` seconds; what the client saw by then."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(1), wait)
        except TimeoutError:
            return "left mid-request"
        return "answered before leaving" if data else "closed by the service"
    finally:
        if reset:
            reset_connection(writer)
        else:
            writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_clients_leaving_mid_query_leak_nothing(
    proxy: FaultProxy,
    start_cmapi: StartCmApi,
    mariadb: MariaDBView,
    fault_report: FaultReport,
) -> None:
    cmapi = await start_cmapi(
        proxy.port,
        DB_POOL_SIZE=str(POOL_SIZE),
        DB_POOL_MIN_SIZE=str(POOL_SIZE),
        DB_ACQUIRE_TIMEOUT="5",
        DB_QUERY_TIMEOUT="5",
        CACHE_TTL_SECONDS="0",
    )
    before = await settled(cmapi, mariadb)
    assert before.pool_total == POOL_SIZE
    status, selects = mariadb.status("Com_select", "Aborted_clients"), mariadb.selects

    proxy.set_mode(Mode.DELAY, delay_ms=DELAY_MS)
    paths = UncachedPaths()
    rng = random.Random(20261126)
    plans = [(paths.next()[0], rng.uniform(*GIVE_UP_S), n % 2 == 1) for n in range(ABORTS)]
    seen: Counter[str] = Counter()

    async def slot(mine: list[tuple[str, float, bool]]) -> None:
        for path, wait, reset in mine:
            seen[await give_up(cmapi.port, path, wait, reset=reset)] += 1

    await asyncio.gather(*(slot(plans[i::SLOTS]) for i in range(SLOTS)))
    left = time.monotonic()
    assert seen == {"left mid-request": ABORTS}

    after = await settled(cmapi, mariadb)
    proxy.set_mode(Mode.PASS)
    # Every query ran to its end: none cancelled, failed or sent twice, and MariaDB ran exactly
    # those (plus this test's own PROCESSLIST reads).
    assert after.queries("user") - before.queries("user") == ABORTS
    assert after.query_errors("user") == before.query_errors("user") == 0
    now = mariadb.status("Com_select", "Aborted_clients")
    assert now["Com_select"] - status["Com_select"] == ABORTS + mariadb.selects - selects
    # Every connection went back to the pool: none closed, none opened, MariaDB saw none drop.
    closed = {r: after.closed(r) - before.closed(r) for r in ("cancelled", "broken", "timeout")}
    assert closed == {"cancelled": 0, "broken": 0, "timeout": 0}
    assert after.total("cmapi_db_connections_closed_total") == before.total(
        "cmapi_db_connections_closed_total"
    )
    assert after.opened == before.opened
    assert now["Aborted_clients"] == status["Aborted_clients"]
    assert after.pool_total == len(mariadb.sessions(cmapi.user)) == POOL_SIZE
    # The books tell the truth: not one byte reached these clients, so none is counted as a
    # 200 served; each is a 499 (client closed request).
    assert after.http("/user/", 200) - before.http("/user/", 200) == 0
    assert after.http("/user/", 499) == ABORTS  # the series is born with the first one
    # No socket left behind: the process holds as many descriptors as before.
    fds: list[float] = []

    async def no_socket_left() -> bool:
        fds.append((await cmapi.scrape()).value("process_open_fds"))
        return fds[-1] == before.value("process_open_fds")

    await eventually(no_socket_left, SOON, "descriptors back to before", lambda: fds[-3:])

    path, after_key, limit = paths.next()
    check = await cmapi.get(path)
    assert_page(check, after_key, limit)
    fault_report.record(
        "client_abort",
        clients={"status": {"none (left mid-request)": seen["left mid-request"]}},
        queries_run=after.queries("user") - before.queries("user"),
        counted_as_499=after.http("/user/", 499),
        connections_closed=closed,
        open_fds_before_after=[before.value("process_open_fds"), fds[-1]],
        recovery_s=round(check.sent + check.seconds - left, 3),
        leaked_connections=mariadb.leaked(cmapi.user, after),
    )
    assert await cmapi.stop() == 0
