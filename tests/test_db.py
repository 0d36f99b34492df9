"""Database against the real server: start-up errors that name what failed (and never the
password), fetch, the acquire and query time-outs, server errors, killed connections and the
one retry on a new connection, introspection and the server-side statement time limit."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import aiomysql
import asyncmy
import pytest
from structlog.testing import capture_logs

from devtools.mariadb import ServerAddress
from service.db import FETCH_CHUNK_ROWS, Database, QueryObserver
from service.errors import DatabaseQueryError, DatabaseUnavailable, StartupError
from service.metrics import Metrics
from service.settings import Settings

from .conftest import SQL, connection_id, query, wait_until
from .faults.proxy import FaultProxy, Mode

StartDB = Callable[..., Awaitable[Database]]

ACC_COLUMNS = ["id", "name", "status", "balance", "credit_limit", "created_at", "notes"]
USER_COLUMNS = [
    "id",
    "acc_id",
    "login",
    "full_name",
    "email",
    "role",
    "password_hash",
    "last_login",
    "birthday",
]


@pytest.fixture
async def start_db(make_settings: Callable[..., Settings]) -> AsyncIterator[StartDB]:
    """Starts a Database with the given variable overrides; closes every one at the end."""
    started: list[Database] = []

    async def start(*, observer: QueryObserver | None = None, **overrides: str) -> Database:
        db = Database(make_settings(**overrides), observer)
        started.append(db)
        await db.start()
        return db

    yield start
    for db in started:
        await db.close(grace=1)


@pytest.fixture
def scratch_table(sql: SQL) -> Iterator[str]:
    """A throw-away table in the test database, dropped at the end."""
    name = f"scratch_{uuid.uuid4().hex[:10]}"
    sql(f"CREATE TABLE {name} (id INT NOT NULL, label VARCHAR(20) NULL)")
    try:
        yield name
    finally:
        sql(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def limited_user(sql: SQL, db_name: str) -> Iterator[str]:
    """A user allowed only to SELECT from the test database, password 'right-password'."""
    user = f"cmapi_t_{uuid.uuid4().hex[:10]}"
    sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-password'")
    try:
        sql(f"GRANT SELECT ON `{db_name}`.* TO '{user}'@'%'")
        yield user
    finally:
        sql(f"DROP USER IF EXISTS '{user}'@'%'")


async def failed_start(db: Database) -> tuple[StartupError, float]:
    """Start `db`, which must fail; the error and the seconds it took."""
    started = time.monotonic()
    try:
        with pytest.raises(StartupError) as caught:
            await db.start()
    finally:
        await db.close(grace=1)
    return caught.value, time.monotonic() - started


def running(sql: SQL, conn_id: int, prefix: str) -> bool:
    """The server is executing a statement starting with `prefix` on connection `conn_id`."""
    rows = sql("SELECT INFO FROM information_schema.PROCESSLIST WHERE ID = %s", (conn_id,))
    return bool(rows) and str(rows[0][0] or "").startswith(prefix)


def sessions_running(sql: SQL, statement: str) -> set[int]:
    """Ids of the test database's sessions executing exactly `statement`."""
    rows = sql(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND INFO = %s",
        (statement,),
    )
    return {int(r[0]) for r in rows}


def retries(metrics: Metrics, resource: str = "other") -> dict[str, int]:
    """cmapi_db_query_retries_total of `resource`, by outcome (absent: 0)."""
    return {
        outcome: int(
            metrics.registry.get_sample_value(
                "cmapi_db_query_retries_total", {"resource": resource, "outcome": outcome}
            )
            or 0
        )
        for outcome in ("succeeded", "failed")
    }


def query_errors(metrics: Metrics, resource: str = "other") -> dict[str, int]:
    """cmapi_db_query_errors_total of `resource`, by kind, leaving out zeros."""
    found = {
        kind: metrics.registry.get_sample_value(
            "cmapi_db_query_errors_total", {"resource": resource, "kind": kind}
        )
        for kind in ("timeout", "connection", "server", "pool")
    }
    return {kind: int(n) for kind, n in found.items() if n}


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


