"""The database: connection pool life cycle, start-up schema introspection, and time-bounded
queries whose failures become `DatabaseUnavailable` (retry later) or `DatabaseQueryError`.

No HTTP here. SQL text comes only from `resources.py`, values are always bound parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import pymysql
import structlog

from .dbhealth import DatabaseHealth
from .drivers import Connection, ConnectParams, Row, driver
from .errors import DatabaseQueryError, DatabaseUnavailable, StartupError
from .pool import AcquireTimeout, ConnectionPool, PoolClosed, PoolStats
from .schema import ColumnInfo, TableInfo
from .settings import Settings
from .timezones import SESSION_TIME_ZONE, datetime_zone
from .tls import handshake_failure

log = structlog.get_logger(__name__)

# Start-up errors that no retry will fix: wrong credentials, no such database.
_FATAL_CONNECT_ERRORS: Final = frozenset({1044, 1045, 1049, 1698})
# MySQL's client-side error codes; the server's own are below and above (1045 access denied,
# MariaDB's 4151 account locked).
_CLIENT_ERRORS: Final = range(2000, 3000)
_UNREACHABLE_ERRNOS: Final = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH})
# Errors that mean the connection (not the statement) failed: MySQL client errors (2xxx) and the
# server ending the session (shutdown 1053, killed 1927, too many connections 1040).
_SERVER_GONE_ERRORS: Final = frozenset({1040, 1053, 1077, 1152, 1153, 1156, 1927})
# The server stopped the statement itself: interrupted (1317), MariaDB max_statement_time
# (1969), MySQL max_execution_time (3024). A time-out like ours, so also worth a retry.
_SERVER_TIMEOUT_ERRORS: Final = frozenset({1317, 1969, 3024})
# A result is read in chunks, yielding to the event loop between them: small enough that other
# requests do not wait long behind one, large enough that the per-chunk cost stays small
# (bench/README.md).
FETCH_CHUNK_ROWS: Final = 256


class QueryObserver(Protocol):
    """Told how long acquires and statements take and how statements fail (metrics.Metrics)."""

    def acquired(self, seconds: float) -> None: ...

    def query_done(self, resource: str, seconds: float) -> None: ...

    def query_failed(self, resource: str, kind: str) -> None: ...

    def connection_opened(self, tls_version: str) -> None: ...

    def query_retried(self, resource: str, outcome: str) -> None: ...


class _Unobserved:
    def acquired(self, seconds: float) -> None:
        pass

    def query_done(self, resource: str, seconds: float) -> None:
        pass

    def query_failed(self, resource: str, kind: str) -> None:
        pass

    def connection_opened(self, tls_version: str) -> None:
        pass

    def query_retried(self, resource: str, outcome: str) -> None:
        pass


class _Wait:
    """A statement's deadline, restarted each time it waits for the database again."""

    def __init__(self, deadline: asyncio.Timeout, seconds: float) -> None:
        self._deadline = deadline
        self._seconds = seconds
        self._keep = False

    def restart(self) -> None:
        if self._keep:
            self._keep = False
            return
        self._deadline.reschedule(asyncio.get_running_loop().time() + self._seconds)

    def keep(self) -> None:
        """The next restart keeps the current deadline: a retry's connection, statement and
        first rows share what the first attempt left, they get no budget of their own."""
        self._keep = True


@dataclass(frozen=True, slots=True)
class _Retry:
    first_error: str  # what broke the first attempt's connection (the driver's words)
    started: float  # perf_counter() when the retry began


@dataclass(slots=True, eq=False)
class _Statement:
    """One statement's connection and deadline, and how far it got (see `_statement`)."""

    conn: Connection
    wait: _Wait
    held: bool = True  # False while `conn` is gone and its replacement not yet open
    handed: bool = False  # some rows reached the caller's `consume`
    retry: _Retry | None = None


