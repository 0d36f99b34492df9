"""/livez and /readyz against a real MariaDB: what each answers when the database is healthy,
refuses logins, or the pool is saturated (ready all along, the trouble shown by ?verbose and
cmapi_db_up, answered without waiting); the background check; shutdown; and that probes
never go through the data cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from structlog.testing import capture_logs

from service.app import create_app
from service.db import Database
from service.dbhealth import keep_checked
from service.health import DEGRADED, FAILED, OK
from service.keys import CACHE, DATABASE, READINESS
from service.request_id import add_request_id
from service.settings import Settings

from .conftest import SQL, wait_until

Client = Any


async def test_livez_answers_without_the_database(client: Client) -> None:
    for method in ("GET", "HEAD"):
        response = await client.request(method, "/livez")
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
        assert "X-Cache" not in response.headers
    assert await (await client.get("/livez")).json() == {"status": "alive"}
    # No database work at all: not even a connection is taken from the pool.
    assert client.app[DATABASE].stats().in_use == 0


async def test_readyz_ready_and_verbose(client: Client) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert await response.json() == {"status": "ready"}
    body = await (await client.get("/readyz?verbose")).json()
    assert body["status"] == "ready"
    checks = {c["name"]: (c["status"], c["message"]) for c in body["checks"]}
    assert list(checks) == ["schema", "database", "pool", "shutdown"]
    assert checks["schema"] == (OK, "2 table(s) verified at start-up")
    assert checks["database"][0] == OK
    assert checks["database"][1].startswith("up: ")
    assert checks["pool"] == (OK, "0 of 8 connections in use, 2 idle")
    assert checks["shutdown"] == (OK, "not started")


async def test_probes_bypass_the_data_cache_and_data_metrics(client: Client) -> None:
    cache = client.app[CACHE]
    before = cache.stats()
    for path in ("/livez", "/readyz", "/readyz?verbose", "/metrics"):
        response = await client.get(path)
        assert response.status == 200, path
        assert "X-Cache" not in response.headers
    assert cache.stats() == before
    scrape = await (await client.get("/metrics")).text()
    cache_lines = [
        line for line in scrape.splitlines() if line.startswith("cmapi_cache_requests_total")
    ]
    assert cache_lines
    assert all(line.endswith(" 0.0") for line in cache_lines)
    # Only the two start-up introspection queries ran (resource "other"); the ping is no query.
    queries = [
        line for line in scrape.splitlines() if line.startswith("cmapi_db_query_seconds_count")
    ]
    assert sorted(queries) == [
        'cmapi_db_query_seconds_count{resource="acc"} 0.0',
        'cmapi_db_query_seconds_count{resource="other"} 2.0',
        'cmapi_db_query_seconds_count{resource="user"} 0.0',
    ]
    assert 'cmapi_http_requests_total{method="GET",route="/readyz",status="200"} 2.0' in scrape


async def test_readyz_stays_ready_while_the_database_refuses_logins(
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    password_user: tuple[str, str],
    sql: SQL,
) -> None:
    """Every replica shares the database: its outage must not empty the Service. It shows in
    ?verbose, cmapi_db_up and one log line, while the data routes answer 503."""
    user, password = password_user
    settings = make_settings(DB_USER=user, DB_PASSWORD=password, CACHE_TTL_SECONDS="0")
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/readyz")).status == 200
    for host in ("%", "localhost"):
        sql(f"ALTER USER '{user}'@'{host}' ACCOUNT LOCK")
    for (pid,) in sql("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,)):
        sql(f"KILL {int(pid)}")

    with capture_logs(processors=[add_request_id]) as logs:
        for _ in range(3):
            assert (await client.get("/acc/")).status == 503
        response = await client.get("/readyz?verbose")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ready"
    database = next(c for c in body["checks"] if c["name"] == "database")
    assert database["status"] == DEGRADED
    assert database["message"].startswith("down for ")
    # MariaDB answers a locked account's login with its own error: the server refused it.
    assert "rejected: the server refused the connection (" in database["message"]
    assert user not in database["message"]
    assert (await client.get("/livez")).status == 200
    scrape = await (await client.get("/metrics")).text()
    assert "\ncmapi_ready 1.0\n" in scrape
    assert "\ncmapi_db_up 0.0\n" in scrape
    # One line for the incident, naming the driver's reason, however many requests fail.
    failing = [e for e in logs if e["event"] == "database_failing"]
    assert len(failing) == 1
    assert "locked" in failing[0]["reason"].lower()
    assert password not in str(logs)

    for host in ("%", "localhost"):
        sql(f"ALTER USER '{user}'@'{host}' ACCOUNT UNLOCK")
    with capture_logs(processors=[add_request_id]) as logs:
        # The cache answers a key's failure again for a second (its retry interval).
        deadline = time.monotonic() + 5
        while (await client.get("/acc/")).status != 200:
            assert time.monotonic() < deadline, "/acc/ not served again"
            await asyncio.sleep(0.1)
    assert [e["event"] for e in logs if e["event"].startswith("database_")] == [
        "database_recovered"
    ]
    body = await (await client.get("/readyz?verbose")).json()
    database = next(c for c in body["checks"] if c["name"] == "database")
    assert database["status"] == OK
    assert database["message"].startswith("up: a query answered in ")
    assert "\ncmapi_db_up 1.0\n" in await (await client.get("/metrics")).text()


async def test_readyz_answers_at_once_while_the_pool_is_saturated(
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    sql: SQL,
) -> None:
    settings = make_settings(
        DB_POOL_SIZE="1", DB_ACQUIRE_TIMEOUT="10", DB_QUERY_TIMEOUT="30", CACHE_TTL_SECONDS="0"
    )
    client = await aiohttp_client(create_app(settings))
    db = client.app[DATABASE]
    # A real slow query holds the only connection (another session locked the table), and a
    # second request waits for it.
    sql("LOCK TABLES acc WRITE")
    try:
        held = asyncio.ensure_future(client.get("/acc/"))
        await wait_until(lambda: db.stats().in_use == 1)
        waiting = asyncio.ensure_future(client.get("/user/"))
        await wait_until(lambda: db.stats().pending == 1)
        started = time.monotonic()
        response = await client.get("/readyz?verbose")
        assert time.monotonic() - started < 1.0  # no pool slot, no query on the probe's path
        assert response.status == 200
        checks = {c["name"]: (c["status"], c["message"]) for c in (await response.json())["checks"]}
        assert checks["pool"] == (
            DEGRADED,
            "saturated: 1 of 1 connections in use, 1 waiting for one",
        )
        assert checks["database"][0] == OK
    finally:
        sql("UNLOCK TABLES")
    assert (await held).status == 200
    assert (await waiting).status == 200
    body = await (await client.get("/readyz?verbose")).json()
    assert [c["status"] for c in body["checks"]] == [OK, OK, OK, OK]


async def test_the_background_check_pings_only_when_nothing_else_spoke(
    make_settings: Callable[..., Settings],
) -> None:
    """The real Database.ping behind a counting wrapper; real time, short interval."""
    db = Database(make_settings())
    await db.start()
    pings = 0

    async def counted() -> float:
        nonlocal pings
        pings += 1
        return await db.ping()

    checking = asyncio.create_task(keep_checked(db.health, counted, interval=0.1))
    try:
        await asyncio.sleep(0.55)  # idle: about one ping per interval
        assert 3 <= pings <= 6
        assert db.health.status().message.startswith("a ping answered in ")
        assert db.health.quiet_for() < 0.2
        pings = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # queries keep telling it: no ping needed
            await db.fetch("SELECT 1")
            await asyncio.sleep(0.02)
        assert pings == 0
        assert db.health.status().message.startswith("a query answered in ")
    finally:
        checking.cancel()
        await asyncio.gather(checking, return_exceptions=True)
        await db.close()


async def test_readyz_fails_at_once_when_shutdown_begins(client: Client) -> None:
    assert (await client.get("/readyz")).status == 200
    client.app[READINESS].start_draining()
    response = await client.get("/readyz?verbose")
    assert response.status == 503
    body = await response.json()
    assert body["error"]["message"] == "shutdown: shutdown has begun"
    statuses = {c["name"]: c["status"] for c in body["checks"]}
    assert statuses == {"schema": OK, "database": OK, "pool": OK, "shutdown": FAILED}
    assert "\ncmapi_ready 0.0\n" in await (await client.get("/metrics")).text()
    # Data is still served during the delay that follows.
    assert (await client.get("/acc/")).status == 200