# -- start-up -------------------------------------------------------------------------------


async def test_start_against_a_closed_port_retries_then_names_the_server(
    make_settings: Callable[..., Settings], closed_port: int, db_name: str
) -> None:
    db = Database(
        make_settings(
            DB_PORT=str(closed_port), DB_CONNECT_RETRIES="2", DB_CONNECT_RETRY_DELAY="0.1"
        )
    )
    error, elapsed = await failed_start(db)
    message = str(error)
    assert "after 3 attempt(s)" in message
    assert f"127.0.0.1:{closed_port}" in message
    assert repr(db_name) in message
    assert "2003" in message  # the driver's own code: cannot connect
    assert 0.2 <= elapsed < 5  # two 0.1 s pauses between three attempts, nothing more
    assert db.stats().opened_total == 0


async def test_start_with_a_wrong_password_fails_at_once_without_showing_it(
    make_settings: Callable[..., Settings], limited_user: str, db_name: str
) -> None:
    db = Database(
        make_settings(
            DB_USER=limited_user,
            DB_PASSWORD="wrong-pass-XYZ",
            DB_CONNECT_RETRIES="5",
            DB_CONNECT_RETRY_DELAY="3",
        )
    )
    error, elapsed = await failed_start(db)
    assert elapsed < 2  # a single retry would have paused 3 s
    message = str(error)
    assert "Access denied" in message
    assert "127.0.0.1:" in message
    assert repr(db_name) in message
    assert repr(limited_user) in message
    assert "wrong-pass-XYZ" not in message
    assert "wrong-pass-XYZ" not in repr(error)
    assert error.__cause__ is None


async def test_start_with_the_right_password_of_the_same_user_works(
    limited_user: str, start_db: StartDB
) -> None:
    db = await start_db(DB_USER=limited_user, DB_PASSWORD="right-password")
    assert await db.fetch("SELECT COUNT(*) FROM acc") == [(5,)]
    assert await db.fetch("SELECT CURRENT_USER()") == [(f"{limited_user}@%",)]


async def test_start_with_an_unknown_database_names_it(
    make_settings: Callable[..., Settings],
) -> None:
    missing = f"cmapi_no_such_db_{uuid.uuid4().hex[:10]}"
    db = Database(
        make_settings(DB_NAME=missing, DB_CONNECT_RETRIES="5", DB_CONNECT_RETRY_DELAY="3")
    )
    error, elapsed = await failed_start(db)
    assert elapsed < 2  # not retried: no retry creates a database
    assert repr(missing) in str(error)
    assert "Unknown database" in str(error)


# -- fetch ----------------------------------------------------------------------------------


async def test_fetch_returns_rows_with_one_select_each(start_db: StartDB, sql: SQL) -> None:
    db = await start_db(DB_POOL_MIN_SIZE="1")  # one connection, whose session counts SELECTs
    expected = sql("SELECT id, name FROM acc ORDER BY id")
    assert len(expected) == 5
    assert await db.fetch("SELECT id, name FROM acc ORDER BY id") == expected
    assert await db.fetch("SELECT name FROM acc WHERE id = %s", (3,)) == [("Château Verte SARL",)]

    async def selects() -> int:
        # This session's own count (SHOW is not a SELECT); other clients of the server cannot
        # blur it. The pool has one connection, asserted below.
        rows = await db.fetch("SHOW SESSION STATUS LIKE 'Com_select'")
        return int(rows[0][1])

    before = await selects()
    for _ in range(20):
        rows = await db.fetch("SELECT id FROM acc WHERE id > %s ORDER BY id", (2,))
        assert rows == [(3,), (4,), (5,)]
    assert await selects() - before == 20
    stats = db.stats()
    assert (stats.opened_total, stats.in_use, stats.idle, stats.closed_total) == (1, 0, 1, {})


