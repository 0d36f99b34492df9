"""The database: connection pool life cycle, start-up schema introspection, and time-bounded
queries whose failures become `DatabaseUnavailable` (retry later) or `DatabaseQueryError`.

No HTTP here. SQL text comes only from `resources.py`, values are always bound parameters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiomysql
import pymysql
import structlog

from .errors import DatabaseQueryError, DatabaseUnavailable, StartupError
from .pool import AcquireTimeout, ConnectionPool, PoolClosed, PoolStats, looks_dead
from .settings import Settings

log = structlog.get_logger(__name__)

# Start-up errors that no retry will fix: wrong credentials, no such database.
_FATAL_CONNECT_ERRORS: Final = frozenset({1044, 1045, 1049, 1698})
# Errors that mean the connection (not the statement) failed: MySQL client errors (2xxx) and the
# server ending the session (shutdown 1053, killed 1927, too many connections 1040).
_SERVER_GONE_ERRORS: Final = frozenset({1040, 1053, 1077, 1152, 1153, 1156, 1927})
# The server stopped the statement itself: interrupted (1317), MariaDB max_statement_time
# (1969), MySQL max_execution_time (3024). A time-out like ours, so also worth a retry.
_SERVER_TIMEOUT_ERRORS: Final = frozenset({1317, 1969, 3024})
# Rows are decoded in pure Python (~10 us each). A result is read in chunks, yielding to the event
# loop between them: small chunks when other requests should not wait behind the decoding (a
# background refresh: bench/ polling p99 went from 13-29 ms to 6.4 ms with 64 rows), large ones
# when requests are waiting for this very result (a cold miss finishes sooner).
FETCH_CHUNK_ROWS: Final = 64
FETCH_CHUNK_ROWS_URGENT: Final = 256


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    data_type: str  # information_schema DATA_TYPE, lower case: int, varchar, decimal, ...
    # Full type as declared: "int(10) unsigned", "decimal(18,4)", "enum('Active','Closed')";
    # not lower-cased, so ENUM and SET members keep the spelling the rows come back with.
    column_type: str
    max_length: int | None  # characters, for character types
    nullable: bool = True  # information_schema IS_NULLABLE; unknown means it may be null


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: tuple[ColumnInfo, ...]
    primary_key: tuple[str, ...]


def quote_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class QueryObserver(Protocol):
    """Told how long acquires and statements take and how statements fail (metrics.Metrics)."""

    def acquired(self, seconds: float) -> None: ...

    def query_done(self, resource: str, seconds: float) -> None: ...

    def query_failed(self, resource: str, kind: str) -> None: ...


class _Unobserved:
    def acquired(self, seconds: float) -> None:
        pass

    def query_done(self, resource: str, seconds: float) -> None:
        pass

    def query_failed(self, resource: str, kind: str) -> None:
        pass


@dataclass
class _Incident:
    kind: str
    since: float
    failures: int = 1


class Database:
    def __init__(self, settings: Settings, observer: QueryObserver | None = None) -> None:
        self._settings = settings
        self._observer: QueryObserver = _Unobserved() if observer is None else observer
        # The failure being lived through: logged when it starts, changes kind and ends, so an
        # outage under load is a few lines, not one per request.
        self._incident: _Incident | None = None
        self._pool = ConnectionPool(
            self._connect,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_size,
            max_lifetime=settings.db_pool_recycle_seconds,
        )

    @property
    def where(self) -> str:
        """host:port/database as user, for messages (never the password)."""
        s = self._settings
        return f"MySQL at {s.db_host}:{s.db_port}, database {s.db_name!r}, user {s.db_user!r}"

    async def _connect(self) -> Any:
        s = self._settings
        conn = aiomysql.Connection(
            host=s.db_host,
            port=s.db_port,
            user=s.db_user,
            password=s.db_password.reveal(),
            db=s.db_name,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=s.db_connection_timeout,
            program_name="cm-api",
        )
        try:
            # aiomysql bounds only the TCP connect; a peer that accepts and then says nothing
            # would hang the handshake forever. The private `_connect` (what aiomysql.connect
            # awaits) lets us close the half-open socket when the deadline cancels it.
            async with asyncio.timeout(s.db_connection_timeout):
                await conn._connect()
                await self._limit_statement_time(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _limit_statement_time(self, conn: Any) -> None:
        """Let the server itself stop a runaway SELECT shortly after the client gave up on it,
        instead of burning CPU for a client that is gone."""
        limit = self._settings.db_query_timeout + 1
        async with conn.cursor() as cur:
            if "mariadb" in conn.get_server_info().lower():
                await cur.execute("SET SESSION max_statement_time = %s", (limit,))
            else:
                await cur.execute("SET SESSION max_execution_time = %s", (int(limit * 1000),))

    async def start(self) -> None:
        """Open the pool, retrying as configured; raise StartupError with a clear message."""
        s = self._settings
        attempts = s.db_connect_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                await self._pool.open()
            except (pymysql.err.MySQLError, OSError, TimeoutError) as exc:
                code = _error_code(exc)
                detail = _describe(exc)
                if isinstance(exc, TimeoutError) and not str(exc):
                    # Our own deadline on the handshake (_connect), which carries no text: a
                    # bare "TimeoutError" would not tell the operator what did not answer.
                    limit = s.db_connection_timeout
                    detail = f"no answer within DB_CONNECTION_TIMEOUT ({limit:g} s)"
                if code in _FATAL_CONNECT_ERRORS:
                    raise StartupError(f"cannot use {self.where}: {detail}") from None
                if attempt == attempts:
                    raise StartupError(
                        f"cannot connect to {self.where} after {attempts} attempt(s): {detail}"
                    ) from None
                log.warning(
                    "database_connect_failed",
                    attempt=attempt,
                    attempts=attempts,
                    retry_in_s=s.db_connect_retry_delay,
                    error=detail,
                )
                await asyncio.sleep(s.db_connect_retry_delay)
            else:
                return

    async def close(self, grace: float = 10.0) -> None:
        await self._pool.close(grace)

    def stats(self) -> PoolStats:
        return self._pool.stats()

    async def introspect(self, tables: Sequence[str]) -> dict[str, TableInfo]:
        """Columns and primary key of each named table that exists in the configured database."""
        placeholders = ", ".join(["%s"] * len(tables))
        columns = await self.fetch(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_MAXIMUM_LENGTH,"
            " IS_NULLABLE"
            " FROM information_schema.COLUMNS"
            f" WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ({placeholders})"
            " ORDER BY TABLE_NAME, ORDINAL_POSITION",
            tables,
        )
        keys = await self.fetch(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS"
            f" WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ({placeholders})"
            " AND INDEX_NAME = 'PRIMARY' ORDER BY TABLE_NAME, SEQ_IN_INDEX",
            tables,
        )
        found: dict[str, list[ColumnInfo]] = {}
        for table, name, data_type, column_type, max_length, nullable in columns:
            found.setdefault(_text(table), []).append(
                ColumnInfo(
                    name=_text(name),
                    data_type=_text(data_type).lower(),
                    column_type=_text(column_type),
                    max_length=None if max_length is None else int(max_length),
                    nullable=_text(nullable).upper() != "NO",
                )
            )
        primary: dict[str, list[str]] = {}
        for table, name in keys:
            primary.setdefault(_text(table), []).append(_text(name))
        return {
            table: TableInfo(table, tuple(cols), tuple(primary.get(table, ())))
            for table, cols in found.items()
        }

    async def fetch(
        self, sql: str, args: Sequence[object] = (), *, resource: str = "other"
    ) -> list[tuple[Any, ...]]:
        """All rows of one statement (see fetch_chunks)."""
        rows: list[tuple[Any, ...]] = []
        await self.fetch_chunks(sql, args, rows.extend, resource=resource)
        return rows

    async def fetch_chunks(
        self,
        sql: str,
        args: Sequence[object],
        consume: Callable[[list[tuple[Any, ...]]], None],
        *,
        urgent: bool = False,
        resource: str = "other",
    ) -> None:
        """Run one statement on a pooled connection, bounded by the acquire and query time-outs,
        handing its rows to `consume` in chunks (FETCH_CHUNK_ROWS, or FETCH_CHUNK_ROWS_URGENT when
        requests wait for this result). `resource` labels its metrics.

        A connection whose statement did not finish cleanly (time-out, cancellation, protocol
        or server error, an error raised by `consume`) is closed, never returned to the pool in
        an unknown state.
        """
        s = self._settings
        started = time.perf_counter()
        try:
            conn = await self._pool.acquire(s.db_acquire_timeout)
        except AcquireTimeout as exc:
            self._failed(resource, "pool", str(exc))
            raise DatabaseUnavailable(str(exc)) from None
        except PoolClosed:
            raise DatabaseUnavailable("the service is shutting down") from None
        except (pymysql.err.MySQLError, OSError) as exc:
            self._failed(resource, "connection", _describe(exc))
            raise DatabaseUnavailable("cannot connect to the database") from None
        sent = time.perf_counter()
        self._observer.acquired(sent - started)
        discard: str | None = "cancelled"
        try:
            async with asyncio.timeout(s.db_query_timeout):
                async with conn.cursor(aiomysql.SSCursor) as cur:
                    await cur.execute(sql, tuple(args))
                    size = FETCH_CHUNK_ROWS_URGENT if urgent else FETCH_CHUNK_ROWS
                    while chunk := await cur.fetchmany(size):
                        consume(chunk)
                        await asyncio.sleep(0)
            discard = None
        except TimeoutError:
            discard = "timeout"
            message = f"the database did not answer within {s.db_query_timeout:g} s"
            self._failed(resource, "timeout", message)
            raise DatabaseUnavailable(message) from None
        except (pymysql.err.MySQLError, OSError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and not looks_dead(conn):
                discard = "error"  # not the connection's doing: a bug, answered with 500
                raise
            discard, kind, error = _classify(exc)
            self._failed(resource, kind, _describe(exc))
            raise error from None
        except Exception:
            discard = "error"
            raise
        finally:
            self._pool.release(conn, discard=discard)
        self._observer.query_done(resource, time.perf_counter() - sent)
        if self._incident is not None:
            self._recovered()

    async def ping(self) -> float:
        """One COM_PING on a pooled connection, bounded by the acquire and query time-outs;
        the seconds it took. For readiness: not counted as a query and not an incident (the
        caller reports its failures). Raises DatabaseUnavailable with a `detail` for the log."""
        s = self._settings
        try:
            conn = await self._pool.acquire(s.db_acquire_timeout)
        except AcquireTimeout as exc:
            raise DatabaseUnavailable("the connection pool is exhausted", detail=str(exc)) from None
        except PoolClosed:
            raise DatabaseUnavailable("the service is shutting down") from None
        except (pymysql.err.MySQLError, OSError) as exc:
            raise DatabaseUnavailable(
                "cannot connect to the database", detail=_describe(exc)
            ) from None
        started = time.perf_counter()
        discard: str | None = "cancelled"
        try:
            async with asyncio.timeout(s.db_query_timeout):
                await conn.ping(reconnect=False)
            discard = None
        except TimeoutError:
            discard = "timeout"
            raise DatabaseUnavailable(
                f"the database did not answer a ping within {s.db_query_timeout:g} s"
            ) from None
        except (pymysql.err.MySQLError, OSError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and not looks_dead(conn):
                discard = "error"
                raise
            discard = "broken"
            raise DatabaseUnavailable(
                "the database connection was lost", detail=_describe(exc)
            ) from None
        finally:
            self._pool.release(conn, discard=discard)
        return time.perf_counter() - started

    def _failed(self, resource: str, kind: str, reason: str) -> None:
        """Count a failed statement; log it when an incident starts or changes kind. `reason`
        never holds the password (the driver's messages do not contain it)."""
        self._observer.query_failed(resource, kind)
        incident = self._incident
        if incident is not None and incident.kind == kind:
            incident.failures += 1
        else:
            log_failure = log.error if kind == "server" else log.warning
            log_failure(
                "database_failing",
                kind=kind,
                reason=reason,
                resource=resource,
                where=self.where,
                previous_kind=None if incident is None else incident.kind,
            )
            self._incident = _Incident(kind, time.monotonic())

    def _recovered(self) -> None:
        incident = self._incident
        assert incident is not None
        self._incident = None
        log.info(
            "database_recovered",
            kind=incident.kind,
            failures=incident.failures,
            lasted_s=round(time.monotonic() - incident.since, 3),
        )


def _classify(exc: BaseException) -> tuple[str, str, Exception]:
    """(why the connection is discarded, error kind for metrics, error to raise) for a driver
    error raised by a statement."""
    code = _error_code(exc)
    if code in _SERVER_TIMEOUT_ERRORS:
        return (
            "timeout",
            "timeout",
            DatabaseUnavailable("the database stopped the query (time limit)"),
        )
    # RuntimeError: uvloop's answer to a write on a transport the server has just closed
    # (callers pass it only when the connection looks dead).
    lost = isinstance(
        exc, pymysql.err.InterfaceError | pymysql.err.OperationalError | OSError | RuntimeError
    )
    if lost and (code is None or code >= 2000 or code in _SERVER_GONE_ERRORS):
        return "broken", "connection", DatabaseUnavailable("the database connection was lost")
    return "error", "server", DatabaseQueryError("the database rejected the query")


def _error_code(exc: BaseException) -> int | None:
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def _describe(exc: BaseException) -> str:
    """One line for logs and start-up messages: the driver's code and text (it never holds the
    password), or the exception type for errors without text."""
    if isinstance(exc, pymysql.err.MySQLError) and len(exc.args) >= 2:
        detail = f"({exc.args[0]}) {exc.args[1]}"
        cause = exc.__cause__
        if cause is not None and str(cause):
            detail += f" [{type(cause).__name__}: {cause}]"
        return detail
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _text(value: object) -> str:
    # information_schema returns bytes for some columns on some server versions.
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)
