"""ConnectionPool against real MariaDB connections: reuse, the bound, discards, broken and aged
connections, connect errors, cancellation, shutdown and the minimum size.

Connections come from `Database._connect` (the function the service itself gives the pool), so
every test talks to the real server. Only the recycle test replaces something: the clock.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pymysql
import pytest

from service.db import Database
from service.pool import AcquireTimeout, ConnectFn, ConnectionPool, PoolClosed
from service.settings import Settings

from .conftest import SQL, connection_id, query, wait_until

LONG = 3600.0  # a max_lifetime no test reaches


PoolFactory = Callable[..., ConnectionPool]


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    """Builds pools for a test and closes, at its end, every one it left open."""
    pools: list[ConnectionPool] = []

    def make(connect: ConnectFn, **options: Any) -> ConnectionPool:
        pool = ConnectionPool(connect, **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close(grace=1)


@pytest.fixture
def connect(settings: Settings) -> ConnectFn:
    """Opens a real connection to the test database, exactly as the service does."""
    return Database(settings)._connect


def running_sleep(sql: SQL, conn_id: int) -> bool:
    """The server is executing a SLEEP() on connection `conn_id`."""
    rows = sql("SELECT INFO FROM information_schema.PROCESSLIST WHERE ID = %s", (conn_id,))
    return bool(rows) and str(rows[0][0] or "").startswith("SELECT SLEEP")


def connections(sql: SQL) -> int:
    return sql.status("Connections")["Connections"]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- reuse and the bound ----------------------------------------------------------------------


async def test_sequential_acquires_reuse_one_connection(
    connect: ConnectFn, sql: SQL, make_pool: PoolFactory
) -> None:
    before = connections(sql)
    pool = make_pool(connect, min_size=0, max_size=4, max_lifetime=LONG)
    ids = set()
    for _ in range(50):
        conn = await pool.acquire(5)
        ids.add(await connection_id(conn))
        pool.release(conn)
    stats = pool.stats()
    assert stats.opened_total == 1
    assert stats.closed_total == {}
    assert (stats.in_use, stats.idle, stats.pending, stats.opening) == (0, 1, 0, 0)
    assert len(ids) == 1
    assert connections(sql) - before == 1
    await pool.close(grace=1)
    assert pool.stats().closed_total == {"shutdown": 1}


async def test_third_acquirer_waits_for_a_release_or_times_out(
    connect: ConnectFn, make_pool: PoolFactory
) -> None:
    pool = make_pool(connect, min_size=0, max_size=2, max_lifetime=LONG)
    first = await pool.acquire(5)
    second = await pool.acquire(5)
    assert first is not second
    third = asyncio.create_task(pool.acquire(5))
    await wait_until(lambda: pool.stats().pending == 1)
    stats = pool.stats()
    assert (stats.in_use, stats.idle, stats.opening, stats.opened_total) == (2, 0, 0, 2)
    assert not third.done()

    pool.release(first)
    assert await asyncio.wait_for(third, 5) is first  # handed over, not a new connection
    assert pool.stats().pending == 0

    started = time.monotonic()
    with pytest.raises(AcquireTimeout, match=r"0\.2 s"):
        await pool.acquire(0.2)
    assert time.monotonic() - started < 2
    stats = pool.stats()
    assert stats.acquire_timeouts_total == 1
    assert (stats.pending, stats.in_use, stats.opened_total) == (0, 2, 2)

    pool.release(first)
    pool.release(second)
    stats = pool.stats()
    assert (stats.in_use, stats.idle, stats.opened_total) == (0, 2, 2)
    assert stats.closed_total == {}


# -- discarding broken connections ----------------------------------------------------------


async def test_discarded_connection_is_closed_and_replaced(
    connect: ConnectFn, make_pool: PoolFactory
) -> None:
    pool = make_pool(connect, min_size=0, max_size=2, max_lifetime=LONG)
    conn = await pool.acquire(5)
    old_id = await connection_id(conn)
    pool.release(conn, discard="error")
    assert conn.closed
    stats = pool.stats()
    assert stats.closed_total == {"error": 1}
    assert (stats.in_use, stats.idle, stats.opened_total) == (0, 0, 1)

    fresh = await pool.acquire(5)
    assert fresh is not conn
    assert await connection_id(fresh) != old_id
    assert pool.stats().opened_total == 2
    pool.release(fresh)


async def test_connection_killed_while_idle_is_detected_and_replaced(
    connect: ConnectFn, sql: SQL, make_pool: PoolFactory
) -> None:
    pool = make_pool(connect, min_size=0, max_size=2, max_lifetime=LONG)
    conn = await pool.acquire(5)
    old_id = await connection_id(conn)
    pool.release(conn)
    sql(f"KILL {old_id}")
    # The server closes the socket; the client learns it once the event loop reads the EOF.
    await wait_until(conn.looks_dead)

    fresh = await pool.acquire(5)
    assert fresh is not conn
    assert conn.closed
    new_id = await connection_id(fresh)  # the query on the replacement works
    assert new_id != old_id
    stats = pool.stats()
    assert stats.closed_total == {"broken": 1}
    assert (stats.opened_total, stats.in_use, stats.idle) == (2, 1, 0)
    pool.release(fresh)


# -- connect errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_size", [1, 3])
async def test_connect_errors_reach_every_waiter_promptly(
    make_settings: Callable[..., Settings], closed_port: int, max_size: int, make_pool: PoolFactory
) -> None:
    connect = Database(make_settings(DB_PORT=str(closed_port)))._connect
    pool = make_pool(connect, min_size=0, max_size=max_size, max_lifetime=LONG)
    started = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError) as caught:
        await pool.acquire(timeout=5)
    assert caught.value.args[0] == 2003  # CR_CONN_HOST_ERROR
    assert time.monotonic() - started < 2.5

    started = time.monotonic()
    results = await asyncio.gather(
        *(pool.acquire(timeout=5) for _ in range(3)), return_exceptions=True
    )
    assert time.monotonic() - started < 2.5
    assert [type(r) for r in results] == [pymysql.err.OperationalError] * 3
    stats = pool.stats()
    assert stats.connect_errors_total == 4
    assert stats.acquire_timeouts_total == 0
    assert (stats.opened_total, stats.in_use, stats.idle, stats.opening, stats.pending) == (
        0,
        0,
        0,
        0,
        0,
    )


async def test_a_silent_server_times_the_handshake_out(
    make_settings: Callable[..., Settings], make_pool: PoolFactory
) -> None:
    """A peer that accepts TCP connections and never speaks (a real listening socket that
    nobody serves) must not hang the pool: the handshake is bounded by DB_CONNECTION_TIMEOUT,
    and that is reported as a connect error, not as the acquirer's own time-out."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        connect = Database(make_settings(DB_PORT=str(port), DB_CONNECTION_TIMEOUT="0.3"))._connect
        pool = make_pool(connect, min_size=0, max_size=1, max_lifetime=LONG)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await pool.acquire(timeout=5)
        assert time.monotonic() - started < 2.5
        stats = pool.stats()
        assert (stats.connect_errors_total, stats.acquire_timeouts_total) == (1, 0)
        assert (stats.opening, stats.pending, stats.in_use) == (0, 0, 0)