async def test_an_error_while_consuming_rows_discards_the_connection(start_db: StartDB) -> None:
    db = await start_db()

    def consume(rows: list[tuple[Any, ...]]) -> None:
        raise ValueError("cannot encode")  # e.g. a value the encoder does not know

    with pytest.raises(ValueError, match="cannot encode"):
        await db.fetch_chunks("SELECT id FROM acc", (), consume)
    # Its result was not read to the end: the connection is closed, not reused.
    assert db.stats().closed_total == {"error": 1}
    assert await db.fetch("SELECT 1") == [(1,)]


async def test_fetch_reads_a_result_of_many_chunks_completely(start_db: StartDB) -> None:
    db = await start_db(DB_POOL_MIN_SIZE="1")
    count = FETCH_CHUNK_ROWS * 3 + 7  # not a multiple of the chunk size
    rows = await db.fetch(
        "WITH RECURSIVE s (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < %s) "
        "SELECT n, REPEAT('x', 100) FROM s ORDER BY n",
        (count,),
    )
    assert [r[0] for r in rows] == list(range(1, count + 1))
    assert all(r[1] == "x" * 100 for r in rows)
    # The connection was read to the end of the result: it is reused, not discarded.
    assert await db.fetch("SELECT 1") == [(1,)]
    assert (db.stats().opened_total, db.stats().closed_total) == (1, {})


async def test_fetch_when_the_server_is_unreachable_is_unavailable(
    make_settings: Callable[..., Settings], closed_port: int
) -> None:
    db = Database(make_settings(DB_PORT=str(closed_port), DB_ACQUIRE_TIMEOUT="5"))
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="cannot connect"):
            await db.fetch("SELECT 1")
        assert time.monotonic() - started < 2  # the connect error, not the 5 s time-out
        assert db.stats().connect_errors_total == 1
        status = db.health.status()
        assert not status.up
        assert status.message == "refused: nothing accepts connections at the database's address"
    finally:
        await db.close(grace=1)


@pytest.mark.parametrize("driver", [aiomysql.Connection, asyncmy.Connection])
async def test_a_socket_closed_during_the_handshake_is_a_lost_connection(
    start_db: StartDB, monkeypatch: pytest.MonkeyPatch, driver: type
) -> None:
    """An injected fault: both drivers raise uvloop's RuntimeError when the peer closed the
    socket before they set its options (seen under the cluster simulation, a proxy resetting
    what it accepted while the server restarts). That is an outage (503), not a bug (500)."""
    name = driver.__module__.split(".")[0]
    db = await start_db(DB_POOL_MIN_SIZE="0", DB_DRIVER=name)

    def socket_gone(self: Any) -> None:
        raise RuntimeError("Transport does not expose socket instance")

    with monkeypatch.context() as patched:
        patched.setattr(driver, "_set_keep_alive", socket_gone)
        with pytest.raises(DatabaseUnavailable, match="cannot connect"):
            await db.fetch("SELECT 1")
    assert db.health.status().message == "lost: the connection broke while it was being opened"
    assert db.stats().connect_errors_total == 1
    assert await db.fetch("SELECT 1") == [(1,)]
    assert db.health.status().up


async def test_fetch_after_close_is_unavailable(start_db: StartDB) -> None:
    db = await start_db()
    await db.close(grace=1)
    with pytest.raises(DatabaseUnavailable, match="shutting down"):
        await db.fetch("SELECT 1")


# -- time-outs ------------------------------------------------------------------------------


async def test_query_time_out_discards_the_connection(start_db: StartDB, sql: SQL) -> None:
    db = await start_db(DB_POOL_MIN_SIZE="1", DB_QUERY_TIMEOUT="0.3")
    sql("LOCK TABLES acc WRITE")  # the fetch below waits for this lock
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match=r"within 0\.3 s"):
            await db.fetch("SELECT * FROM acc")
        assert time.monotonic() - started < 2
        stats = db.stats()
        assert stats.closed_total == {"timeout": 1}
        assert (stats.in_use, stats.idle) == (0, 0)
    finally:
        sql("UNLOCK TABLES")
    assert len(await db.fetch("SELECT * FROM acc")) == 5
    stats = db.stats()
    assert stats.opened_total == 2  # a fresh connection, not the abandoned one
    assert stats.closed_total == {"timeout": 1}


