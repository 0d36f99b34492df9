"""The database goes away while the service runs: clients get a 503 with a JSON error and
Retry-After, never an empty list, and the service recovers by itself when the database is back.

Uses a private MariaDB started for this module, so it can really be stopped and restarted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools.mariadb import PrivateMariaDB, can_install_packages, create_database
from service.app import create_app
from service.keys import DATABASE
from service.settings import load_settings

from .conftest import DEMO_DATA, SCHEMA, base_env


@pytest.fixture(scope="module")
def private_db() -> Iterator[PrivateMariaDB]:
    server = PrivateMariaDB(allow_install=can_install_packages())
    server.start()
    try:
        create_database(server.address, "cmapi", [SCHEMA, DEMO_DATA])
        yield server
    finally:
        server.stop()


async def test_database_stopped_then_back(
    aiohttp_client: Callable[..., Any], private_db: PrivateMariaDB
) -> None:
    env = base_env(private_db.address, "cmapi")
    # Storage off: this test is about the uncached path.
    settings = load_settings({**env, "DB_CONNECTION_TIMEOUT": "2", "CACHE_TTL_SECONDS": "0"})
    client = await aiohttp_client(create_app(settings))
    assert len(await (await client.get("/acc/")).json()) == 5

    await asyncio.to_thread(private_db.stop_server)
    for path in ("/acc/", "/acc/1", "/user/?limit=2"):
        started = time.monotonic()
        response = await client.get(path)
        assert response.status == 503, path
        assert response.headers["Retry-After"].isdigit()
        body = await response.json()
        assert body["error"]["code"] == "database_unavailable"
        assert time.monotonic() - started < 5  # refused connections fail fast, no hang
    # Still ready: the outage is every replica's. ?verbose and cmapi_db_up say what it is.
    ready = await client.get("/readyz?verbose")
    assert ready.status == 200
    (database,) = [c for c in (await ready.json())["checks"] if c["name"] == "database"]
    assert database["status"] == "degraded"
    assert "refused: nothing accepts connections" in database["message"]
    assert "\ncmapi_db_up 0.0\n" in await (await client.get("/metrics")).text()

    await asyncio.to_thread(private_db.start_server)
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline:
        response = await client.get("/acc/")
        status = response.status
        if status == 200:
            assert len(await response.json()) == 5
            break
        await asyncio.sleep(0.2)
    assert status == 200
    stats = client.app[DATABASE].stats()
    assert stats.in_use == 0
    assert stats.closed_total.get("broken", 0) >= 1  # the connection the restart killed


async def test_cached_answers_outlive_the_database_for_the_stale_if_error_window(
    aiohttp_client: Callable[..., Any], private_db: PrivateMariaDB
) -> None:
    env = base_env(private_db.address, "cmapi")
    settings = load_settings(
        {
            **env,
            "DB_CONNECTION_TIMEOUT": "2",
            "CACHE_TTL_SECONDS": "0.2",
            "CACHE_STALE_WHILE_REVALIDATE_SECONDS": "0",
            "CACHE_STALE_IF_ERROR_SECONDS": "1",
        }
    )
    client = await aiohttp_client(create_app(settings))
    fresh = await client.get("/acc/")
    assert fresh.headers["X-Cache"] == "MISS"
    body = await fresh.read()

    await asyncio.to_thread(private_db.stop_server)
    try:
        loaded = time.monotonic()
        await asyncio.sleep(0.3)  # past the TTL: the next request tries the database
        stale = await client.get("/acc/")
        assert stale.status == 200
        assert stale.headers["X-Cache"] == "STALE"
        assert "detail=stale-if-error" in stale.headers["Cache-Status"]
        assert stale.headers["ETag"] == fresh.headers["ETag"]
        assert await stale.read() == body

        uncached = await client.get("/user/")
        assert uncached.status == 503
        assert (await uncached.json())["error"]["code"] == "database_unavailable"

        # Past TTL + stale-if-error the old answer is no longer good enough.
        await asyncio.sleep(max(0.0, loaded + 1.3 - time.monotonic()))
        expired = await client.get("/acc/")
        assert expired.status == 503
        assert expired.headers["Retry-After"].isdigit()
    finally:
        await asyncio.to_thread(private_db.start_server)