# -- cancellation -----------------------------------------------------------------------------


async def test_cancelled_when_handed_a_connection_passes_it_on(
    connect: ConnectFn, make_pool: PoolFactory
) -> None:
    pool = make_pool(connect, min_size=0, max_size=1, max_lifetime=LONG)
    held = await pool.acquire(5)
    waiter = asyncio.create_task(pool.acquire(5))
    await wait_until(lambda: pool.stats().pending == 1)
    # In the same loop turn: the connection is handed to the waiter, then it is cancelled.
    pool.release(held)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    stats = pool.stats()
    assert (stats.in_use, stats.idle, stats.pending, stats.opened_total) == (0, 1, 0, 1)
    again = await pool.acquire(5)
    assert again is held
    await connection_id(again)
    pool.release(again)
    assert pool.stats().closed_total == {}


async def test_cancelled_acquirers_leak_nothing(connect: ConnectFn) -> None:
    pool = ConnectionPool(connect, min_size=0, max_size=2, max_lifetime=LONG)
    rng = random.Random(20240601)
    stop = asyncio.Event()
    served = 0

    async def holder() -> None:
        # Keeps taking and returning a connection so acquirers compete with real users.
        while not stop.is_set():
            conn = await pool.acquire(10)
            try:
                await connection_id(conn)
                await asyncio.sleep(0.001)
            finally:
                pool.release(conn)

    async def acquirer() -> None:
        nonlocal served
        conn = await pool.acquire(10)
        try:
            served += 1
            await asyncio.sleep(0.002)  # cancelled here: nothing in flight, the connection is clean
        finally:
            pool.release(conn)

    holders = [asyncio.create_task(holder()) for _ in range(2)]
    try:
        await wait_until(lambda: pool.stats().opened_total == 2)
        tasks = [asyncio.create_task(acquirer()) for _ in range(200)]
        loop = asyncio.get_running_loop()
        for task in tasks:
            loop.call_later(rng.uniform(0, 0.05), task.cancel)
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
        assert cancelled + sum(r is None for r in results) == 200
        assert cancelled > 0
        assert served > 0
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*holders), 10)
    try:
        stats = pool.stats()
        assert (stats.in_use, stats.pending, stats.opening) == (0, 0, 0)
        assert stats.opened_total <= 2
        assert stats.acquire_timeouts_total == 0
        assert sum(stats.closed_total.values()) + stats.idle == stats.opened_total
        # What is idle is healthy: each idle connection answers a query.
        conns = [await pool.acquire(1) for _ in range(stats.idle)]
        for conn in conns:
            await connection_id(conn)
            pool.release(conn)
        assert pool.stats().opened_total == stats.opened_total
    finally:
        await pool.close(grace=1)


