"""Long-poll (`Prefer: wait=N` with a current If-None-Match) over the real app and a real
MariaDB: held until the data changes or the wait ends, one reload per TTL however many wait,
capped and bounded by the settings, answered at shutdown, and a client that leaves frees its
place. The 500-client run against a real process is in test_longpoll_process.py.

Rows are changed in a table of this module's own; SELECTs are counted per session on an app
with a pool of one connection (test_caching.selects)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.keys import CHANGES, METRICS
from service.longpoll import requested_wait
from service.settings import Settings

from .conftest import SQL, wait_until
from .test_caching import POOL_OF_ONE, fetch, selects

Client = TestClient[web.Request, web.Application]
TABLE = "longpoll_items"
TTL = 1.0


@pytest.fixture
def items(sql: SQL) -> Iterator[str]:
    sql(f"DROP TABLE IF EXISTS {TABLE}")
    sql(f"CREATE TABLE {TABLE} (id INT UNSIGNED PRIMARY KEY, label VARCHAR(100) NOT NULL)")
    sql(f"INSERT INTO {TABLE} VALUES (1, 'one'), (2, 'two')")
    try:
        yield TABLE
    finally:
        sql(f"DROP TABLE IF EXISTS {TABLE}")


async def app_client(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], **env: str
) -> Client:
    settings = make_settings(
        **{**POOL_OF_ONE, "RESOURCES": TABLE, "CACHE_TTL_SECONDS": str(TTL), **env}
    )
    client: Client = await aiohttp_client(create_app(settings))
    return client


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], items: str
) -> Client:
    return await app_client(aiohttp_client, make_settings)


def waiting(tag: str, seconds: int | str) -> dict[str, str]:
    return {"If-None-Match": tag, "Prefer": f"wait={seconds}", "Accept-Encoding": "identity"}


def ended(client: Client, how: str) -> float:
    return (
        client.app[METRICS].registry.get_sample_value("cmapi_http_long_polls_total", {"ended": how})
        or 0.0
    )


@pytest.mark.parametrize(
    ("values", "seconds"),
    [
        (["wait=10"], 10),
        (['wait="7"'], 7),
        (["respond-async, wait=5"], 5),
        (["return=minimal", "Wait = 3 ; foo=bar"], 3),
        (["wait=0"], 0),
        (["wait=-1"], None),
        (["wait=abc"], None),
        (["wait=1.5"], None),
        (["nowait=5"], None),
        (["handling=lenient"], None),
        ([], None),
    ],
)
def test_the_wait_preference_is_read_as_rfc_7240_writes_it(
    values: list[str], seconds: int | None
) -> None:
    assert requested_wait(values) == seconds


async def test_a_wait_without_a_current_tag_is_answered_at_once(client: Client) -> None:
    began = time.monotonic()
    first = await fetch(client, f"/{TABLE}/", {"Prefer": "wait=20"})
    assert first.status == 200
    assert first.headers["Preference-Applied"] == "wait=20"
    stale = await fetch(client, f"/{TABLE}/", waiting('"not-the-tag"', 20))
    assert stale.status == 200
    assert stale.headers["Preference-Applied"] == "wait=20"
    assert time.monotonic() - began < 2
    plain = await fetch(client, f"/{TABLE}/")
    assert "Preference-Applied" not in plain.headers


async def test_unchanged_data_is_a_304_when_the_wait_ends(client: Client) -> None:
    tag = (await fetch(client, f"/{TABLE}/")).etag
    began = time.monotonic()
    reply = await fetch(client, f"/{TABLE}/", waiting(tag, 2))
    held = time.monotonic() - began
    assert reply.status == 304
    assert reply.headers["Preference-Applied"] == "wait=2"
    assert reply.etag == tag
    assert 1.9 <= held < 4, held
    assert ended(client, "timeout") == 1
    assert client.app[CHANGES].stats().held == 0


async def test_a_change_wakes_every_waiter_within_a_ttl_and_costs_one_select_per_ttl(
    client: Client, sql: SQL
) -> None:
    tag = (await fetch(client, f"/{TABLE}/")).etag
    before = await selects(client)
    began = time.monotonic()
    tasks = [asyncio.create_task(fetch(client, f"/{TABLE}/", waiting(tag, 20))) for _ in range(50)]
    await wait_until(lambda: client.app[CHANGES].stats().held == 50)
    await asyncio.sleep(2.5 * TTL)  # some reloads of unchanged data first
    assert not any(t.done() for t in tasks)
    sql(f"UPDATE {TABLE} SET label = 'changed' WHERE id = 2")
    changed_at = time.monotonic()
    replies = await asyncio.gather(*tasks)
    woken = time.monotonic() - changed_at
    assert {r.status for r in replies} == {200}
    assert all(b'"changed"' in r.body for r in replies)
    assert {r.etag for r in replies} != {tag}
    assert all(r.headers["Preference-Applied"] == "wait=20" for r in replies)
    assert woken <= TTL + 1, woken
    # One reload per TTL for all 50 waiters (+1: a reload may be under way at either end).
    ran = await selects(client) - before
    assert 1 <= ran <= (time.monotonic() - began) / TTL + 1, ran
    assert ended(client, "changed") == 50


async def test_the_wait_is_capped_and_can_be_turned_off(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], items: str
) -> None:
    capped = await app_client(aiohttp_client, make_settings, LONG_POLL_MAX_SECONDS="1")
    tag = (await fetch(capped, f"/{TABLE}/")).etag
    began = time.monotonic()
    reply = await fetch(capped, f"/{TABLE}/", waiting(tag, 600))
    assert reply.status == 304
    assert reply.headers["Preference-Applied"] == "wait=1"
    assert time.monotonic() - began < 3
    off = await app_client(aiohttp_client, make_settings, LONG_POLL_MAX_SECONDS="0")
    tag = (await fetch(off, f"/{TABLE}/")).etag
    began = time.monotonic()
    reply = await fetch(off, f"/{TABLE}/", waiting(tag, 20))
    assert reply.status == 304
    assert "Preference-Applied" not in reply.headers
    assert time.monotonic() - began < 1


async def test_past_the_bound_a_wait_is_answered_at_once_without_preference_applied(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], items: str
) -> None:
    client = await app_client(aiohttp_client, make_settings, LONG_POLL_MAX_HELD="2")
    tag = (await fetch(client, f"/{TABLE}/")).etag
    held = [asyncio.create_task(fetch(client, f"/{TABLE}/", waiting(tag, 3))) for _ in range(2)]
    await wait_until(lambda: client.app[CHANGES].stats().held == 2)
    began = time.monotonic()
    refused = await fetch(client, f"/{TABLE}/", waiting(tag, 3))
    assert refused.status == 304
    assert "Preference-Applied" not in refused.headers
    assert time.monotonic() - began < 1
    changed_body = await fetch(client, f"/{TABLE}/", waiting('"other"', 3))
    assert changed_body.status == 200
    assert "Preference-Applied" not in changed_body.headers  # not honoured: full
    assert ended(client, "refused") == 1
    assert [r.status for r in await asyncio.gather(*held)] == [304, 304]
    scrape = await (await client.get("/metrics")).text()
    assert "cmapi_http_held_requests 0.0" in scrape
    assert "cmapi_http_max_held_requests 2.0" in scrape


async def test_the_gzip_tag_holds_too_and_an_item_wakes_on_its_change_and_deletion(
    client: Client, sql: SQL
) -> None:
    first = await fetch(client, f"/{TABLE}/1", {"Accept-Encoding": "identity"})
    tag = first.etag
    gzip_tag = tag[:-1] + '-gzip"'
    task = asyncio.create_task(fetch(client, f"/{TABLE}/1", waiting(gzip_tag, 20)))
    await wait_until(lambda: client.app[CHANGES].stats().held == 1)
    sql(f"UPDATE {TABLE} SET label = 'uno' WHERE id = 1")
    reply = await task
    assert reply.status == 200
    assert b'"uno"' in reply.body
    task = asyncio.create_task(fetch(client, f"/{TABLE}/1", waiting(reply.etag, 20)))
    await wait_until(lambda: client.app[CHANGES].stats().held == 1)
    sql(f"DELETE FROM {TABLE} WHERE id = 1")
    began = time.monotonic()
    gone = await task
    assert gone.status == 404
    assert time.monotonic() - began <= TTL + 1


async def test_shutdown_answers_every_held_request_at_once(client: Client) -> None:
    tag = (await fetch(client, f"/{TABLE}/")).etag
    tasks = [asyncio.create_task(fetch(client, f"/{TABLE}/", waiting(tag, 30))) for _ in range(20)]
    await wait_until(lambda: client.app[CHANGES].stats().held == 20)
    began = time.monotonic()
    client.app[CHANGES].release()  # what server.serve does on SIGTERM
    replies = await asyncio.gather(*tasks)
    assert time.monotonic() - began < 1
    assert {r.status for r in replies} == {304}
    assert ended(client, "released") == 20
    # Draining: a new wait is not held.
    again = await fetch(client, f"/{TABLE}/", waiting(tag, 30))
    assert again.status == 304
    assert "Preference-Applied" not in again.headers


async def test_a_client_that_leaves_frees_its_place(client: Client) -> None:
    """aiohttp's test server cancels the handler of a client that left; `python -m service`
    does not, and the waiter notices instead (test_longpoll_process.py)."""
    tag = (await fetch(client, f"/{TABLE}/")).etag
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(
            session.get(client.make_url(f"/{TABLE}/"), headers=waiting(tag, 30))
        )
        await wait_until(lambda: client.app[CHANGES].stats().held == 1)
        task.cancel()
    began = time.monotonic()
    await wait_until(lambda: client.app[CHANGES].stats().held == 0, within=5)
    assert time.monotonic() - began < 3
    assert ended(client, "gone") == 1, client.app[CHANGES].stats()


async def test_held_time_is_logged_apart_and_is_not_latency(
    client: Client, access_lines: list[dict[str, Any]]
) -> None:
    tag = (await fetch(client, f"/{TABLE}/")).etag
    await fetch(client, f"/{TABLE}/", waiting(tag, 1))
    await wait_until(lambda: len(access_lines) == 2)
    held = access_lines[1]
    assert held["status"] == 304
    assert held["held_ms"] >= 900
    assert held["duration_ms"] >= held["held_ms"]
    assert access_lines[0]["held_ms"] == 0
    total = client.app[METRICS].registry.get_sample_value(
        "cmapi_http_request_duration_seconds_sum", {"route": f"/{TABLE}/"}
    )
    assert total is not None
    assert total < 0.5, total


async def test_the_document_describes_the_wait(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    operation = document["paths"][f"/{TABLE}/"]["get"]
    defined = document["components"]["parameters"]
    names = {
        (defined[p["$ref"].rpartition("/")[2]] if "$ref" in p else p)["name"]
        for p in operation["parameters"]
    }
    assert {"Prefer", "If-None-Match"} <= names
    for status in ("200", "304"):
        assert "Preference-Applied" in operation["responses"][status]["headers"]
