"""A whole table read straight through one async MySQL driver, as little code as the driver
allows (an unbuffered cursor, fetchmany until empty): what a cold load cannot beat."""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiomysql
import asyncmy
import asyncmy.cursors

from devtools.mariadb import ServerAddress

DRIVERS: Final = ("aiomysql", "asyncmy")
FETCH_ROWS: Final = 1000
CONNECT_TIMEOUT: Final = 10

Chunk = list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class RawFetch:
    driver: str
    runs: list[float]  # seconds from sending the SELECT to its last row, per timed run
    rows: int
    digest: str  # sha256 over the repr of every row in order: equal rows, equal digests

    @property
    def seconds(self) -> float:
        return statistics.median(self.runs)


async def _connect(driver: str, addr: ServerAddress, database: str) -> Any:
    if driver == "aiomysql":
        return await aiomysql.connect(
            host=addr.host,
            port=addr.port,
            user=addr.user,
            password=addr.password,
            db=database,
            charset="utf8mb4",
            connect_timeout=CONNECT_TIMEOUT,
        )
    if driver == "asyncmy":
        return await asyncmy.connect(
            host=addr.host,
            port=addr.port,
            user=addr.user,
            password=addr.password,
            database=database,
            charset="utf8mb4",
            connect_timeout=CONNECT_TIMEOUT,
        )
    raise ValueError(f"unknown driver {driver!r}; known: {', '.join(DRIVERS)}")


def _unbuffered(driver: str) -> Any:
    return aiomysql.SSCursor if driver == "aiomysql" else asyncmy.cursors.SSCursor


async def _read(conn: Any, driver: str, sql: str, consume: Callable[[Chunk], None]) -> float:
    """Run `sql`, handing each chunk to `consume`; seconds from sending it to its last row."""
    async with conn.cursor(_unbuffered(driver)) as cur:
        started = time.perf_counter()
        await cur.execute(sql)
        while chunk := await cur.fetchmany(FETCH_ROWS):
            consume(chunk)
        return time.perf_counter() - started


def _discard(chunk: Chunk) -> None:
    del chunk


async def measure(
    driver: str, addr: ServerAddress, database: str, sql: str, repeats: int
) -> RawFetch:
    """`repeats` timed reads of `sql` on one connection, after an untimed one that digests the
    rows (hashing inside a timed run would time the hashing)."""
    digest = hashlib.sha256()
    count = 0

    def hash_rows(chunk: Chunk) -> None:
        nonlocal count
        count += len(chunk)
        for row in chunk:
            digest.update(repr(row).encode())

    conn = await _connect(driver, addr, database)
    try:
        await _read(conn, driver, sql, hash_rows)
        runs = [await _read(conn, driver, sql, _discard) for _ in range(repeats)]
    finally:
        await conn.ensure_closed()
    return RawFetch(driver, runs, count, digest.hexdigest())


def select_all(table: str, columns: Sequence[str]) -> str:
    """Every row of `table` in primary key order, as the service's list query reads it."""
    return f"SELECT {', '.join(f'`{c}`' for c in columns)} FROM `{table}` ORDER BY `id`"