# -- recycling by age -------------------------------------------------------------------------


async def test_connections_older_than_max_lifetime_are_recycled(
    connect: ConnectFn, make_pool: PoolFactory
) -> None:
    clock = FakeClock()  # fake clock: the test moves time instead of waiting 60 s
    pool = make_pool(connect, min_size=0, max_size=2, max_lifetime=60, clock=clock)
    first = await pool.acquire(5)
    clock.now += 61
    pool.release(first)  # too old on its way back: closed with QUIT, not kept
    stats = pool.stats()
    assert stats.closed_total == {"recycled": 1}
    assert (stats.in_use, stats.idle) == (0, 0)
    await wait_until(lambda: first.closed)

    second = await pool.acquire(5)
    assert second is not first
    clock.now += 30
    pool.release(second)  # 30 s old: kept
    assert pool.stats().idle == 1

    clock.now += 31  # now 61 s old while idle
    third = await pool.acquire(5)
    assert third is not second
    await connection_id(third)
    await wait_until(lambda: second.closed)
    stats = pool.stats()
    assert stats.closed_total == {"recycled": 2}
    assert (stats.opened_total, stats.in_use, stats.idle) == (3, 1, 0)
    pool.release(third)


async def test_close_right_after_a_recycle_still_closes_that_connection(
    connect: ConnectFn,
) -> None:
    clock = FakeClock()  # fake clock: ages the connection without waiting
    pool = ConnectionPool(connect, min_size=0, max_size=1, max_lifetime=60, clock=clock)
    conn = await pool.acquire(5)
    clock.now += 61
    pool.release(conn)  # recycled: its QUIT is queued on a background task ...
    await pool.close(grace=1)  # ... which close() must not drop
    assert conn.closed
    assert pool.stats().closed_total == {"recycled": 1}


# -- shutdown ---------------------------------------------------------------------------------


async def test_close_waits_for_connections_in_use(connect: ConnectFn) -> None:
    pool = ConnectionPool(connect, min_size=0, max_size=2, max_lifetime=LONG)
    busy = await pool.acquire(5)
    spare = await pool.acquire(5)
    pool.release(spare)

    async def give_back_later() -> None:
        await asyncio.sleep(0.2)
        await connection_id(busy)  # still usable during the grace period
        pool.release(busy)

    returner = asyncio.create_task(give_back_later())
    started = time.monotonic()
    await asyncio.wait_for(pool.close(grace=5), 10)
    elapsed = time.monotonic() - started
    await returner
    assert 0.15 < elapsed < 4  # waited for `busy`, not for the whole grace period
    assert busy.closed
    assert spare.closed
    stats = pool.stats()
    assert stats.closed_total == {"shutdown": 2}
    assert (stats.in_use, stats.idle, stats.pending, stats.opened_total) == (0, 0, 0, 2)
    with pytest.raises(PoolClosed):
        await pool.acquire(5)