async def test_query_time_out_bounds_each_wait_for_rows_not_the_whole_transfer(
    start_db: StartDB,
) -> None:
    """A result whose transfer outlasts DB_QUERY_TIMEOUT is read whole while rows keep coming;
    the consumer's sleep stands in for encoding a big table (8 chunks, 0.8 s in all)."""
    db = await start_db(DB_QUERY_TIMEOUT="0.3")
    chunks: list[int] = []

    def slow(chunk: list[Any]) -> None:
        chunks.append(len(chunk))
        time.sleep(0.1)

    started = time.monotonic()
    count = FETCH_CHUNK_ROWS * 8
    await db.fetch_chunks(f"SELECT seq FROM seq_1_to_{count}", (), slow)
    assert time.monotonic() - started > 0.6
    assert chunks == [FETCH_CHUNK_ROWS] * 8
    assert db.stats().closed_total == {}


async def test_acquire_time_out_when_the_pool_is_exhausted(start_db: StartDB) -> None:
    db = await start_db(DB_POOL_SIZE="1", DB_ACQUIRE_TIMEOUT="0.2")
    held = await db._pool.acquire(5)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match=r"within 0\.2 s") as caught:
            await db.fetch("SELECT 1")
        assert time.monotonic() - started < 2
        assert "no database connection free" in str(caught.value)
        assert db.stats().acquire_timeouts_total == 1
    finally:
        db._pool.release(held)
    assert await db.fetch("SELECT 1") == [(1,)]
    stats = db.stats()
    assert (stats.opened_total, stats.in_use, stats.closed_total) == (1, 0, {})


# -- errors ---------------------------------------------------------------------------------


async def test_server_error_is_a_query_error_without_sql(
    start_db: StartDB, sql: SQL, scratch_table: str
) -> None:
    db = await start_db(DB_POOL_MIN_SIZE="1")
    statement = f"SELECT id, label FROM {scratch_table}"
    assert await db.fetch(statement) == []
    sql(f"DROP TABLE {scratch_table}")
    with pytest.raises(DatabaseQueryError) as caught:
        await db.fetch(statement)
    assert not isinstance(caught.value, DatabaseUnavailable)
    message = str(caught.value)
    assert scratch_table not in message
    assert "SELECT" not in message.upper()
    stats = db.stats()
    assert stats.closed_total == {"error": 1}
    assert (stats.in_use, stats.idle) == (0, 0)
    assert len(await db.fetch("SELECT id FROM acc")) == 5


async def test_connection_killed_between_statements_is_retried_on_a_new_one(
    start_db: StartDB, sql: SQL
) -> None:
    metrics = Metrics()
    db = await start_db(observer=metrics, DB_POOL_SIZE="1")
    [(old_id,)] = await db.fetch("SELECT CONNECTION_ID()")
    # KILL from the synchronous fixture: the event loop does not run between the KILL and the
    # next fetch, so the pool cannot have read the EOF yet and hands out the dead connection.
    # Its query hits the closed socket before any row: it runs again on a new connection.
    sql(f"KILL {old_id}")
    with capture_logs() as logs:
        [(new_id,)] = await db.fetch("SELECT CONNECTION_ID()", resource="acc")
    assert new_id != old_id
    assert retries(metrics, "acc") == {"succeeded": 1, "failed": 0}
    assert query_errors(metrics, "acc") == {}
    assert db.health.status().up
    [retried] = events(logs, "query_retried")
    assert (retried["resource"], retried["outcome"]) == ("acc", "succeeded")
    assert "Lost connection" in retried["first_error"] or "Errno" in retried["first_error"]
    assert retried["log_level"] == "info"
    assert events(logs, "database_failing") == []  # not an outage
    # One more connection, in the slot of the broken one (the pool's maximum is 1), and it
    # serves the next statements.
    stats = db.stats()
    assert (stats.opened_total, stats.in_use, stats.idle, stats.opening) == (2, 0, 1, 0)
    assert stats.closed_total == {"broken": 1}
    assert await db.fetch("SELECT CONNECTION_ID()") == [(new_id,)]
    assert db.stats().opened_total == 2


