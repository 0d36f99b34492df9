"""A bounded pool of database connections (any driver's, through drivers.Connection).

Why not a driver's own pool: aiomysql's opens connections while holding the lock every acquirer
needs (one slow handshake stalls every request, even those a returned connection could serve),
neither has an acquire time-out, and they expose none of what an operator asks of a pool
(pending acquires, connections opened and closed and why). This pool adds exactly that, in the
vocabulary of HikariCP: in use, idle, pending, max, min.

Connections are opened by background tasks, so an acquirer that times out or is cancelled never
abandons a half-open socket; a connection that arrives after its acquirer left serves the next
one. The pool knows nothing of SQL or HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class PoolClosed(Exception):
    """The pool is shutting down and hands out no more connections."""


class AcquireTimeout(Exception):
    """No connection became free within the acquire time-out."""


class Connection(Protocol):
    """What the pool needs of a connection (drivers.Connection has it)."""

    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...

    async def ensure_closed(self) -> None: ...

    def looks_dead(self) -> bool: ...


ConnectFn = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class PoolStats:
    in_use: int
    idle: int
    opening: int
    pending: int
    max_size: int
    min_size: int
    opened_total: int
    closed_total: Mapping[str, int]
    connect_errors_total: int
    acquire_timeouts_total: int


@dataclass
class _Idle:
    conn: Any
    opened_at: float


class ConnectionPool:
    def __init__(
        self,
        connect: ConnectFn,
        *,
        min_size: int,
        max_size: int,
        max_lifetime: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        self._connect = connect
        self._min = min_size
        self._max = max_size
        self._max_lifetime = max_lifetime
        self._clock = clock
        self._idle: deque[_Idle] = deque()
        self._in_use: dict[Any, float] = {}  # connection -> time it was opened
        self._opening = 0
        self._replacing = 0  # connections being opened for `replace`, each for its caller
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()  # opening connections
        self._quits: set[asyncio.Task[None]] = set()  # closing connections with QUIT
        self._closing = False
        self._drained = asyncio.Event()
        self._opened_total = 0
        self._closed_total: Counter[str] = Counter()
        self._connect_errors_total = 0
        self._acquire_timeouts_total = 0

    # -- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open `min_size` connections (at least one, to prove the credentials work).

        Raises the first connection error; whatever was opened before it is closed again.
        """
        try:
            for _ in range(max(self._min, 1)):
                conn = await self._connect()
                self._opened_total += 1
                self._idle.append(_Idle(conn, self._clock()))
        except BaseException:
            await self._close_idle("startup_failed")
            raise
        if self._min == 0:
            await self._close_idle("below_min")

    async def close(self, grace: float) -> None:
        """Stop handing out connections, wait up to `grace` seconds for the ones in use to come
        back, then close everything (QUIT for idle ones, an abrupt close for stragglers)."""
        self._closing = True
        while (waiter := self._next_waiter()) is not None:
            waiter.set_exception(PoolClosed("the pool is closing"))
        await self._close_idle("shutdown")
        if self._in_use:
            self._drained.clear()
            try:
                async with asyncio.timeout(grace):
                    await self._drained.wait()
            except TimeoutError:
                for conn in list(self._in_use):
                    del self._in_use[conn]
                    self._discard(conn, "shutdown_forced")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # Not cancelled: a task cancelled before its first step never runs `_quit`'s `finally`,
        # which would leave its socket open. Each QUIT is bounded by `_quit`'s own time-out.
        if self._quits:
            await asyncio.gather(*self._quits, return_exceptions=True)

    # -- acquire / release ------------------------------------------------------------------

    async def acquire(self, timeout: float) -> Any:  # noqa: ASYNC109 (the pool's own deadline)
        """A healthy connection, exclusively the caller's until `release`.

        Raises AcquireTimeout, PoolClosed, or the error that opening a connection raised.
        """
        if self._closing:
            raise PoolClosed("the pool is closing")
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                return await self._acquire()
        except TimeoutError:
            if not deadline.expired():
                raise  # a connection attempt timed out (handed to us), not our wait
            self._acquire_timeouts_total += 1
            raise AcquireTimeout(f"no database connection free within {timeout:g} s") from None

    async def _acquire(self) -> Any:
        while True:
            entry = self._take_idle()
            if entry is not None:
                self._in_use[entry.conn] = entry.opened_at
                return entry.conn
            waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._open_for_waiters()
            try:
                conn = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    # Handed a connection in the same loop turn we were cancelled: pass it on.
                    self.release(waiter.result())
                else:
                    waiter.cancel()
                    self._forget_waiter(waiter)
                raise
            if not conn.looks_dead():
                return conn
            # It died between the hand-over and now (the server's RST or FIN was processed
            # while this task waited to resume): try again rather than fail the caller.
            if self._in_use.pop(conn, None) is not None:  # else closed by `close` already
                self._discard(conn, "broken")
            if self._closing:
                if not self._in_use:
                    self._drained.set()
                raise PoolClosed("the pool is closing")

    def release(self, conn: Any, *, discard: str | None = None) -> None:
        """Give a connection back. `discard` (a reason) closes it instead: use it whenever the
        connection's state is unknown (failed, timed out or cancelled query)."""
        if self._closing and conn not in self._in_use:
            return  # closed by `close` after its grace period ("shutdown_forced"): nothing to do
        opened_at = self._in_use.pop(conn)
        if discard is not None or conn.closed:
            self._discard(conn, discard or "broken")
            self._open_for_waiters()
        elif self._closing:
            self._close_gracefully(conn, "shutdown")
        elif self._clock() - opened_at >= self._max_lifetime:
            self._close_gracefully(conn, "recycled")
            self._open_for_waiters()
        else:
            self._offer(conn, opened_at)
        if self._closing and not self._in_use:
            self._drained.set()

    async def replace(self, conn: Any, *, discard: str) -> Any:
        """Discard `conn` (in use, broken) and open a new connection in its place for the same
        caller: never an idle one, which the same fault may have broken too, and without giving
        up the slot, so the pool stays within its maximum and no waiter is overtaken.

        Raises PoolClosed, or the error that opening raised. A caller that leaves (cancelled,
        timed out) before the connection is open leaves it to the pool, as `acquire` does.
        """
        if self._closing:
            self.release(conn, discard=discard)
            raise PoolClosed("the pool is closing")
        del self._in_use[conn]
        self._discard(conn, discard)
        self._replacing += 1
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        task = asyncio.get_running_loop().create_task(self._open_replacement(waiter))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result())  # handed over in the turn we were cancelled
            raise

    # -- internals --------------------------------------------------------------------------

    def _take_idle(self) -> _Idle | None:
        # Most recently used first: it is the most likely to be alive, and the rest age out.
        while self._idle:
            entry = self._idle.pop()
            if entry.conn.looks_dead():
                self._discard(entry.conn, "broken")
            elif self._clock() - entry.opened_at >= self._max_lifetime:
                self._close_gracefully(entry.conn, "recycled")
            else:
                return entry
        return None

    def _offer(self, conn: Any, opened_at: float) -> None:
        """Hand a free connection to the oldest waiter, or keep it idle."""
        waiter = self._next_waiter()
        if waiter is not None:
            # Counted as in use from now on, so the pool never opens past its maximum while
            # the waiter has not resumed yet.
            self._in_use[conn] = opened_at
            waiter.set_result(conn)
        elif self._closing:
            self._close_gracefully(conn, "shutdown")
        else:
            self._idle.append(_Idle(conn, opened_at))

    def _size(self) -> int:
        return len(self._in_use) + len(self._idle) + self._opening + self._replacing

    def _pending(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def _next_waiter(self) -> asyncio.Future[Any] | None:
        """Remove and return the oldest waiter still waiting (cancelled ones are dropped)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                return waiter
        return None

    def _open_for_waiters(self) -> None:
        pending = self._pending()
        while not self._closing and self._opening < pending and self._size() < self._max:
            self._opening += 1
            task = asyncio.get_running_loop().create_task(self._open_one())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _open_one(self) -> None:
        try:
            conn = await self._connect()
        except Exception as exc:  # any failure to connect is reported to a waiter, not lost
            self._opening -= 1
            self._connect_errors_total += 1
            waiter = self._next_waiter()
            if waiter is not None:
                waiter.set_exception(exc)
            # The remaining waiters get their own attempt (and, while the database is down,
            # their own prompt error) instead of sleeping until their time-out.
            self._open_for_waiters()
            return
        except asyncio.CancelledError:
            self._opening -= 1
            raise
        self._opening -= 1
        self._opened_total += 1
        self._offer(conn, self._clock())

    async def _open_replacement(self, waiter: asyncio.Future[Any]) -> None:
        try:
            conn = await self._connect()
        except Exception as exc:
            self._replacing -= 1
            self._connect_errors_total += 1
            if not waiter.done():
                waiter.set_exception(exc)
            self._open_for_waiters()  # the slot is free again
            return
        except asyncio.CancelledError:  # the pool is closing
            self._replacing -= 1
            if not waiter.done():
                waiter.set_exception(PoolClosed("the pool is closing"))
            raise
        self._replacing -= 1
        self._opened_total += 1
        if waiter.done():  # its caller left: the connection serves the next one
            self._offer(conn, self._clock())
        else:
            self._in_use[conn] = self._clock()
            waiter.set_result(conn)

    def _forget_waiter(self, waiter: asyncio.Future[Any]) -> None:
        with contextlib.suppress(ValueError):  # already handed over or failed
            self._waiters.remove(waiter)

    def _discard(self, conn: Any, reason: str) -> None:
        conn.close()
        self._closed_total[reason] += 1

    def _close_gracefully(self, conn: Any, reason: str) -> None:
        """Send QUIT in the background so the server does not count an aborted client."""
        self._closed_total[reason] += 1
        task = asyncio.get_running_loop().create_task(_quit(conn))
        self._quits.add(task)
        task.add_done_callback(self._quits.discard)

    async def _close_idle(self, reason: str) -> None:
        while self._idle:
            entry = self._idle.pop()
            self._closed_total[reason] += 1
            await _quit(entry.conn)

    def stats(self) -> PoolStats:
        return PoolStats(
            in_use=len(self._in_use),
            idle=len(self._idle),
            opening=self._opening + self._replacing,
            pending=self._pending(),
            max_size=self._max,
            min_size=self._min,
            opened_total=self._opened_total,
            closed_total=dict(self._closed_total),
            connect_errors_total=self._connect_errors_total,
            acquire_timeouts_total=self._acquire_timeouts_total,
        )


async def _quit(conn: Any) -> None:
    try:
        async with asyncio.timeout(1.0):
            await conn.ensure_closed()
    except (OSError, TimeoutError, RuntimeError):
        pass
    finally:
        conn.close()
