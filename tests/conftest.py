"""Shared fixtures: a real MariaDB/MySQL server, a uniquely named database per test run (dropped
at the end), settings pointing at it, and a running app.

Which server: DB_HOST/DB_PORT/DB_USER/DB_PASSWORD when set (an account allowed to create
databases), else 127.0.0.1:3306 as root without a password, else a private MariaDB started for
the run (installed from Debian's packages first when there is none and we are root).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Final

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from devtools.mariadb import (
    ServerAddress,
    can_install_packages,
    connect,
    create_database,
    database_server,
    drop_database,
)
from service.access import server_options
from service.app import create_app
from service.drivers import Connection, Row
from service.keys import METRICS
from service.logs import AccessLines
from service.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "config" / "schema.sql"
DEMO_DATA = ROOT / "config" / "demo-data.sql"

ClientFactory = Callable[..., Any]


def _preferred_server() -> ServerAddress:
    env = os.environ
    return ServerAddress(
        host=env.get("DB_HOST", "127.0.0.1"),
        port=int(env.get("DB_PORT", "3306")),
        user=env.get("DB_USER", "root"),
        password=env.get("DB_PASSWORD", ""),
    )


@pytest.fixture(scope="session")
def db_server() -> Iterator[ServerAddress]:
    with database_server(
        prefer=_preferred_server(), allow_install=can_install_packages()
    ) as address:
        yield address


@pytest.fixture(scope="session")
def db_name(db_server: ServerAddress) -> Iterator[str]:
    """A fresh database holding config/schema.sql and the demo rows, unique to this run."""
    name = f"cmapi_test_{uuid.uuid4().hex[:12]}"
    create_database(db_server, name, [SCHEMA, DEMO_DATA])
    try:
        yield name
    finally:
        drop_database(db_server, name)


class SQL:
    """Runs statements on the test database through its own (test-side) connection."""

    def __init__(self, address: ServerAddress, database: str) -> None:
        self.address = address
        self.database = database
        self.conn = connect(address, timeout=10.0, query_timeout=3600.0, database=database)

    def __call__(self, statement: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(statement, args or None)
            return list(cur.fetchall())

    def status(self, *names: str) -> dict[str, int]:
        """MariaDB's own global counters (SHOW GLOBAL STATUS does not count as a SELECT)."""
        rows = self("SHOW GLOBAL STATUS")
        wanted = set(names)
        return {str(k): int(v) for k, v in rows if k in wanted}

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def password_user(sql: SQL, db_name: str) -> Iterator[tuple[str, str]]:
    """A MariaDB account of its own with a password (SELECT on the test database only): its
    connections are told apart from everyone else's, and the password must never leak."""
    user, password = f"cmapi_t_{uuid.uuid4().hex[:8]}", "right-Pa55word"
    for host in ("%", "localhost"):
        sql(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
        sql(f"GRANT SELECT ON `{db_name}`.* TO '{user}'@'{host}'")
    yield user, password
    for host in ("%", "localhost"):
        sql(f"DROP USER IF EXISTS '{user}'@'{host}'")


@pytest.fixture
def sql(db_server: ServerAddress, db_name: str) -> Iterator[SQL]:
    runner = SQL(db_server, db_name)
    yield runner
    runner.close()


def base_env(address: ServerAddress, database: str) -> dict[str, str]:
    # DB_DRIVER from the environment runs the suite on that driver (.ci/run does for aiomysql).
    driver = os.environ.get("DB_DRIVER")
    return {
        **({"DB_DRIVER": driver} if driver else {}),
        "DB_HOST": address.host,
        "DB_PORT": str(address.port),
        "DB_USER": address.user,
        "DB_PASSWORD": address.password,
        "DB_NAME": database,
        "DB_CONNECT_RETRIES": "0",
        "LOG_FORMAT": "json",
    }


def listening_env(
    address: ServerAddress, database: str, credentials: tuple[str, str], port: int
) -> dict[str, str]:
    """base_env for a real process connecting as `credentials` (a user of its own, so its
    sessions can be told apart in PROCESSLIST) and listening on 127.0.0.1:`port`."""
    user, password = credentials
    return {
        **base_env(address, database),
        "DB_USER": user,
        "DB_PASSWORD": password,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
    }


@pytest.fixture
def make_settings(db_server: ServerAddress, db_name: str) -> Callable[..., Settings]:
    """Settings for the test database; keyword arguments override variables by name."""

    def make(**overrides: str) -> Settings:
        return load_settings({**base_env(db_server, db_name), **overrides})

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def access_lines() -> list[dict[str, Any]]:
    """The fields of every access line the test's servers wrote, at every level."""
    return []


@pytest.fixture
def aiohttp_client(
    aiohttp_client: ClientFactory, access_lines: list[dict[str, Any]]
) -> ClientFactory:
    """pytest-aiohttp's factory, serving a cm-api app the way `python -m service` does: with the
    access logger that counts the HTTP metrics and writes the request lines (to
    `access_lines`)."""

    async def make(app: Any, **kwargs: Any) -> Any:
        if isinstance(app, web.Application) and METRICS in app:
            # Started here: aiohttp's TestServer drops the runner arguments given to __init__.
            server = TestServer(app)
            lines = AccessLines(logging.DEBUG, access_lines.append)
            await server.start_server(**server_options(app, lines))
            app = server
        return await aiohttp_client(app, **kwargs)

    return make


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, settings: Settings
) -> TestClient[web.Request, web.Application]:
    app = create_app(settings)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def closed_port() -> int:
    return free_port()


