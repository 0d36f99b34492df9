"""The benchmark's own database: created with generated rows, dropped at the end."""

from __future__ import annotations

import itertools
import os
import secrets
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import pymysql

from devtools.mariadb import ServerAddress, connect, create_database, drop_database

from . import data

SCHEMA: Final = Path(__file__).resolve().parent.parent / "config" / "schema.sql"
# Rows per LOAD DATA file: a few MB each, so a million rows never sit in memory at once.
LOAD_CHUNK: Final = 50_000


def server_address() -> ServerAddress:
    """The server named by DB_HOST/DB_PORT/DB_USER/DB_PASSWORD, else 127.0.0.1:3306 as root."""
    return ServerAddress(
        host=os.environ.get("DB_HOST") or "127.0.0.1",
        port=int(os.environ.get("DB_PORT") or "3306"),
        user=os.environ.get("DB_USER") or "root",
        password=os.environ.get("DB_PASSWORD", ""),
    )


def open_connection(
    addr: ServerAddress, database: str | None = None, *, local_infile: bool = False
) -> pymysql.Connection[Any]:
    """`local_infile`: allowed to send a local file to LOAD DATA LOCAL INFILE."""
    return connect(
        addr, timeout=10.0, query_timeout=3600.0, database=database, local_infile=local_infile
    )


class BenchDatabase:
    """`cmapi_bench_<random hex>` on the given server with `acc_rows` and `user_rows` generated
    rows; `drop()` removes it (idempotent)."""

    def __init__(self, addr: ServerAddress, acc_rows: int, user_rows: int) -> None:
        self.addr = addr
        self.acc_rows = acc_rows
        self.user_rows = user_rows
        self.name = f"cmapi_bench_{secrets.token_hex(4)}"
        self._created = False

    @property
    def rows(self) -> dict[str, int]:
        """Rows per list route, what a complete answer holds."""
        return {"/acc/": self.acc_rows, "/user/": self.user_rows}

    def create(self, seed: int) -> None:
        """Create the schema and insert the generated rows."""
        rows = data.generate(seed, self.acc_rows, self.user_rows)
        if self._exists():
            raise RuntimeError(f"database {self.name} already exists; not touching it")
        self._created = True  # before creating: a half-created database must be dropped too
        create_database(self.addr, self.name, [SCHEMA])
        conn = open_connection(self.addr, self.name)
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
        conn = open_connection(self.addr)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW DATABASES LIKE %s", (self.name,))
                return cur.fetchone() is not None
        finally:
            conn.close()

    def drop(self) -> None:
        if self._created:
            drop_database(self.addr, self.name)
            self._created = False

    def service_env(self) -> dict[str, str]:
        """DB_* settings that point the service straight at this database."""
        return {
            "DB_HOST": self.addr.host,
            "DB_PORT": str(self.addr.port),
            "DB_USER": self.addr.user,
            "DB_PASSWORD": self.addr.password,
            "DB_NAME": self.name,
        }

    def time_query(self, sql: str, repeats: int) -> float:
        """Median seconds to run `sql` and fetch every row with PyMySQL, on one new connection
        (which the server counts: call it outside a measured section)."""
        conn = open_connection(self.addr, self.name)
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


class GrowingDatabase(BenchDatabase):
    """`cmapi_bench_scale_<random hex>`: like BenchDatabase, but `create` leaves `user` empty and
    `grow` appends `data.user_stream`'s rows to it, so each size holds the smaller sizes' rows
    and a million rows are generated once, not once per size."""

    def __init__(self, addr: ServerAddress, acc_rows: int, seed: int, workdir: Path) -> None:
        super().__init__(addr, acc_rows, 0)
        self.name = f"cmapi_bench_scale_{secrets.token_hex(4)}"
        self._stream = data.user_stream(seed, acc_rows)
        self._file = workdir / f"{self.name}-user.tsv"

    def grow(self, user_rows: int) -> None:
        """Append generated rows until `user` holds `user_rows`."""
        conn = open_connection(self.addr, self.name, local_infile=True)
        try:
            while self.user_rows < user_rows:
                count = min(LOAD_CHUNK, user_rows - self.user_rows)
                self._load(conn, itertools.islice(self._stream, count), count)
                self.user_rows += count
        finally:
            conn.close()
            self._file.unlink(missing_ok=True)

    def _load(
        self, conn: pymysql.Connection[Any], rows: Iterable[tuple[object, ...]], count: int
    ) -> None:
        # LOAD DATA takes generated rows quicker than INSERTs that PyMySQL escapes value by value.
        with self._file.open("w", encoding="utf-8", newline="\n") as out:
            out.writelines("\t".join(map(_tsv_field, row)) + "\n" for row in rows)
        cols = ", ".join(f"`{c}`" for c in data.USER_COLUMNS)
        with conn.cursor() as cur:
            loaded = cur.execute(
                f"LOAD DATA LOCAL INFILE %s INTO TABLE `user` CHARACTER SET utf8mb4 ({cols})",
                (str(self._file),),
            )
            cur.execute("SHOW WARNINGS LIMIT 3")
            warnings = cur.fetchall()
        if loaded != count or warnings:
            raise RuntimeError(f"LOAD DATA took {loaded} of {count} rows; warnings: {warnings}")


def _tsv_field(value: object) -> str:
    """One field as LOAD DATA's default format reads it: \\N is NULL, backslash escapes."""
    if value is None:
        return "\\N"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