async def test_close_fails_pending_acquirers_at_once(connect: ConnectFn) -> None:
    pool = ConnectionPool(connect, min_size=0, max_size=1, max_lifetime=LONG)
    held = await pool.acquire(5)
    waiter = asyncio.create_task(pool.acquire(30))
    await wait_until(lambda: pool.stats().pending == 1)
    closing = asyncio.create_task(pool.close(grace=30))
    started = time.monotonic()
    with pytest.raises(PoolClosed):
        await asyncio.wait_for(waiter, 5)
    assert time.monotonic() - started < 2
    assert not closing.done()  # still waiting for `held`
    pool.release(held)
    await asyncio.wait_for(closing, 5)
    assert held.closed
    stats = pool.stats()
    assert stats.closed_total == {"shutdown": 1}
    assert (stats.in_use, stats.idle, stats.pending, stats.acquire_timeouts_total) == (0, 0, 0, 0)


async def test_close_force_closes_a_connection_still_in_use_after_grace(
    connect: ConnectFn, sql: SQL
) -> None:
    pool = ConnectionPool(connect, min_size=0, max_size=2, max_lifetime=LONG)
    idle = await pool.acquire(5)
    busy = await pool.acquire(5)
    busy_id = await connection_id(busy)
    pool.release(idle)

    async def slow_query() -> None:
        try:
            await query(busy, "SELECT SLEEP(2)")
        except pymysql.err.OperationalError:
            pool.release(busy, discard="broken")
            raise
        pool.release(busy)

    straggler = asyncio.create_task(slow_query())
    await wait_until(lambda: running_sleep(sql, busy_id))
    started = time.monotonic()
    await pool.close(grace=0.2)
    assert time.monotonic() - started < 2
    assert busy.closed
    assert idle.closed
    # The straggler's query fails on the closed socket and it returns its connection late:
    # that must neither raise nor count twice.
    with pytest.raises(pymysql.err.OperationalError):
        await asyncio.wait_for(straggler, 5)
    stats = pool.stats()
    assert stats.closed_total == {"shutdown": 1, "shutdown_forced": 1}
    assert (stats.in_use, stats.idle, stats.opened_total) == (0, 0, 2)
    with pytest.raises(PoolClosed):
        await pool.acquire(5)


# -- minimum size -----------------------------------------------------------------------------


async def test_open_opens_min_size_connections(
    connect: ConnectFn, sql: SQL, make_pool: PoolFactory
) -> None:
    before = connections(sql)
    pool = make_pool(connect, min_size=3, max_size=4, max_lifetime=LONG)
    await pool.open()
    stats = pool.stats()
    assert (stats.idle, stats.in_use, stats.opened_total) == (3, 0, 3)
    assert connections(sql) - before == 3
    conns = [await pool.acquire(1) for _ in range(3)]
    assert len({await connection_id(c) for c in conns}) == 3
    assert pool.stats().opened_total == 3  # served from the idle ones
    for conn in conns:
        pool.release(conn)
    await pool.close(grace=1)
    assert pool.stats().closed_total == {"shutdown": 3}


async def test_open_with_min_size_zero_proves_credentials_then_closes(
    connect: ConnectFn, sql: SQL, make_pool: PoolFactory
) -> None:
    before = connections(sql)
    pool = make_pool(connect, min_size=0, max_size=4, max_lifetime=LONG)
    await pool.open()
    stats = pool.stats()
    assert stats.opened_total == 1
    assert stats.closed_total == {"below_min": 1}
    assert (stats.idle, stats.in_use) == (0, 0)
    assert connections(sql) - before == 1


async def test_open_raises_the_connect_error_and_keeps_nothing(
    make_settings: Callable[..., Settings], closed_port: int, make_pool: PoolFactory
) -> None:
    connect = Database(make_settings(DB_PORT=str(closed_port)))._connect
    pool = make_pool(connect, min_size=2, max_size=4, max_lifetime=LONG)
    with pytest.raises(pymysql.err.OperationalError):
        await pool.open()
    stats = pool.stats()
    assert (stats.idle, stats.in_use, stats.opened_total) == (0, 0, 0)
