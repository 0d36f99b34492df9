"""The MySQL drivers the service can use (DB_DRIVER), each behind one small `Connection` class:
what db.py and pool.py call, whatever the driver. Rows come as the drivers' own tuples (the same
Python types from both); errors are PyMySQL's classes with the driver's code and text, so that
the rest of the service classifies failures one way.

asyncmy parses rows in Cython, aiomysql in pure Python: bench/README.md has the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiomysql
import asyncmy
import asyncmy.converters
import asyncmy.cursors
import asyncmy.errors
import pymysql
import pymysql.converters
from pymysql.constants import CLIENT

from .timezones import row_decoders
from .tls import NO_TLS_ERROR, NO_TLS_TEXT, Tls

NAMES: Final = ("asyncmy", "aiomysql")

Row = tuple[Any, ...]

RECEIVE_BUFFER_BYTES: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class ConnectParams:
    host: str
    port: int
    user: str
    password: str
    database: str
    connect_timeout: float  # bounds the whole handshake, not only the TCP connect
    tls: Tls
    program_name: str = "cm-api"
    # The zone DATETIME values are read in (timezones.py); None: naive, as the driver reads them.
    datetime_zone: dt.tzinfo | None = None


class Connection(Protocol):
    """One open connection, used by one statement at a time."""

    @property
    def closed(self) -> bool: ...

    def close(self) -> None:
        """Close the socket at once (no QUIT)."""

    async def ensure_closed(self) -> None:
        """Send QUIT, then close."""

    def looks_dead(self) -> bool:
        """True when the server already closed the socket (restart, wait_timeout, KILL, a reset):
        an idle MySQL connection receives nothing unless the server is ending it."""

    def server_info(self) -> str: ...

    def thread_id(self) -> int:
        """The server's id of this session (CONNECTION_ID(), PROCESSLIST's ID)."""

    def encryption(self) -> tuple[str, str] | None:
        """The TLS version and cipher in use (("TLSv1.3", "TLS_AES_256_GCM_SHA384")), None
        when the connection is not encrypted."""

    async def ping(self) -> None: ...

    async def execute(self, sql: str, args: Sequence[object]) -> None:
        """Send one statement whose rows are then read with `fetch` (not buffered)."""

    async def fetch(self, size: int) -> list[Row]:
        """Up to `size` more rows of the last statement; [] once all were read."""


class Driver(Protocol):
    async def connect(self, params: ConnectParams) -> Connection: ...


def driver(name: str) -> Driver:
    if name == "asyncmy":
        return _Asyncmy()
    if name == "aiomysql":
        return _Aiomysql()
    raise ValueError(f"unknown driver {name!r}; one of {', '.join(NAMES)}")


def _lost_while_connecting(exc: RuntimeError) -> pymysql.err.OperationalError:
    """uvloop's word (through either driver) for a socket the peer closed mid-handshake, say a
    proxy in front of a restarting server resetting what it just accepted: a lost connection
    (503), not a bug (500)."""
    return pymysql.err.OperationalError(2013, f"Lost connection while connecting: {exc}")


class _DriverConnection:
    """What both drivers' connections do alike: a driver connection and its current cursor."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._cursor: Any = None

    def close(self) -> None:
        self._conn.close()

    def server_info(self) -> str:
        return str(self._conn.get_server_info())

    def thread_id(self) -> int:
        return int(self._conn.thread_id())

    def encryption(self) -> tuple[str, str] | None:
        tls = self._transport().get_extra_info("ssl_object")
        if tls is None:
            return None
        return str(tls.version()), str(tls.cipher()[0])

    def _transport(self) -> asyncio.Transport:
        raise NotImplementedError


def _negotiate_tls(conn: Any, flags: str, required: bool, error: type[Exception]) -> None:
    """Before the client's first packet: drop the TLS a driver would start against a server
    that offers none (asyncmy would fail, aiomysql go on in clear), or refuse, before any
    credentials are sent, when DB_SSL_MODE requires TLS. `flags` names the driver's field."""
    if conn._ssl_context is None or conn.server_capabilities & CLIENT.SSL:
        return
    if required:
        raise error(NO_TLS_ERROR, NO_TLS_TEXT)
    conn._ssl_context = None
    setattr(conn, flags, getattr(conn, flags) & ~CLIENT.SSL)


# -- asyncmy ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _as_pymysql() -> Iterator[None]:
    """asyncmy's errors as PyMySQL's class of the same PEP 249 name, code and text."""
    try:
        yield
    except asyncmy.errors.MySQLError as exc:
        kind = getattr(pymysql.err, type(exc).__name__, pymysql.err.MySQLError)
        # The OSError behind a failed connect (code 2003) tells refused from unreachable.
        raise kind(*exc.args) from exc.__cause__


