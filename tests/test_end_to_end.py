"""What MariaDB itself sees while the service answers: connections opened once, one SELECT per
uncached request; and what a client sees when the schema changes under the service.

Most tests here switch the response cache's storage off (CACHE_TTL_SECONDS=0) or use distinct
keys, because they are about the database path; test_caching.py covers the cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.keys import DATABASE
from service.settings import Settings

from .conftest import SQL, query

Client = TestClient[web.Request, web.Application]


async def pool_sessions(client: Client) -> dict[int, int]:
    """MariaDB's own SELECT count of each pooled connection, by server thread id.

    Per session rather than server-wide, so other clients of a shared server (a benchmark, a
    second test run) cannot blur the count; SHOW STATUS is not itself counted as a SELECT.
    Every pooled connection is borrowed at once, so call it while no request runs."""
    pool = client.app[DATABASE]._pool
    held = [await pool.acquire(5) for _ in range(pool.stats().idle)]
    try:
        sessions = {}
        for conn in held:
            [(_, count)] = await query(conn, "SHOW SESSION STATUS LIKE 'Com_select'")
            sessions[conn.thread_id()] = int(count)
        return sessions
    finally:
        for conn in held:
            pool.release(conn)


def selects_between(before: dict[int, int], after: dict[int, int]) -> int:
    """SELECTs run between two pool_sessions() readings; connections opened in between start
    from their first count."""
    assert set(before) <= set(after), "a pooled connection was closed in between"
    return sum(count - before.get(thread, 0) for thread, count in after.items())


async def test_sequential_requests_reuse_one_connection_and_run_one_select_each(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(CACHE_TTL_SECONDS="0", DB_POOL_MIN_SIZE="1")
    client = await aiohttp_client(create_app(settings))
    await client.get("/acc/")  # the pool is warm after start-up; this proves it serves
    before = await pool_sessions(client)
    paths = ["/acc/", "/user/", "/acc/3", "/acc/?limit=2&after=1"] * 25
    for path in paths:
        response = await client.get(path)
        assert response.status == 200
        await response.read()
    after = await pool_sessions(client)
    assert set(after) == set(before)
    assert len(after) == 1
    assert selects_between(before, after) == len(paths) == 100
    assert client.app[DATABASE].stats().opened_total == 1


async def test_concurrent_requests_stay_within_the_pool(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(
        create_app(make_settings(DB_POOL_SIZE="4", CACHE_TTL_SECONDS="0"))
    )

    async def burst() -> None:
        # 100 distinct keys, so single-flight cannot merge them: 100 queries for 4 connections.
        paths = [f"/user/?limit={n}" for n in range(1, 101)]
        responses = await asyncio.gather(*(client.get(path) for path in paths))
        for response in responses:
            assert response.status == 200
            assert len(await response.json()) == 5 or response.url.query["limit"] in "1234"

    first = await pool_sessions(client)
    await burst()
    second = await pool_sessions(client)
    await burst()
    third = await pool_sessions(client)
    # The first burst may grow the pool up to its maximum, the second opens nothing.
    assert len(first) <= len(second) <= 4
    assert set(third) == set(second)
    assert selects_between(first, third) == 200
    stats = client.app[DATABASE].stats()
    assert stats.in_use == 0
    assert stats.opened_total <= 4


async def test_schema_change_after_start_is_a_clean_500(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], sql: SQL
) -> None:
    sql("DROP TABLE IF EXISTS shrinking")
    sql("CREATE TABLE shrinking (id INT PRIMARY KEY, gone_soon VARCHAR(10))")
    sql("INSERT INTO shrinking VALUES (1, 'x')")
    try:
        client = await aiohttp_client(
            create_app(make_settings(RESOURCES="shrinking", CACHE_TTL_SECONDS="0"))
        )
        assert (await client.get("/shrinking/")).status == 200
        sql("ALTER TABLE shrinking DROP COLUMN gone_soon")
        response = await client.get("/shrinking/")
        assert response.status == 500
        text = await response.text()
        assert await response.json() == {
            "error": {"code": "database_error", "message": "the database rejected the query"}
        }
        assert "SELECT" not in text
        assert "gone_soon" not in text
    finally:
        sql("DROP TABLE IF EXISTS shrinking")


async def test_query_timeout_is_503_and_the_connection_is_not_reused(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], sql: SQL
) -> None:
    client = await aiohttp_client(create_app(make_settings(DB_QUERY_TIMEOUT="0.3")))
    sql("LOCK TABLES acc WRITE")  # the service's SELECT now waits on the lock
    try:
        response = await client.get("/acc/")
        assert response.status == 503
        assert response.headers["Retry-After"].isdigit()
        body = await response.json()
        assert body["error"]["code"] == "database_unavailable"
        assert "0.3 s" in body["error"]["message"]
    finally:
        sql("UNLOCK TABLES")
    stats = client.app[DATABASE].stats()
    assert stats.closed_total == {"timeout": 1}
    assert stats.in_use == 0
    # Another key: /acc/ itself is not retried within a second of its failure (by design).
    response = await client.get("/acc/?limit=10")
    assert response.status == 200
    assert len(await response.json()) == 5


async def test_pool_exhausted_is_503(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(
        create_app(make_settings(DB_POOL_SIZE="1", DB_ACQUIRE_TIMEOUT="0.2"))
    )
    pool = client.app[DATABASE]._pool
    held = await pool.acquire(5)  # the only connection, as a long request would hold it
    try:
        response = await client.get("/user/")
        assert response.status == 503
        assert response.headers["Retry-After"].isdigit()
        assert (await response.json())["error"]["code"] == "database_unavailable"
        assert pool.stats().acquire_timeouts_total == 1
    finally:
        pool.release(held)
    assert (await client.get("/user/1")).status == 200
