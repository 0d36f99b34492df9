"""A private MariaDB that records every statement it runs (its general log, kept in a table), for
tests that must show what the database itself saw: how many SELECTs a resource cost, and when.

The shared server's counters (Com_select) move with every test running beside ours, and
turning its general log on would log them all; a server of the test's own has neither problem.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import pymysql

from devtools.mariadb import PrivateMariaDB, ServerAddress, can_install_packages, connect
from devtools.mariadb import create_database as create

from .conftest import DEMO_DATA, SCHEMA

DATABASE: Final = "cmapi"
SERVICE_USER: Final = "cmapi_logged"


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