async def test_connection_killed_while_idle_is_replaced_before_the_next_fetch(
    start_db: StartDB, sql: SQL
) -> None:
    db = await start_db(DB_POOL_SIZE="1")
    conn = await db._pool.acquire(5)
    old_id = await connection_id(conn)
    db._pool.release(conn)
    sql(f"KILL {old_id}")
    # Once the loop has read the server's EOF, the pool sees the connection is dead on acquire.
    await wait_until(conn.looks_dead)
    [(new_id,)] = await db.fetch("SELECT CONNECTION_ID()")  # no error reaches the caller
    assert new_id != old_id
    stats = db.stats()
    assert stats.closed_total == {"broken": 1}
    assert (stats.opened_total, stats.in_use, stats.idle) == (2, 0, 1)


async def test_connection_killed_during_a_query_before_its_rows_is_retried(
    start_db: StartDB, sql: SQL
) -> None:
    metrics = Metrics()
    db = await start_db(observer=metrics, DB_POOL_SIZE="1")
    [(old_id,)] = await db.fetch("SELECT CONNECTION_ID()")
    slow = asyncio.create_task(db.fetch("SELECT SLEEP(0.3), CONNECTION_ID()"))
    await wait_until(lambda: running(sql, old_id, "SELECT SLEEP"))
    sql(f"KILL {old_id}")
    # SLEEP answers 1 when interrupted: 0 is the retry's own, uninterrupted answer.
    [(interrupted, new_id)] = await asyncio.wait_for(slow, 5)
    assert (interrupted, new_id != old_id) == (0, True)
    assert retries(metrics) == {"succeeded": 1, "failed": 0}
    stats = db.stats()
    assert (stats.opened_total, stats.in_use, stats.closed_total) == (2, 0, {"broken": 1})


# -- what is never retried ------------------------------------------------------------------


async def test_connection_killed_after_rows_were_consumed_is_not_retried(
    start_db: StartDB, sql: SQL
) -> None:
    metrics = Metrics()
    db = await start_db(observer=metrics, DB_POOL_SIZE="1")
    [(conn_id,)] = await db.fetch("SELECT CONNECTION_ID()")
    chunks: list[int] = []

    def consume(chunk: list[Any]) -> None:
        chunks.append(len(chunk))
        if len(chunks) == 1:
            sql(f"KILL {conn_id}")  # the result (tens of MB) is still on its way

    count = 200_000
    with pytest.raises(DatabaseUnavailable, match="connection was lost"):
        await db.fetch_chunks(f"SELECT seq, REPEAT('x', 200) FROM seq_1_to_{count}", (), consume)
    assert chunks[0] == FETCH_CHUNK_ROWS
    assert sum(chunks) < count
    assert retries(metrics) == {"succeeded": 0, "failed": 0}
    assert query_errors(metrics) == {"connection": 1}
    stats = db.stats()
    assert (stats.opened_total, stats.in_use, stats.closed_total) == (1, 0, {"broken": 1})


async def test_a_time_out_is_not_retried(start_db: StartDB) -> None:
    metrics = Metrics()
    db = await start_db(observer=metrics, DB_POOL_SIZE="1", DB_QUERY_TIMEOUT="0.3")
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match=r"within 0\.3 s"):
        await db.fetch("SELECT SLEEP(2)")
    assert time.monotonic() - started < 1.5
    assert retries(metrics) == {"succeeded": 0, "failed": 0}
    assert query_errors(metrics) == {"timeout": 1}
    stats = db.stats()
    assert (stats.opened_total, stats.opening, stats.closed_total) == (1, 0, {"timeout": 1})


async def test_a_server_error_is_not_retried(start_db: StartDB) -> None:
    metrics = Metrics()
    db = await start_db(observer=metrics, DB_POOL_SIZE="1")
    with pytest.raises(DatabaseQueryError):
        await db.fetch("SELECT no_such_column FROM acc")
    assert retries(metrics) == {"succeeded": 0, "failed": 0}
    assert query_errors(metrics) == {"server": 1}
    stats = db.stats()
    assert (stats.opened_total, stats.opening, stats.closed_total) == (1, 0, {"error": 1})


