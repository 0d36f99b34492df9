"""What the database server saw: `SHOW GLOBAL STATUS` counters read before and after each
measured section.

The counters are server-wide, so they are exact only while nothing else uses the server. They
are read over ONE connection opened before the first reading and closed after the last, so the
reader's own connection never shows in `Connections`, and `SHOW STATUS` is not a SELECT.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, Final

import pymysql

from devtools.mariadb import ServerAddress

from .database import open_connection

_NAMES: Final = ("Com_select", "Connections", "Threads_connected")


@dataclass(frozen=True, slots=True)
class Status:
    selects: int  # Com_select: SELECT statements run so far
    connections: int  # Connections: connection attempts so far
    threads: int  # Threads_connected: connections open now (this reader's included)

    def __sub__(self, earlier: Status) -> Delta:
        return Delta(
            selects=self.selects - earlier.selects,
            connections=self.connections - earlier.connections,
            threads_before=earlier.threads,
            threads_after=self.threads,
        )


@dataclass(frozen=True, slots=True)
class Delta:
    """The server's counters over one interval."""

    selects: int
    connections: int  # connections opened during the interval
    threads_before: int
    threads_after: int

    def __add__(self, later: Delta) -> Delta:
        """Two consecutive intervals as one."""
        return Delta(
            selects=self.selects + later.selects,
            connections=self.connections + later.connections,
            threads_before=self.threads_before,
            threads_after=later.threads_after,
        )

    def describe(self) -> str:
        """One line for the progress output."""
        return (
            f"{self.selects} SELECTs, {self.connections} connections opened, "
            f"Threads_connected {self.threads_before} -> {self.threads_after}"
        )

    def as_json(self) -> dict[str, int]:
        return {
            "selects": self.selects,
            "connections_opened": self.connections,
            "threads_connected_before": self.threads_before,
            "threads_connected_after": self.threads_after,
        }


class StatusReader:
    """The run's one status connection; `close()` is idempotent."""

    def __init__(self, addr: ServerAddress) -> None:
        self._conn: pymysql.Connection[Any] | None = open_connection(addr)
        # Readings run in worker threads; a connection must never carry two at once.
        self._lock = threading.Lock()

    def _cursor(self) -> Any:
        if self._conn is None:
            raise RuntimeError("the status connection is closed")
        return self._conn.cursor()

    def read_now(self) -> Status:
        with self._lock, self._cursor() as cur:
            cur.execute(
                "SHOW GLOBAL STATUS WHERE Variable_name IN (%s, %s, %s)",
                _NAMES,
            )
            values = {name: int(value) for name, value in cur.fetchall()}
        return Status(*(values[name] for name in _NAMES))

    async def read(self) -> Status:
        return await asyncio.to_thread(self.read_now)

    def server_version(self) -> str:
        """`SELECT VERSION()`: a SELECT itself, so read it before any measured section."""
        with self._lock, self._cursor() as cur:
            cur.execute("SELECT VERSION()")
            row = cur.fetchone()
        return str(row[0]) if row else "?"

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
