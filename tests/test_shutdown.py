"""Graceful shutdown of the real process (`python -m service`): requests in flight when SIGTERM
arrives finish with 200, /readyz turns 503 at once, the listener stays open for
SHUTDOWN_DELAY_SECONDS and then refuses connections, MariaDB sees every connection of the
process closed, and the exit status is 0. A second signal, or requests outliving
SHUTDOWN_GRACE_SECONDS, end it sooner.

Requests are held in flight by a real slow query: the test's own session locks the table, so
the service's SELECTs wait inside MariaDB until it unlocks."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from devtools.mariadb import ServerAddress

from .conftest import SQL, free_port, listening_env, spawn_service

STARTUP_LIMIT = 30.0


@dataclass
class Answer:
    status: int
    body: bytes


@dataclass
class Service:
    process: subprocess.Popen[str]
    port: int
    user: str

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout: float = 60.0) -> Answer:
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as response:
                return Answer(response.status, response.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.read())

    def refuses_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return False
        except ConnectionRefusedError:
            return True

    def events(self) -> list[dict[str, Any]]:
        stdout, _ = self.process.communicate(timeout=30)
        return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture
def start_service(
    db_server: ServerAddress, db_name: str, password_user: tuple[str, str]
) -> Iterator[Callable[..., Service]]:
    user = password_user[0]
    started: list[subprocess.Popen[str]] = []

    def start(**overrides: str) -> Service:
        port = free_port()
        env = {
            **listening_env(db_server, db_name, password_user, port),
            "DB_QUERY_TIMEOUT": "60",
            "CACHE_TTL_SECONDS": "0",
            **overrides,
        }
        process = spawn_service(env)
        started.append(process)
        service = Service(process, port, user)
        deadline = time.monotonic() + STARTUP_LIMIT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"service exited early: {process.communicate()[1]}")
            try:
                if service.get("/readyz", timeout=5).status == 200:
                    return service
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)
        raise AssertionError("service did not become ready")

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def connections_of(sql: SQL, user: str, waiting: bool = False) -> int:
    where = " AND STATE LIKE 'Waiting for table%%lock%%'" if waiting else ""
    rows = sql(
        f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s{where}", (user,)
    )
    return int(rows[0][0])


def wait_for(condition: Callable[[], bool], within: float, what: str) -> float:
    """Poll until `condition` holds; the monotonic time it first held."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {within:g} s")


def hold_requests(
    service: Service, sql: SQL, pool: ThreadPoolExecutor, paths: list[str]
) -> list[Future[Answer]]:
    """Start requests whose queries wait on the table lock `sql` holds; return once MariaDB
    shows every one of them waiting."""
    futures = [pool.submit(service.get, path) for path in paths]
    wait_for(
        lambda: connections_of(sql, service.user, waiting=True) == len(paths),
        10,
        "queries waiting on the lock",
    )
    return futures


def test_sigterm_drains_in_flight_requests_and_exits_0(
    start_service: Callable[..., Service], sql: SQL
) -> None:
    delay = 1.5
    service = start_service(
        SHUTDOWN_DELAY_SECONDS=str(delay), SHUTDOWN_GRACE_SECONDS="30", DB_POOL_SIZE="5"
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        sql("LOCK TABLES acc WRITE")
        try:
            held = hold_requests(service, sql, pool, ["/acc/1", "/acc/2", "/acc/?limit=3"])
            signalled = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            not_ready = wait_for(lambda: service.get("/readyz").status == 503, 1.0, "/readyz 503")
            # Still serving during the delay: a request that needs no locked table is answered.
            assert service.get("/user/").status == 200
            refused = wait_for(service.refuses_connections, delay + 5, "listener closed")
            assert not_ready - signalled < 0.5
            assert refused - signalled >= delay - 0.05
            # Held well past the listener's close: the grace, not luck, keeps them alive.
            time.sleep(0.5)
            assert not any(f.done() for f in held)  # the lock still holds them
        finally:
            sql("UNLOCK TABLES")
        answers = [f.result(timeout=30) for f in held]
    assert [a.status for a in answers] == [200, 200, 200]
    assert json.loads(answers[0].body)["id"] == 1
    assert len(json.loads(answers[2].body)) == 3
    assert service.process.wait(timeout=30) == 0
    assert connections_of(sql, service.user) == 0
    events = service.events()
    names = [e["event"] for e in events]
    order = [names.index(n) for n in ("shutdown_started", "listener_closing", "stopped")]
    assert order == sorted(order)
    served = [(e["path"], e["status"]) for e in events if e["event"] == "request"]
    for path in ("/acc/1", "/acc/2", "/acc/?limit=3"):
        assert (path.split("?")[0], 200) in served
    started = next(e for e in events if e["event"] == "shutdown_started")
    assert (started["signal"], started["delay_s"]) == ("SIGTERM", delay)


def test_requests_outliving_the_grace_are_cut_and_the_process_still_exits_0(
    start_service: Callable[..., Service], sql: SQL
) -> None:
    service = start_service(SHUTDOWN_DELAY_SECONDS="0", SHUTDOWN_GRACE_SECONDS="1")
    with ThreadPoolExecutor(max_workers=2) as pool:
        sql("LOCK TABLES acc WRITE")
        try:
            held = hold_requests(service, sql, pool, ["/acc/"])
            signalled = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            code = service.process.wait(timeout=15)
            exited = time.monotonic()
        finally:
            sql("UNLOCK TABLES")
        with pytest.raises((ConnectionError, urllib.error.URLError, OSError)):
            held[0].result(timeout=10)  # cut: no response, never a fake one
    assert code == 0
    assert exited - signalled < 1 + 5 + 2  # grace + pool close grace + slack
    wait_for(lambda: connections_of(sql, service.user) == 0, 5, "connections closed")


def test_a_second_signal_exits_at_once(start_service: Callable[..., Service], sql: SQL) -> None:
    service = start_service(SHUTDOWN_DELAY_SECONDS="30", SHUTDOWN_GRACE_SECONDS="30")
    service.process.send_signal(signal.SIGTERM)
    wait_for(lambda: service.get("/readyz").status == 503, 1.0, "/readyz 503")
    signalled = time.monotonic()
    service.process.send_signal(signal.SIGINT)
    assert service.process.wait(timeout=5) == 128 + signal.SIGINT
    assert time.monotonic() - signalled < 2
    assert "shutdown_forced" in [e["event"] for e in service.events()]
    # The kernel closed the sockets of the dead process; MariaDB notices at once.
    wait_for(lambda: connections_of(sql, service.user) == 0, 5, "connections closed")


def test_sigterm_during_start_up_stops_the_retries(db_name: str) -> None:
    closed = free_port()
    env = {
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(closed),
        "DB_USER": "nobody",
        "DB_NAME": db_name,
        "DB_CONNECT_RETRIES": "100",
        "DB_CONNECT_RETRY_DELAY": "0.2",
        "HTTP_PORT": str(free_port()),
        "LOG_FORMAT": "json",
    }
    process = spawn_service(env)
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the first failed attempt proves start-up is under way
            if json.loads(line)["event"] == "database_connect_failed":
                break
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        rest = process.communicate()[0]
    assert code == 0
    assert time.monotonic() - signalled < 3
    assert "startup_cancelled" in rest