async def test_no_retry_while_the_database_is_known_to_be_down(start_db: StartDB, sql: SQL) -> None:
    """The latest outcome was a failure (here a real time-out): a lost connection then fails
    its request at once, so that an outage does not cost the database two attempts each."""
    metrics = Metrics()
    db = await start_db(observer=metrics, DB_POOL_SIZE="1", DB_QUERY_TIMEOUT="0.3")
    with pytest.raises(DatabaseUnavailable, match="within"):
        await db.fetch("SELECT SLEEP(2)")
    assert not db.health.status().up
    # A connection that nothing has used since: no outcome reaches `health` in between.
    conn = await db._pool.acquire(5)
    conn_id = await connection_id(conn)
    db._pool.release(conn)
    sql(f"KILL {conn_id}")
    with pytest.raises(DatabaseUnavailable, match="connection was lost"):
        await db.fetch("SELECT 1")
    assert retries(metrics) == {"succeeded": 0, "failed": 0}
    assert query_errors(metrics) == {"timeout": 1, "connection": 1}
    stats = db.stats()
    assert (stats.opened_total, stats.opening) == (2, 0)
    assert stats.closed_total == {"timeout": 1, "broken": 1}
    assert await db.fetch("SELECT 1") == [(1,)]
    assert db.health.status().up


# -- a retry that fails ---------------------------------------------------------------------


async def test_a_retry_that_cannot_connect_fails_the_request_once(
    start_db: StartDB, sql: SQL, limited_user: str
) -> None:
    metrics = Metrics()
    db = await start_db(
        observer=metrics, DB_USER=limited_user, DB_PASSWORD="right-password", DB_POOL_SIZE="1"
    )
    [(conn_id,)] = await db.fetch("SELECT CONNECTION_ID()")
    # The open connection keeps working; a new one is refused (1045), as after a rotation of
    # the password that this replica has not picked up yet.
    sql(f"ALTER USER '{limited_user}'@'%' IDENTIFIED BY 'another-password'")
    sql(f"KILL {conn_id}")
    with capture_logs() as logs, pytest.raises(DatabaseUnavailable, match="cannot connect"):
        await db.fetch("SELECT 1", resource="acc")
    assert retries(metrics, "acc") == {"succeeded": 0, "failed": 1}
    assert query_errors(metrics, "acc") == {"connection": 1}  # one per failed request
    status = db.health.status()
    assert not status.up
    assert status.message == "rejected: the server refused the connection (1045)"
    [retried] = events(logs, "query_retried")
    assert (retried["outcome"], retried["log_level"]) == ("failed", "warning")
    assert len(events(logs, "database_failing")) == 1
    stats = db.stats()
    assert (stats.opened_total, stats.connect_errors_total) == (1, 1)
    assert (stats.in_use, stats.idle, stats.opening, stats.closed_total) == (0, 0, 0, {"broken": 1})


async def test_a_connection_lost_twice_is_retried_once(start_db: StartDB, sql: SQL) -> None:
    metrics = Metrics()
    db = await start_db(observer=metrics, DB_POOL_SIZE="1")
    [(first_id,)] = await db.fetch("SELECT CONNECTION_ID()")
    statement = "SELECT id FROM acc"
    sql("LOCK TABLES acc WRITE")  # both attempts wait for it, each on its connection
    try:
        held = asyncio.create_task(db.fetch(statement))
        await wait_until(lambda: sessions_running(sql, statement) == {first_id})
        sql(f"KILL {first_id}")
        await wait_until(lambda: len(sessions_running(sql, statement) - {first_id}) == 1)
        [second_id] = sessions_running(sql, statement) - {first_id}
        sql(f"KILL {second_id}")
        with pytest.raises(DatabaseUnavailable, match="connection was lost"):
            await asyncio.wait_for(held, 5)
    finally:
        sql("UNLOCK TABLES")
    assert retries(metrics) == {"succeeded": 0, "failed": 1}
    assert query_errors(metrics) == {"connection": 1}
    stats = db.stats()
    assert (stats.opened_total, stats.in_use, stats.closed_total) == (2, 0, {"broken": 2})