async def query(conn: Connection, statement: str) -> list[Row]:
    """Every row of `statement` run on a pooled connection."""
    await conn.execute(statement, ())
    rows: list[Row] = []
    while chunk := await conn.fetch(100):
        rows += chunk
    return rows


async def connection_id(conn: Connection) -> int:
    [(value,)] = await query(conn, "SELECT CONNECTION_ID()")
    return int(value)


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll `condition` (state outside this process's control, such as a socket's EOF) until it
    holds; fail after `within` seconds. A bound, not a pause: it returns as soon as it holds."""
    step = 0.01
    for _ in range(int(within / step)):
        if condition():
            return
        await asyncio.sleep(step)
    assert condition(), f"not true within {within:g} s"


def spawn_service(env: Mapping[str, str]) -> subprocess.Popen[str]:
    """The real process, `python -m service`, with `env` over this process's environment and
    its stdout and stderr piped as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "service"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def drain(stream: IO[str] | None, into: list[str]) -> threading.Thread:
    """Read a pipe to its end in a thread: an undrained pipe fills up and blocks the service's
    logging, which would be a fault of the test's own making."""

    def run() -> None:
        if stream is not None:
            for line in stream:
                into.append(line)

    thread = threading.Thread(target=run, name="cm-api-output", daemon=True)
    thread.start()
    return thread


def required_tool(name: str, package: str) -> str:
    """The path of command `name`, from `package`. Without it a test fails under CI (which
    installs it) and is skipped elsewhere."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} not found: install {package} (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def prometheus_tool(name: str) -> str:
    """`promtool` or `prometheus`, from Debian's `prometheus` package."""
    return required_tool(name, "Debian's prometheus package")


# Figures a test measured, by heading (name -> value), printed at the end of every run that
# measured them: the README quotes them (tests/test_dashboard.py).
FIGURES: Final = pytest.StashKey[dict[str, dict[str, object]]]()


def report_figures(config: pytest.Config, heading: str, figures: dict[str, object]) -> None:
    config.stash.setdefault(FIGURES, {})[heading] = figures


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for heading, figures in config.stash.get(FIGURES, {}).items():
        terminalreporter.section(heading)
        for name, value in figures.items():
            terminalreporter.write_line(f"  {name}: {value}")