class _ConnectFailed(Exception):
    """Opening the connection for a retry failed with `error`."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class Database:
    def __init__(self, settings: Settings, observer: QueryObserver | None = None) -> None:
        self._settings = settings
        self._observer: QueryObserver = _Unobserved() if observer is None else observer
        # Told every outcome: what /readyz?verbose and cmapi_db_up say, and the incident log.
        self.health = DatabaseHealth(self.where)
        self._driver = driver(settings.db_driver)
        self._tls = settings.tls()
        self._datetime_zone = datetime_zone(settings.db_datetime_zone)
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

    async def _connect(self) -> Connection:
        s = self._settings
        params = ConnectParams(
            host=s.db_host,
            port=s.db_port,
            user=s.db_user,
            password=s.db_password.reveal(),
            database=s.db_name,
            connect_timeout=s.db_connection_timeout,
            tls=self._tls,
            datetime_zone=self._datetime_zone,
        )
        conn = await self._driver.connect(params)
        try:
            async with asyncio.timeout(s.db_connection_timeout):
                await self._set_up_session(conn)
        except BaseException:
            conn.close()
            raise
        self._tell_encryption(conn.encryption())
        return conn

    def _tell_encryption(self, encryption: tuple[str, str] | None) -> None:
        """What a new connection's TLS is, for /readyz?verbose, the log and the metrics."""
        mode = self._tls.mode
        if encryption is not None:
            version, cipher = encryption
            self.health.encrypted(f"{version} {cipher} (DB_SSL_MODE={mode})", as_configured=True)
            self._observer.connection_opened(version)
            return
        if mode == "disabled":
            self.health.encrypted("none (DB_SSL_MODE=disabled)", as_configured=True)
        else:
            why = "the server offers no TLS"
            self.health.encrypted(f"none (DB_SSL_MODE={mode}: {why})", as_configured=False)
        self._observer.connection_opened("none")

    async def _set_up_session(self, conn: Connection) -> None:
        """One SET for the session, so no more round trips per connection: time_zone UTC, so
        that TIMESTAMP values arrive in UTC whatever the server's zone (timezones.py); and a
        limit that lets the server itself stop a runaway SELECT that the service gave up on,
        instead of burning CPU for a client that is gone (DB_MAX_STATEMENT_SECONDS)."""
        assignments = [f"time_zone = '{SESSION_TIME_ZONE}'"]
        args: list[object] = []
        limit = self._settings.db_max_statement_seconds
        if limit and "mariadb" in conn.server_info().lower():
            assignments.append("max_statement_time = %s")
            args.append(limit)
        elif limit:
            assignments.append("max_execution_time = %s")
            args.append(int(limit * 1000))
        await conn.execute(f"SET SESSION {', '.join(assignments)}", args)

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
                tls_failure = handshake_failure(exc)
                if tls_failure is not None:  # a certificate or a server no retry will change
                    raise StartupError(f"cannot use {self.where}: {tls_failure}") from None
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
                self.health.succeeded("reached at start-up")
                return

    async def close(self, grace: float = 10.0) -> None:
        await self._pool.close(grace)

    def stats(self) -> PoolStats:
        return self._pool.stats()

    async def introspect(self, tables: Sequence[str]) -> dict[str, TableInfo]:
        """Columns, primary key and index-leading columns of each named table that exists in
        the configured database: two statements, whatever the number of tables."""
        placeholders = ", ".join(["%s"] * len(tables))
        columns = await self.fetch(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_MAXIMUM_LENGTH,"
            " IS_NULLABLE, CHARACTER_SET_NAME"
            " FROM information_schema.COLUMNS"
            f" WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ({placeholders})"
            " ORDER BY TABLE_NAME, ORDINAL_POSITION",
            tables,
        )
        # The primary key's columns in order, and the first column of every other index that
        # can look a value up (a FULLTEXT or SPATIAL one cannot).
        keys = await self.fetch(
            "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME, SEQ_IN_INDEX"
            " FROM information_schema.STATISTICS"
            f" WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ({placeholders})"
            " AND (INDEX_NAME = 'PRIMARY'"
            " OR (SEQ_IN_INDEX = 1 AND INDEX_TYPE NOT IN ('FULLTEXT', 'SPATIAL')))"
            " ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
            tables,
        )
        found: dict[str, list[ColumnInfo]] = {}
        for table, name, data_type, column_type, max_length, nullable, charset in columns:
            found.setdefault(_text(table), []).append(
                ColumnInfo(
                    name=_text(name),
                    data_type=_text(data_type).lower(),
                    column_type=_text(column_type),
                    max_length=None if max_length is None else int(max_length),
                    nullable=_text(nullable).upper() != "NO",
                    charset=None if charset is None else _text(charset).lower(),
                )
            )
        primary: dict[str, list[str]] = {}
        indexed: dict[str, set[str]] = {}
        for table, index, name, seq in keys:
            if _text(index) == "PRIMARY":
                primary.setdefault(_text(table), []).append(_text(name))
            if int(seq) == 1:
                indexed.setdefault(_text(table), set()).add(_text(name))
        return {
            table: TableInfo(
                table,
                tuple(cols),
                tuple(primary.get(table, ())),
                frozenset(indexed.get(table, ())),
            )
            for table, cols in found.items()
        }

    async def fetch(
        self, sql: str, args: Sequence[object] = (), *, resource: str = "other"
    ) -> list[Row]:
        """All rows of one statement (see fetch_chunks)."""
        rows: list[Row] = []
        await self.fetch_chunks(sql, args, rows.extend, resource=resource)
        return rows

    async def fetch_chunks(
        self,
        sql: str,
        args: Sequence[object],
        consume: Callable[[list[Row]], None],
        *,
        resource: str = "other",
    ) -> None:
        """Run one statement, handing its rows to `consume` in chunks of FETCH_CHUNK_ROWS.
        `resource` labels its metrics. Bounded and cleaned up as `_statement` says;
        DB_QUERY_TIMEOUT bounds each wait for rows, so a big table takes as long as its
        transfer needs. Run once more on a new connection when its own broke before any row
        was handed on (`_may_retry`)."""
        async with self._statement(resource) as statement:
            sent = time.perf_counter()
            try:
                await _read(statement, sql, args, consume)
            except (pymysql.err.MySQLError, OSError, RuntimeError) as exc:
                if not self._may_retry(statement, exc):
                    raise
                await self._reconnect(statement, exc)
                await _read(statement, sql, args, consume)
        seconds = time.perf_counter() - sent
        self._observer.query_done(resource, seconds)
        self.health.succeeded(f"a query answered in {seconds * 1000:.1f} ms")

    async def ping(self) -> float:
        """One COM_PING on a pooled connection, as `_statement` bounds it; the seconds it took.
        Not counted as a query; its outcome goes to `health` (it is the background check)."""
        async with self._statement(None) as statement:
            started = time.perf_counter()
            await statement.conn.ping()
        seconds = time.perf_counter() - started
        self.health.succeeded(f"a ping answered in {seconds * 1000:.1f} ms")
        return seconds

    def _may_retry(self, statement: _Statement, exc: Exception) -> bool:
        """Whether a statement that failed with `exc` runs once more: only when its connection
        was lost (not a time-out, not the server's refusal) before any row was handed on, only
        once, and not while the database is known to be down (an outage must not be doubled)."""
        if statement.handed or statement.retry is not None or not self.health.status().up:
            return False
        if _a_bug(exc, statement.conn):
            return False
        return _classify(exc)[1] == "connection"

    async def _reconnect(self, statement: _Statement, exc: Exception) -> None:
        """Put a newly opened connection under `statement` in place of its broken one, within
        what is left of its deadline. The first failure is not counted or told to `health`:
        the retry's outcome is (`_statement`)."""
        statement.retry = _Retry(_describe(exc), time.perf_counter())
        statement.held = False  # `replace` discards it, counted as broken
        try:
            statement.conn = await self._pool.replace(statement.conn, discard="broken")
        except (pymysql.err.MySQLError, OSError) as error:
            raise _ConnectFailed(error) from None
        statement.held = True
        statement.wait.keep()

    @contextlib.asynccontextmanager
    async def _statement(self, resource: str | None) -> AsyncIterator[_Statement]:
        """A pooled connection for one statement (`resource` None: a ping), bounded by the
        acquire and query time-outs; failures become DatabaseUnavailable (retry later) or
        DatabaseQueryError, counted and told to `health`, as is the outcome of a retry.

        A connection whose statement did not finish cleanly (time-out, cancellation, protocol
        or server error, an error raised by the caller's code) is closed, never returned to the
        pool in an unknown state.
        """
        s = self._settings
        conn = await self._acquire(resource)
        what = "a query" if resource is not None else "a ping"
        discard: str | None = "cancelled"
        deadline = asyncio.timeout(s.db_query_timeout)
        statement = _Statement(conn, _Wait(deadline, s.db_query_timeout))
        try:
            async with deadline:
                yield statement
            discard = None
        except TimeoutError:
            discard = "timeout"
            limit = f"{s.db_query_timeout:g} s"
            self._failed(
                resource,
                "timeout",
                f"time-out: no answer to {what} within DB_QUERY_TIMEOUT ({limit})",
                f"no answer within {limit}",
            )
            raise DatabaseUnavailable(f"the database did not answer within {limit}") from None
        except _ConnectFailed as exc:
            raise self._cannot_connect(resource, exc.error) from None
        except PoolClosed:  # closing while a retry's connection was being opened
            raise DatabaseUnavailable("the service is shutting down") from None
        except (pymysql.err.MySQLError, OSError, RuntimeError) as exc:
            if _a_bug(exc, statement.conn):
                discard = "error"  # answered with 500
                raise
            discard, kind, error = _classify(exc)
            self._failed(resource, kind, _statement_failure(kind, what), _describe(exc))
            raise error from None
        except Exception:
            discard = "error"
            raise
        finally:
            if statement.held:
                self._pool.release(statement.conn, discard=discard)
            if statement.retry is not None and resource is not None:
                self._retried(resource, statement.retry, "failed" if discard else "succeeded")

    async def _acquire(self, resource: str | None) -> Connection:
        """A pooled connection; failing that, DatabaseUnavailable, counted as `_statement` says."""
        started = time.perf_counter()
        try:
            conn: Connection = await self._pool.acquire(self._settings.db_acquire_timeout)
        except AcquireTimeout as exc:
            # Saturation, not a fact about the database: a ping that finds it tells nothing.
            if resource is not None:
                self._failed(resource, "pool", str(exc), str(exc))
            raise DatabaseUnavailable(str(exc)) from None
        except PoolClosed:
            raise DatabaseUnavailable("the service is shutting down") from None
        except (pymysql.err.MySQLError, OSError) as exc:
            raise self._cannot_connect(resource, exc) from None
        self._observer.acquired(time.perf_counter() - started)
        return conn

    def _cannot_connect(self, resource: str | None, exc: Exception) -> DatabaseUnavailable:
        """Count and tell `health` that no connection could be opened; the error to raise."""
        self._failed(resource, "connection", _connect_failure(exc, self._settings), _describe(exc))
        return DatabaseUnavailable("cannot connect to the database", detail=_describe(exc))

    def _retried(self, resource: str, retry: _Retry, outcome: str) -> None:
        self._observer.query_retried(resource, outcome)
        log_retry = log.info if outcome == "succeeded" else log.warning
        log_retry(
            "query_retried",
            resource=resource,
            first_error=retry.first_error,
            outcome=outcome,
            seconds=round(time.perf_counter() - retry.started, 4),
        )

    def _failed(self, resource: str | None, kind: str, message: str, reason: str) -> None:
        """Count a failed statement (not a ping) and tell `health`, which logs incidents.
        `reason` never holds the password (the driver's messages do not contain it)."""
        if resource is not None:
            self._observer.query_failed(resource, kind)
        self.health.failed(kind, message, reason, resource or "ping")