async def test_a_retry_gets_only_what_is_left_of_the_query_time_out(
    start_db: StartDB, sql: SQL
) -> None:
    """A statement whose first row comes 0.1 s after it is sent and its tenth (the end of the
    first chunk) 0.9 s later, with DB_QUERY_TIMEOUT 1.2: alone it answers. Killed 0.6 s in,
    before any row was handed on, its retry would need 1 s more, and the deadline set when the
    first attempt began waiting for rows leaves 0.6 s (a budget of its own would let it
    succeed: 1.2 s for its first chunk)."""
    metrics = Metrics()
    db = await start_db(observer=metrics, DB_POOL_SIZE="1", DB_QUERY_TIMEOUT="1.2")
    statement = "SELECT seq, REPEAT('x', 20000), SLEEP(0.1) FROM seq_1_to_10"
    assert len(await db.fetch(statement)) == 10
    [(conn_id,)] = await db.fetch("SELECT CONNECTION_ID()")
    started = time.monotonic()
    slow = asyncio.create_task(db.fetch(statement))
    await wait_until(lambda: running(sql, conn_id, "SELECT seq"))
    await asyncio.sleep(0.6 - (time.monotonic() - started))
    sql(f"KILL {conn_id}")
    with pytest.raises(DatabaseUnavailable, match=r"within 1\.2 s"):
        await asyncio.wait_for(slow, 5)
    assert time.monotonic() - started < 1.3 + 0.5
    assert retries(metrics) == {"succeeded": 0, "failed": 1}
    assert query_errors(metrics) == {"timeout": 1}
    stats = db.stats()
    assert (stats.opened_total, stats.in_use) == (2, 0)
    assert stats.closed_total == {"broken": 1, "timeout": 1}


@contextlib.asynccontextmanager
async def _reset_then_slowed(
    start_db: StartDB, db_server: ServerAddress, query_timeout: str
) -> AsyncIterator[tuple[FaultProxy, Database, Metrics]]:
    """Behind the fault proxy, a pool of one connection that is reset, after which every byte
    is delayed 300 ms: the next query's retry gets a slow handshake."""
    with FaultProxy(db_server.host, db_server.port) as proxy:
        metrics = Metrics()
        db = await start_db(
            observer=metrics,
            DB_PORT=str(proxy.port),
            DB_POOL_SIZE="1",
            DB_QUERY_TIMEOUT=query_timeout,
            DB_CONNECTION_TIMEOUT="10",
        )
        assert await db.fetch("SELECT 1") == [(1,)]
        assert proxy.set_mode(Mode.RESET) == 1
        proxy.set_mode(Mode.DELAY, delay_ms=300)
        yield proxy, db, metrics


async def test_a_retry_connection_too_slow_for_the_time_out_joins_the_pool(
    start_db: StartDB, db_server: ServerAddress
) -> None:
    """The retry's handshake outlasts what is left of DB_QUERY_TIMEOUT. The request fails with
    the time-out; the connection, opened later, is kept by the pool, not leaked."""
    async with _reset_then_slowed(start_db, db_server, "0.5") as (proxy, db, metrics):
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match=r"within 0\.5 s"):
            await db.fetch("SELECT 1")
        assert time.monotonic() - started < 1.2
        assert retries(metrics) == {"succeeded": 0, "failed": 1}
        stats = db.stats()
        assert (stats.in_use, stats.idle, stats.opening) == (0, 0, 1)  # still being opened
        await wait_until(lambda: db.stats().idle == 1, within=10)
        stats = db.stats()
        assert (stats.opened_total, stats.in_use, stats.opening) == (2, 0, 0)
        assert stats.closed_total == {"broken": 1}
        proxy.set_mode(Mode.PASS)
        assert await db.fetch("SELECT 1") == [(1,)]
        assert db.stats().opened_total == 2  # the late connection serves it
        await db.close(grace=1)
        await wait_until(lambda: proxy.open_connections() == 0)  # the proxy's thread sees it