class _AsyncmyDriverConnection(asyncmy.Connection):
    def __init__(self, *args: Any, tls_required: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._tls_required = tls_required

    async def _request_authentication(self) -> None:
        _negotiate_tls(self, "_client_flag", self._tls_required, asyncmy.errors.OperationalError)
        await super()._request_authentication()  # type: ignore[misc]


class _AsyncmyConnection(_DriverConnection):
    @property
    def closed(self) -> bool:
        return not self._conn.connected

    def _transport(self) -> asyncio.Transport:
        transport: asyncio.Transport = self._conn._transport
        return transport

    async def ensure_closed(self) -> None:
        with _as_pymysql():
            await self._conn.ensure_closed()

    def looks_dead(self) -> bool:
        # _stream_broken: the transport is closing or the protocol saw EOF or an error.
        return self.closed or bool(self._conn._stream_broken)

    async def ping(self) -> None:
        with _as_pymysql():
            await self._conn.ping(reconnect=False)

    async def execute(self, sql: str, args: Sequence[object]) -> None:
        with _as_pymysql():
            self._cursor = self._conn.cursor(asyncmy.cursors.SSCursor)
            await self._cursor.execute(sql, tuple(args))

    async def fetch(self, size: int) -> list[Row]:
        # asyncmy reads whatever the server sends, however slowly rows are taken: a big result
        # piles up in its buffer (memory, and long memmoves on the loop). Reading only while
        # a fetch waits for data lets TCP hold the server back instead.
        transport = self._conn._transport
        if transport is not None:
            transport.resume_reading()
        with _as_pymysql():
            rows: list[Row] = await self._cursor.fetchmany(size)
        if not rows:
            self._cursor = None
        elif transport is not None and not transport.is_closing():
            transport.pause_reading()
        return rows


class _Asyncmy:
    async def connect(self, params: ConnectParams) -> Connection:
        conn: Any = _AsyncmyDriverConnection(
            host=params.host,
            port=params.port,
            user=params.user,
            password=params.password,
            database=params.database,
            charset="utf8mb4",
            autocommit=True,
            # asyncmy accepts whole seconds >= 1 here; asyncio.timeout below is the real bound.
            connect_timeout=max(1.0, params.connect_timeout),
            program_name=params.program_name,
            ssl=params.tls.context,
            tls_required=params.tls.required,
            # Time zones: TIMESTAMP and DATETIME read as aware datetimes. asyncmy applies conv
            # in the text protocol only: SSCursor always uses it (no prepared statements).
            conv={**asyncmy.converters.conversions, **row_decoders(params.datetime_zone)},
        )
        try:
            with _as_pymysql():
                # asyncmy closes its socket itself when the deadline cancels the handshake.
                async with asyncio.timeout(params.connect_timeout):
                    await conn.connect()
        except RuntimeError as exc:
            conn.close()
            raise _lost_while_connecting(exc) from exc
        # asyncmy parses every row already received at once: a bounded kernel buffer keeps
        # what one fetch finds, and so each step of the event loop, short.
        sock = conn._transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        return _AsyncmyConnection(conn)


# -- aiomysql ---------------------------------------------------------------------------------


class _AiomysqlDriverConnection(aiomysql.Connection):  # type: ignore[misc]
    def __init__(self, *args: Any, tls_required: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tls_required = tls_required

    async def _request_authentication(self) -> None:
        _negotiate_tls(self, "client_flag", self._tls_required, pymysql.err.OperationalError)
        await super()._request_authentication()


class _AiomysqlConnection(_DriverConnection):
    @property
    def closed(self) -> bool:
        return bool(self._conn.closed)

    def _transport(self) -> asyncio.Transport:
        transport: asyncio.Transport = self._conn._writer.transport
        return transport

    async def ensure_closed(self) -> None:
        writer = self._conn._writer
        await self._conn.ensure_closed()
        if writer is not None:
            # As asyncmy does: a TLS socket closes only after the TLS shutdown, and a pool
            # that says it is closed must have nothing left open.
            await writer.wait_closed()

    def looks_dead(self) -> bool:
        if self._conn.closed:
            return True
        # Transport first: uvloop closes it on an RST or EOF but tells the reader a callback
        # later, and a query written in between fails with RuntimeError, not a driver error.
        transport = getattr(getattr(self._conn, "_writer", None), "transport", None)
        if transport is not None and transport.is_closing():
            return True
        reader = getattr(self._conn, "_reader", None)
        if reader is None:
            return False
        return bool(reader.at_eof() or reader.exception() or getattr(reader, "eof_received", False))

    async def ping(self) -> None:
        await self._conn.ping(reconnect=False)

    async def execute(self, sql: str, args: Sequence[object]) -> None:
        self._cursor = await self._conn.cursor(aiomysql.SSCursor)
        await self._cursor.execute(sql, tuple(args))

    async def fetch(self, size: int) -> list[Row]:
        rows: list[Row] = await self._cursor.fetchmany(size)
        if not rows:
            self._cursor = None
        return rows


class _Aiomysql:
    async def connect(self, params: ConnectParams) -> Connection:
        conn = _AiomysqlDriverConnection(
            host=params.host,
            port=params.port,
            user=params.user,
            password=params.password,
            db=params.database,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=params.connect_timeout,
            program_name=params.program_name,
            ssl=params.tls.context,
            tls_required=params.tls.required,
            # Time zones: TIMESTAMP and DATETIME columns read as aware datetimes.
            conv={**pymysql.converters.decoders, **row_decoders(params.datetime_zone)},
        )
        try:
            # aiomysql bounds only the TCP connect; a peer that accepts and then says nothing
            # would hang the handshake forever. The private `_connect` (what aiomysql.connect
            # awaits) lets us close the half-open socket when the deadline cancels it.
            async with asyncio.timeout(params.connect_timeout):
                await conn._connect()
        except RuntimeError as exc:
            conn.close()
            raise _lost_while_connecting(exc) from exc
        except BaseException:
            conn.close()
            raise
        return _AiomysqlConnection(conn)
