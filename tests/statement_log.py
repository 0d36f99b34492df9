"""A private MariaDB that records every statement it runs (its general log, kept in a table), for
tests that must show what the database itself saw: how many SELECTs a resource cost, and when;
and the real service (`python -m service`) started against it.

The shared server's counters (Com_select) move with every test running beside ours, and
turning its general log on would log them all; a server of the test's own has neither problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import aiohttp
import pymysql
from prometheus_client.parser import text_string_to_metric_families

from devtools.mariadb import PrivateMariaDB, ServerAddress, can_install_packages, connect
from devtools.mariadb import create_database as create

from .conftest import DEMO_DATA, SCHEMA, drain, free_port, listening_env, spawn_service

DATABASE: Final = "cmapi"
SERVICE_USER: Final = "cmapi_logged"
STARTUP_LIMIT: Final = 30.0


@dataclass(frozen=True)
class Select:
    at: datetime  # the server's clock (NOW(6) gives the same clock)
    sql: str


class LoggedMariaDB:
    """The server, its database (schema and demo rows), the service's own account, and a root
    connection that reads the log and changes rows."""

    def __init__(self, server: PrivateMariaDB, password: str) -> None:
        self.server = server
        self.password = password
        self._conn: pymysql.Connection[Any] = connect(
            server.address, timeout=10.0, database=DATABASE
        )
        self._conn.autocommit(True)

    @property
    def address(self) -> ServerAddress:
        return self.server.address

    def execute(self, statement: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cursor:
            cursor.execute(statement, args or None)
            return list(cursor.fetchall())

    def now(self) -> datetime:
        [(now,)] = self.execute("SELECT NOW(6)")
        assert isinstance(now, datetime)
        return now

    def selects(self, table: str, since: datetime | None = None) -> list[Select]:
        """The SELECTs the service's account ran on `table` (after `since`), oldest first."""
        rows = self.execute(
            "SELECT event_time, CONVERT(argument USING utf8mb4) FROM mysql.general_log"
            " WHERE command_type = 'Query' AND user_host LIKE %s AND event_time > %s"
            " ORDER BY event_time",
            (f"{SERVICE_USER}[%", since or datetime.min),
        )
        needle = f"FROM `{table}`"
        return [
            Select(at, sql)
            for at, sql in rows
            if sql.lstrip().upper().startswith("SELECT") and needle in sql
        ]

    def close(self) -> None:
        self._conn.close()


@contextmanager
def logged_mariadb() -> Iterator[LoggedMariaDB]:
    """Start the server, load config/schema.sql and the demo rows into `cmapi`, create the
    service's account (SERVICE_USER, SELECT only); stop it all at the end."""
    server = PrivateMariaDB(
        allow_install=can_install_packages(),
        options=["--general-log=1", "--log-output=TABLE"],
    )
    server.start()
    try:
        create(server.address, DATABASE, [SCHEMA, DEMO_DATA])
        password = f"Logged-{secrets.token_hex(8)}"
        root = connect(server.address, timeout=10.0)
        try:
            with root.cursor() as cursor:
                for host in ("%", "localhost"):
                    cursor.execute(
                        "CREATE USER %s@%s IDENTIFIED BY %s", (SERVICE_USER, host, password)
                    )
                    cursor.execute(f"GRANT SELECT ON `{DATABASE}`.* TO %s@%s", (SERVICE_USER, host))
        finally:
            root.close()
        logged = LoggedMariaDB(server, password)
        try:
            yield logged
        finally:
            logged.close()
    finally:
        server.stop()


@dataclass
class Service:
    """The running service: its base URL, its process and what it wrote (both streams)."""

    url: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def logged_service(
    db: LoggedMariaDB, within: float = STARTUP_LIMIT, **variables: str
) -> AsyncIterator[Service]:
    """`python -m service` on a free port, as SERVICE_USER against `db`, with
    SHUTDOWN_DELAY_SECONDS=0 and `variables`; ready (within `within` s) when yielded, stopped
    (SIGTERM) after."""
    port = free_port()
    env = {
        **listening_env(db.address, DATABASE, (SERVICE_USER, db.password), port),
        "SHUTDOWN_DELAY_SECONDS": "0",
        **variables,
    }
    process = spawn_service(env)
    service = Service(f"http://127.0.0.1:{port}", process)
    drains = [drain(process.stdout, service.output), drain(process.stderr, service.output)]
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(int(within / 0.1)):
                assert process.poll() is None, f"cm-api exited: {''.join(service.output)[-2000:]}"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{service.url}/readyz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("cm-api not ready")
        yield service
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 20.0)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)
        for thread in drains:
            await asyncio.to_thread(thread.join, 10.0)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


async def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the service's /metrics, by name and labels."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        text = await response.text()
    return {
        (s.name, frozenset(s.labels.items())): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