async def test_closing_while_a_retry_connects_answers_shutting_down(
    start_db: StartDB, db_server: ServerAddress
) -> None:
    """With time to spare, the database is closed while the retry's connection is still being
    opened. The request is told the service is shutting down, and the half-open connection
    is closed with the pool."""
    async with _reset_then_slowed(start_db, db_server, "10") as (proxy, db, metrics):
        request = asyncio.create_task(db.fetch("SELECT 1"))
        await wait_until(lambda: db.stats().opening == 1)
        await db.close(grace=1)
        with pytest.raises(DatabaseUnavailable, match="shutting down"):
            await asyncio.wait_for(request, 5)
        assert retries(metrics) == {"succeeded": 0, "failed": 1}
        stats = db.stats()
        assert (stats.in_use, stats.idle, stats.opening, stats.opened_total) == (0, 0, 0, 1)
        await wait_until(lambda: proxy.open_connections() == 0)


# -- introspection and the server-side limit ------------------------------------------------


async def test_introspect_reads_columns_in_order_and_the_primary_key(
    start_db: StartDB, sql: SQL, scratch_table: str
) -> None:
    db = await start_db()
    tables = await db.introspect(["acc", "user", "no_such_table", scratch_table])
    assert sorted(tables) == sorted(["acc", "user", scratch_table])
    for name, expected in (("acc", ACC_COLUMNS), ("user", USER_COLUMNS)):
        info = tables[name]
        assert info.name == name
        assert [c.name for c in info.columns] == expected
        in_server = sql(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (name,),
        )
        assert [c.name for c in info.columns] == [r[0] for r in in_server]
        assert info.primary_key == ("id",)
    acc = {c.name: c for c in tables["acc"].columns}
    assert (acc["balance"].data_type, acc["balance"].column_type) == ("decimal", "decimal(18,4)")
    assert (acc["name"].data_type, acc["name"].max_length) == ("varchar", 100)
    assert acc["id"].max_length is None
    assert (acc["name"].charset, acc["id"].charset) == ("utf8mb4", None)
    # The columns an index starts with (config/schema.sql), primary key included.
    assert tables["acc"].indexed == {"id", "status"}
    assert tables["user"].indexed == {"id", "login", "acc_id"}
    assert tables[scratch_table].primary_key == ()  # a table without one says so
    assert tables[scratch_table].indexed == frozenset()


async def test_pooled_connections_carry_the_statement_time_guard(start_db: StartDB) -> None:
    db = await start_db(
        DB_MAX_STATEMENT_SECONDS="40",
        DB_QUERY_TIMEOUT="2.5",
        DB_POOL_SIZE="2",
        DB_POOL_MIN_SIZE="2",
    )
    conns = [await db._pool.acquire(5), await db._pool.acquire(5)]
    try:
        for conn in conns:
            [(limit,)] = await query(conn, "SELECT @@max_statement_time")
            assert float(limit) == 40
    finally:
        for conn in conns:
            db._pool.release(conn)
    assert db.stats().opened_total == 2


async def test_statement_stopped_by_the_server_is_unavailable(start_db: StartDB) -> None:
    """The server-side limit (DB_MAX_STATEMENT_SECONDS, above DB_QUERY_TIMEOUT) is lowered on
    the pooled connection to make the server itself stop a long statement."""
    db = await start_db(DB_POOL_SIZE="1")
    conn = await db._pool.acquire(5)
    await query(conn, "SET SESSION max_statement_time = 0.1")
    db._pool.release(conn)
    with pytest.raises(DatabaseUnavailable, match="stopped the query"):
        await db.fetch(
            "SELECT COUNT(*) FROM information_schema.COLUMNS a, information_schema.COLUMNS b,"
            " information_schema.COLUMNS c"
        )
    assert db.stats().closed_total == {"timeout": 1}
    assert await db.fetch("SELECT 1") == [(1,)]
