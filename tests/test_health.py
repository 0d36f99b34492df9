"""/livez and /readyz against a real MariaDB: what each answers when the database is healthy,
refuses connections, or the pool is exhausted; the ping cache; shutdown; and that probes
never go through the data cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from structlog.testing import capture_logs

from service.app import create_app
from service.db import Database
from service.health import FAILED, OK, SKIPPED, Readiness
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
    assert list(checks) == ["schema", "database", "shutdown"]
    assert checks["schema"] == (OK, "2 table(s) verified at start-up")
    assert checks["database"][0] == OK
    assert checks["database"][1].startswith("ping answered in")
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


async def test_a_probe_storm_costs_one_ping(make_settings: Callable[..., Settings]) -> None:
    """The real Database.ping behind a counting wrapper; the clock is injected so the test
    decides when the cached result has aged (PING_MAX_AGE)."""
    db = Database(make_settings())
    await db.start()
    pings = 0

    async def counted() -> float:
        nonlocal pings
        pings += 1
        return await db.ping()

    now = [100.0]
    readiness = Readiness(counted, schema="checked", clock=lambda: now[0])
    try:
        reports = await asyncio.gather(*(readiness.report() for _ in range(50)))
        assert all(r.ready for r in reports)
        assert pings == 1  # concurrent probes shared one ping
        now[0] += 0.9
        await readiness.report()
        assert pings == 1  # still fresh
        now[0] += 0.2
        await readiness.report()
        assert pings == 2
    finally:
        await readiness.close()
        await db.close()


async def test_readyz_fails_while_the_database_refuses_connections(
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    password_user: tuple[str, str],
    sql: SQL,
) -> None:
    user, password = password_user
    settings = make_settings(DB_USER=user, DB_PASSWORD=password, CACHE_TTL_SECONDS="0")
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/readyz")).status == 200
    for host in ("%", "localhost"):
        sql(f"ALTER USER '{user}'@'{host}' ACCOUNT LOCK")
    for (pid,) in sql("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,)):
        sql(f"KILL {int(pid)}")
    await asyncio.sleep(1.05)  # past the cached ping (PING_MAX_AGE)

    with capture_logs(processors=[add_request_id]) as logs:
        response = await client.get("/readyz?verbose")
        again = await client.get("/readyz")
    assert response.status == 503
    assert response.headers["Retry-After"].isdigit()
    body = await response.json()
    assert body["status"] == "not_ready"
    assert body["error"] == {
        "code": "not_ready",
        "message": "database: cannot connect to the database",
    }
    database = next(c for c in body["checks"] if c["name"] == "database")
    assert database["status"] == FAILED
    assert again.status == 503
    # The liveness probe is unaffected: a database outage must not get pods restarted.
    assert (await client.get("/livez")).status == 200
    scrape = await (await client.get("/metrics")).text()
    assert "\ncmapi_ready 0.0\n" in scrape
    # One line for the transition, naming the driver's reason, however many probes fail.
    not_ready = [e for e in logs if e["event"] == "not_ready"]
    assert len(not_ready) == 1
    assert "locked" in not_ready[0]["details"]["database"].lower()
    assert password not in str(logs)

    for host in ("%", "localhost"):
        sql(f"ALTER USER '{user}'@'{host}' ACCOUNT UNLOCK")
    with capture_logs(processors=[add_request_id]) as logs:
        deadline = asyncio.get_running_loop().time() + 5
        while (await client.get("/readyz")).status != 200:
            assert asyncio.get_running_loop().time() < deadline, "not ready again"
            await asyncio.sleep(0.1)
    assert [e["event"] for e in logs if e["event"] in ("ready_again", "not_ready")] == [
        "ready_again"
    ]
    scrape = await (await client.get("/metrics")).text()
    assert "\ncmapi_ready 1.0\n" in scrape


async def test_readyz_fails_while_the_pool_is_exhausted_past_its_timeout(
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    sql: SQL,
) -> None:
    settings = make_settings(
        DB_POOL_SIZE="1", DB_ACQUIRE_TIMEOUT="0.3", DB_QUERY_TIMEOUT="30", CACHE_TTL_SECONDS="0"
    )
    client = await aiohttp_client(create_app(settings))
    await asyncio.sleep(1.05)  # the start-up ping result has aged
    # A real slow query holds the only connection: the table is locked by another session.
    sql("LOCK TABLES acc WRITE")
    try:
        held = asyncio.ensure_future(client.get("/acc/"))
        db = client.app[DATABASE]
        await wait_until(lambda: db.stats().in_use == 1)
        response = await client.get("/readyz")
        assert response.status == 503
        body = await response.json()
        assert body["error"]["message"] == "database: the connection pool is exhausted"
    finally:
        sql("UNLOCK TABLES")
    assert (await held).status == 200
    await asyncio.sleep(1.05)
    assert (await client.get("/readyz")).status == 200


async def test_readyz_fails_at_once_when_shutdown_begins(client: Client) -> None:
    assert (await client.get("/readyz")).status == 200
    client.app[READINESS].start_draining()
    response = await client.get("/readyz?verbose")
    assert response.status == 503
    body = await response.json()
    assert body["error"]["message"] == "shutdown: shutdown has begun"
    statuses = {c["name"]: c["status"] for c in body["checks"]}
    assert statuses == {"schema": OK, "database": SKIPPED, "shutdown": FAILED}
    assert "\ncmapi_ready 0.0\n" in await (await client.get("/metrics")).text()
    # Data is still served during the delay that follows.
    assert (await client.get("/acc/")).status == 200
