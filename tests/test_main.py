"""The real process: start-up failures exit non-zero with one clear line; a healthy start
serves and stops cleanly on a signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.mariadb import ServerAddress
from service.server import is_loopback

from .conftest import SQL, base_env, free_port, listening_env, spawn_service

STARTUP_LIMIT = 30.0


@dataclass
class Exited:
    code: int
    stdout: str
    stderr: str


def run_service(env: dict[str, str], timeout: float = STARTUP_LIMIT) -> Exited:
    """Run `python -m service` to completion (it must exit by itself)."""
    done = subprocess.run(
        [sys.executable, "-m", "service"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Exited(done.returncode, done.stdout, done.stderr)


def test_missing_setting_exits_2_naming_it(db_server: ServerAddress, db_name: str) -> None:
    env = base_env(db_server, db_name)
    env["DB_HOST"] = ""
    result = run_service(env)
    assert result.code == 2
    assert result.stderr.strip().splitlines() == [
        "cm-api: invalid configuration: DB_HOST: is required (MySQL/MariaDB host name or address)"
    ]


def test_console_script_is_the_same_entry_point(db_server: ServerAddress, db_name: str) -> None:
    script = Path(sys.executable).with_name("cm-api")
    env = {**os.environ, **base_env(db_server, db_name), "DB_PORT": "none"}
    done = subprocess.run(
        [str(script)], env=env, capture_output=True, text=True, timeout=STARTUP_LIMIT, check=False
    )
    assert done.returncode == 2
    assert "DB_PORT: expected an integer from 1 to 65535, got 'none'" in done.stderr


def test_invalid_setting_exits_2_naming_it(db_server: ServerAddress, db_name: str) -> None:
    result = run_service({**base_env(db_server, db_name), "DB_POOL_SIZE": "lots"})
    assert result.code == 2
    assert "DB_POOL_SIZE: expected an integer from 1 to 1000, got 'lots'" in result.stderr


def test_missing_table_exits_1_naming_it(db_server: ServerAddress, db_name: str) -> None:
    result = run_service({**base_env(db_server, db_name), "RESOURCES": "acc,invoices"})
    assert result.code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("cm-api: start-up failed: table 'invoices' does not exist")
    assert f"{db_server.host}:{db_server.port}" in line
    assert db_name in line


def test_wrong_password_exits_1_with_clear_line(
    db_server: ServerAddress, db_name: str, password_user: tuple[str, str]
) -> None:
    user, _ = password_user
    wrong = "wrong-S3cret-value"
    env = {
        **base_env(db_server, db_name),
        "DB_USER": user,
        "DB_PASSWORD": wrong,
        "DB_CONNECT_RETRIES": "5",
    }
    started = time.monotonic()
    result = run_service(env)
    assert result.code == 1
    assert time.monotonic() - started < STARTUP_LIMIT
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("cm-api: start-up failed: cannot use MySQL at ")
    assert "Access denied" in line
    assert user in line
    assert wrong not in result.stderr + result.stdout


def test_unknown_database_exits_1(db_server: ServerAddress) -> None:
    result = run_service(base_env(db_server, "cmapi_no_such_database"))
    assert result.code == 1
    assert "Unknown database 'cmapi_no_such_database'" in result.stderr


def test_unreachable_database_exits_1_after_retries() -> None:
    port = free_port()
    env = {
        **base_env(ServerAddress("127.0.0.1", port, "root"), "x"),
        "DB_CONNECT_RETRIES": "2",
        "DB_CONNECT_RETRY_DELAY": "0.2",
    }
    result = run_service(env)
    assert result.code == 1
    assert f"cannot connect to MySQL at 127.0.0.1:{port}" in result.stderr
    assert "after 3 attempt(s)" in result.stderr
    assert result.stdout.count('"database_connect_failed"') == 2


def test_serves_and_stops_on_sigterm(
    db_server: ServerAddress, db_name: str, password_user: tuple[str, str], sql: SQL
) -> None:
    user, password = password_user
    port = free_port()
    env = {
        **listening_env(db_server, db_name, password_user, port),
        "SHUTDOWN_DELAY_SECONDS": "0",  # the drain has its own tests (test_shutdown.py)
        "DB_PASSWROD": "typo-S3cret-value",  # a typo: warned about, its value never shown
    }
    process = spawn_service(env)
    try:
        body = _get_when_up(f"http://127.0.0.1:{port}/acc/", process)
        assert body.startswith(b'[{"id":1,')
        held = sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
        assert held[0][0] >= 1
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill() if process.poll() is None else None
    assert process.returncode == 0, stderr
    assert password not in stdout + stderr
    assert "typo-S3cret-value" not in stdout + stderr
    events = [json.loads(line) for line in stdout.splitlines()]  # every stdout line is JSON
    typos = [e for e in events if e["event"] == "unknown_setting"]
    assert [(e["level"], e["variable"], e["did_you_mean"]) for e in typos] == [
        ("warning", "DB_PASSWROD", "DB_PASSWORD")
    ]
    hidden = [e for e in events if e["event"] == "columns_hidden"]
    assert [(e["table"], e["columns"]) for e in hidden] == [("user", ["password_hash"])]
    started = next(e for e in events if e["event"] == "starting")
    assert started["settings"]["db_password"] == "<redacted>"
    served = [e for e in events if e["event"] == "request" and e["route"] == "/acc/"]
    assert [(e["status"], e["cache"], e["level"]) for e in served] == [(200, "MISS", "info")]
    # Loopback only: nobody else can reach the open data routes, so no warning.
    assert not [e for e in events if e["event"] == "data_routes_open"]
    left = sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
    assert left[0][0] == 0


def test_warns_when_data_routes_are_open_beyond_loopback(
    db_server: ServerAddress, db_name: str, password_user: tuple[str, str]
) -> None:
    port = free_port()
    env = {
        **listening_env(db_server, db_name, password_user, port),
        "HTTP_HOST": "0.0.0.0",
        "SHUTDOWN_DELAY_SECONDS": "0",
    }
    process = spawn_service(env)
    try:
        _get_when_up(f"http://127.0.0.1:{port}/livez", process)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill() if process.poll() is None else None
    assert process.returncode == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    warned = [e for e in events if e["event"] == "data_routes_open"]
    assert [(e["level"], e["address"]) for e in warned] == [("warning", "0.0.0.0")]
    assert "API_TOKENS_FILE" in warned[0]["hint"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("api.internal", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def _get_when_up(url: str, process: subprocess.Popen[str]) -> bytes:
    deadline = time.monotonic() + STARTUP_LIMIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"service exited early: {process.communicate()[1]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bytes(response.read())
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise AssertionError("service did not come up")
