"""The benchmark's own database: created with generated rows, dropped at the end, and watched
through the server's global `Com_select` counter."""

from __future__ import annotations

import os
import secrets
import statistics
import time
from pathlib import Path
from typing import Any, Final

import pymysql

from service.devdb import ServerAddress, connect, create_database, drop_database

from . import data

SCHEMA: Final = Path(__file__).resolve().parent.parent / "config" / "schema.sql"


def server_address() -> ServerAddress:
    """The server named by DB_HOST/DB_PORT/DB_USER/DB_PASSWORD, else 127.0.0.1:3306 as root."""
    return ServerAddress(
        host=os.environ.get("DB_HOST") or "127.0.0.1",
        port=int(os.environ.get("DB_PORT") or "3306"),
        user=os.environ.get("DB_USER") or "root",
        password=os.environ.get("DB_PASSWORD", ""),
    )


def _connect(addr: ServerAddress, database: str | None = None) -> pymysql.Connection[Any]:
    return connect(addr, timeout=10.0, query_timeout=3600.0, database=database)


class BenchDatabase:
    """`cmapi_bench_<random hex>` on the given server; `drop()` removes it (idempotent)."""

    def __init__(self, addr: ServerAddress) -> None:
        self.addr = addr
        self.name = f"cmapi_bench_{secrets.token_hex(4)}"
        self._created = False
        self._monitor: pymysql.Connection[Any] | None = None

    def create(self, seed: int) -> None:
        """Create the schema and insert the generated rows."""
        rows = data.generate(seed)
        if self._exists():
            raise RuntimeError(f"database {self.name} already exists; not touching it")
        self._created = True  # before creating: a half-created database must be dropped too
        create_database(self.addr, self.name, [SCHEMA])
        conn = _connect(self.addr, self.name)
        try:
            with conn.cursor() as cur:
                for table, columns, values in (
                    ("acc", data.ACC_COLUMNS, rows.acc),
                    ("user", data.USER_COLUMNS, rows.user),
                ):
                    cols = ", ".join(f"`{c}`" for c in columns)
                    marks = ", ".join(["%s"] * len(columns))
                    cur.executemany(f"INSERT INTO `{table}` ({cols}) VALUES ({marks})", values)
        finally:
            conn.close()

    def _exists(self) -> bool:
        conn = _connect(self.addr)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW DATABASES LIKE %s", (self.name,))
                return cur.fetchone() is not None
        finally:
            conn.close()

    def drop(self) -> None:
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
        if self._created:
            drop_database(self.addr, self.name)
            self._created = False

    def service_env(self, via: ServerAddress | None = None) -> dict[str, str]:
        """DB_* settings for the service: this database, reached at `via` (a relay) if given."""
        where = via or self.addr
        return {
            "DB_HOST": where.host,
            "DB_PORT": str(where.port),
            "DB_USER": self.addr.user,
            "DB_PASSWORD": self.addr.password,
            "DB_NAME": self.name,
        }

    def com_select(self) -> int:
        """The server-wide count of SELECT statements so far (every client's, not only ours)."""
        if self._monitor is None:
            self._monitor = _connect(self.addr)
        with self._monitor.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Com_select'")
            row = cur.fetchone()
        assert row is not None
        return int(row[1])

    def time_query(self, sql: str, repeats: int, via: ServerAddress | None = None) -> float:
        """Median seconds to run `sql` and fetch every row with PyMySQL, on one connection
        (to the server, or through `via`)."""
        conn = _connect(via or self.addr, self.name)
        try:
            times: list[float] = []
            for _ in range(repeats):
                with conn.cursor() as cur:
                    start = time.perf_counter()
                    cur.execute(sql)
                    cur.fetchall()
                    times.append(time.perf_counter() - start)
        finally:
            conn.close()
        return statistics.median(times)