async def _read(
    statement: _Statement,
    sql: str,
    args: Sequence[object],
    consume: Callable[[list[Row]], None],
) -> None:
    """Run `sql` on the statement's connection and hand every row to `consume`."""
    conn = statement.conn
    await conn.execute(sql, tuple(args))
    while True:
        statement.wait.restart()
        chunk = await conn.fetch(FETCH_CHUNK_ROWS)
        if not chunk:
            break
        statement.handed = True
        consume(chunk)
        await asyncio.sleep(0)


def _a_bug(exc: BaseException, conn: Connection) -> bool:
    """A RuntimeError on a connection that does not look dead is not the connection's doing
    (uvloop raises one on a write to a transport the server has just closed)."""
    return isinstance(exc, RuntimeError) and not conn.looks_dead()


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


def _statement_failure(kind: str, what: str) -> str:
    """The status message of a statement that failed as `_classify` says."""
    if kind == "timeout":
        return f"time-out: the database stopped {what} at its time limit"
    if kind == "connection":
        return f"lost: the connection broke during {what}"
    return f"rejected: the database refused {what}"


def _connect_failure(exc: BaseException, s: Settings) -> str:
    """Why a connection could not be opened, named by cause for the status (shown to anyone
    who can reach /readyz, so without address or driver text: the log line has those)."""
    if handshake_failure(exc) is not None:
        return f"tls: a connection's TLS handshake failed (DB_SSL_MODE={s.db_ssl_mode})"
    code = _error_code(exc)
    # aiomysql wraps every socket error of a connect as 2003 with the OSError as its cause.
    cause = exc.__cause__ if code == 2003 else exc
    if isinstance(cause, TimeoutError):
        limit = f"DB_CONNECTION_TIMEOUT ({s.db_connection_timeout:g} s)"
        return f"time-out: no answer to a connection attempt within {limit}"
    if isinstance(cause, OSError) and (unreachable := _unreachable(cause)):
        return unreachable
    if code is not None and code not in _CLIENT_ERRORS:  # the server's own answer
        return f"rejected: the server refused the connection ({code})"
    return "lost: the connection broke while it was being opened"


def _unreachable(cause: OSError) -> str | None:
    if isinstance(cause, ConnectionRefusedError):
        return "refused: nothing accepts connections at the database's address"
    if isinstance(cause, socket.gaierror):
        return "unreachable: the database's host name does not resolve"
    if cause.errno in _UNREACHABLE_ERRNOS:
        return "unreachable: no route to the database's host"
    return None


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
