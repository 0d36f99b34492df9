"""The response cache seen from outside, over the real app and a real MariaDB: single-flight under
concurrency (counted by MariaDB's own Com_select), ETag and 304, the stored gzip copy, the caching
headers, how requests map to cache keys, storage switched off, and what is never cached.

Concurrency is made certain rather than likely: while a test holds a WRITE lock on the tables, the
service's SELECTs wait inside MariaDB, so every request has joined the load before any can finish.
Tests that change rows or need bodies big enough for gzip use a table of their own.

SELECTs are counted by MariaDB itself, but per session rather than server-wide (other clients of a
shared server would blur a global Com_select): every app here has a pool of one connection, and the
Com_select of that session is read through it (SHOW STATUS is not itself counted as a SELECT).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDictProxy
from structlog.testing import capture_logs

from service.app import create_app
from service.cache import ENTRY_OVERHEAD_BYTES, GZIP_MIN_BYTES
from service.keys import CACHE, DATABASE
from service.settings import Settings

from .conftest import SQL, wait_until

Client = TestClient[web.Request, web.Application]
IDENTITY = {"Accept-Encoding": "identity"}
WIDE = "cache_wide"  # this module's own table: 40 rows, a list body of a few KiB
WIDE_ROWS = 40
TAG = re.compile(r'"[A-Za-z0-9_-]+"')
GZIP_TAG = re.compile(r'"[A-Za-z0-9_-]+-gzip"')


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes  # as sent: still gzip-coded when Content-Encoding says so

    @property
    def etag(self) -> str:
        return self.headers["ETag"]


async def fetch(
    client: Client, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> Reply:
    """One request, its body read raw (the test client would otherwise gunzip it)."""
    async with client.request(method, path, headers=headers, auto_decompress=False) as response:
        return Reply(response.status, response.headers, await response.read())


# One pooled connection, so that its session counters are the app's; generous time-outs, because
# tests hold table locks while requests queue for that connection.
POOL_OF_ONE = {"DB_POOL_SIZE": "1", "DB_ACQUIRE_TIMEOUT": "30", "DB_QUERY_TIMEOUT": "30"}


async def selects(client: Client, opened: int = 1) -> int:
    """SELECTs the app has run so far, as MariaDB counts them for the app's one connection, the
    `opened`-th it opened."""
    db = client.app[DATABASE]
    rows = await db.fetch("SHOW SESSION STATUS LIKE 'Com_select'")
    # Still that connection: a new session would have restarted the count.
    assert db.stats().opened_total == opened
    return int(rows[0][1])


async def all_in_flight(
    client: Client, sql: SQL, tables: Iterable[str], paths: list[str]
) -> list[Reply]:
    """Send every request while `tables` are write-locked, so that no load can finish before all
    requests have reached the cache; then unlock and collect the replies."""
    cache = client.app[CACHE]
    sql("LOCK TABLES " + ", ".join(f"`{t}` WRITE" for t in tables))
    tasks = [asyncio.create_task(fetch(client, path)) for path in paths]
    try:
        await wait_until(lambda: cache.stats().waiting == len(paths))
    finally:
        sql("UNLOCK TABLES")
        replies = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Reply) for r in replies), replies
    return [r for r in replies if isinstance(r, Reply)]


async def app_client(
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    overrides: dict[str, str] | None = None,
    **kwargs: Any,
) -> Client:
    settings = make_settings(**{**POOL_OF_ONE, **(overrides or {})})
    client: Client = await aiohttp_client(create_app(settings), **kwargs)
    return client


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """For conftest's `client`: the default cache settings, on a pool of one."""
    return make_settings(**POOL_OF_ONE)


@pytest.fixture
def wide(sql: SQL) -> Iterator[str]:
    """A table of WIDE_ROWS rows whose list body is well over GZIP_MIN_BYTES; dropped after."""
    sql(f"DROP TABLE IF EXISTS {WIDE}")
    sql(f"CREATE TABLE {WIDE} (id INT UNSIGNED PRIMARY KEY, label VARCHAR(100) NOT NULL)")
    for n in range(1, WIDE_ROWS + 1):
        sql(f"INSERT INTO {WIDE} VALUES (%s, %s)", (n, f"row number {n} of the wide table"))
    try:
        yield WIDE
    finally:
        sql(f"DROP TABLE IF EXISTS {WIDE}")


@pytest.fixture
async def wide_client(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], wide: str
) -> Client:
    return await app_client(aiohttp_client, make_settings, {"RESOURCES": f"acc,{wide}"})


# --- single-flight -------------------------------------------------------------------------------


async def test_400_concurrent_requests_on_two_resources_run_two_selects_then_none(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], sql: SQL
) -> None:
    # An unlimited connector: all 400 requests are on the wire at once (the default caps at 100).
    client = await app_client(
        aiohttp_client, make_settings, connector=aiohttp.TCPConnector(limit=0)
    )
    expected = {
        "acc": [r[0] for r in sql("SELECT id FROM acc ORDER BY id")],
        "user": [r[0] for r in sql("SELECT id FROM user ORDER BY id")],
    }
    paths = ["/acc/", "/user/"] * 200
    start = await selects(client)

    replies = await all_in_flight(client, sql, ["acc", "user"], paths)

    assert await selects(client) - start == 2
    for path, reply in zip(paths, replies, strict=True):
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "application/json"
        ids = [row["id"] for row in json.loads(reply.body)]
        assert ids == expected[path.strip("/")]
    for path in ("/acc/", "/user/"):
        outcomes = [r.headers["X-Cache"] for p, r in zip(paths, replies, strict=True) if p == path]
        assert outcomes.count("MISS") == 1
        assert outcomes.count("COALESCED") == 199
        bodies = {r.body for p, r in zip(paths, replies, strict=True) if p == path}
        tags = {r.etag for p, r in zip(paths, replies, strict=True) if p == path}
        assert len(bodies) == len(tags) == 1

    start = await selects(client)
    again = await asyncio.gather(*(fetch(client, path) for path in paths))
    assert await selects(client) - start == 0
    assert [r.headers["X-Cache"] for r in again] == ["HIT"] * 400
    assert [r.body for r in again] == [r.body for r in replies]
    assert client.app[CACHE].stats().entries == 2


# --- validators and 304 --------------------------------------------------------------------------


async def test_repeating_the_etag_gives_304_without_a_body(client: Client) -> None:
    first = await fetch(client, "/acc/")
    assert first.status == 200
    assert TAG.fullmatch(first.etag)
    start = await selects(client)
    again = await fetch(client, "/acc/", {"If-None-Match": first.etag})
    assert again.status == 304
    assert again.body == b""
    assert again.etag == first.etag
    assert again.headers["Cache-Control"] == "no-cache"
    assert again.headers["Vary"] == "Accept-Encoding"
    assert again.headers["X-Cache"] == "HIT"
    assert await selects(client) - start == 0


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("{tag}", id="strong"),
        pytest.param("W/{tag}", id="weak"),
        pytest.param('"x", {tag}', id="list"),
        pytest.param('W/"x", W/{tag}, "y"', id="weak-list"),
        pytest.param("*", id="any"),
    ],
)
async def test_if_none_match_forms_that_match_give_304(client: Client, header: str) -> None:
    tag = (await fetch(client, "/acc/2")).etag
    reply = await fetch(client, "/acc/2", {"If-None-Match": header.format(tag=tag)})
    assert reply.status == 304
    assert reply.body == b""
    assert reply.etag == tag


@pytest.mark.parametrize(
    "header",
    [
        pytest.param('"x"', id="other"),
        pytest.param('"x", "y"', id="other-list"),
        pytest.param("{lower}", id="case-differs"),
        pytest.param("{bare}", id="unquoted"),
        pytest.param('"{bare}x"', id="longer"),
    ],
)
async def test_if_none_match_forms_that_do_not_match_give_200(client: Client, header: str) -> None:
    first = await fetch(client, "/acc/2")
    tag = first.etag
    assert tag.lower() != tag  # the case-differs case compares something
    value = header.format(lower=tag.lower(), bare=tag.strip('"'))
    reply = await fetch(client, "/acc/2", {"If-None-Match": value})
    assert reply.status == 200
    assert reply.body == first.body
    assert b'"Borealis' in reply.body
    assert reply.etag == tag


async def test_item_etag_differs_from_other_items_and_from_the_list(client: Client) -> None:
    tags = {(await fetch(client, path)).etag for path in ("/acc/1", "/acc/2", "/acc/")}
    assert len(tags) == 3
    one = (await fetch(client, "/acc/1")).etag
    reply = await fetch(client, "/acc/2", {"If-None-Match": one})
    assert reply.status == 200


async def test_unchanged_body_keeps_its_etag_across_a_refresh_and_a_change_gets_a_new_one(
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    sql: SQL,
    wide: str,
) -> None:
    overrides = {
        "RESOURCES": wide,
        "CACHE_TTL_SECONDS": "0.05",
        "CACHE_STALE_WHILE_REVALIDATE_SECONDS": "0",
    }
    client = await app_client(aiohttp_client, make_settings, overrides)
    path = f"/{wide}/7"
    first = await fetch(client, path)
    assert first.headers["X-Cache"] == "MISS"

    await asyncio.sleep(0.1)  # past the TTL, and no stale-while-revalidate window
    start = await selects(client)
    again = await fetch(client, path, {"If-None-Match": first.etag})
    assert await selects(client) - start == 1  # it really was loaded again
    assert again.headers["X-Cache"] == "MISS"
    assert again.status == 304
    assert again.etag == first.etag

    sql(f"UPDATE {wide} SET label = 'renamed' WHERE id = 7")
    await asyncio.sleep(0.1)
    changed = await fetch(client, path, {"If-None-Match": first.etag})
    assert changed.status == 200
    assert changed.headers["X-Cache"] == "MISS"
    assert TAG.fullmatch(changed.etag)
    assert changed.etag != first.etag
    assert b'"renamed"' in changed.body

    # The new tag validates from now on; the old one no longer does.
    assert (await fetch(client, path, {"If-None-Match": changed.etag})).status == 304
    assert (await fetch(client, path, {"If-None-Match": first.etag})).status == 200


async def test_a_change_within_the_ttl_is_not_seen_yet(
    wide_client: Client, sql: SQL, wide: str
) -> None:
    path = f"/{wide}/3"
    first = await fetch(wide_client, path)
    sql(f"UPDATE {wide} SET label = 'changed' WHERE id = 3")
    cached = await fetch(wide_client, path, {"If-None-Match": first.etag})
    # Default TTL is 5 s: the stored answer still stands, as documented.
    assert cached.status == 304
    assert cached.headers["X-Cache"] == "HIT"


# --- gzip ----------------------------------------------------------------------------------------


async def test_gzip_copy_is_served_with_its_own_etag_and_decodes_to_the_identity_body(
    wide_client: Client, wide: str
) -> None:
    path = f"/{wide}/"
    plain = await fetch(wide_client, path, IDENTITY)
    assert plain.status == 200
    assert len(plain.body) >= GZIP_MIN_BYTES
    assert "Content-Encoding" not in plain.headers
    assert TAG.fullmatch(plain.etag)
    assert len(json.loads(plain.body)) == WIDE_ROWS

    packed = await fetch(wide_client, path, {"Accept-Encoding": "gzip"})
    assert packed.status == 200
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Vary"] == "Accept-Encoding"
    assert packed.headers["Content-Type"] == "application/json"
    assert packed.etag == plain.etag[:-1] + '-gzip"'
    assert GZIP_TAG.fullmatch(packed.etag)
    assert int(packed.headers["Content-Length"]) == len(packed.body) < len(plain.body)
    assert gzip.decompress(packed.body) == plain.body
    assert packed.headers["X-Cache"] == "HIT"  # one entry holds both codings


@pytest.mark.parametrize(
    ("accept", "coded"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),
        ("*;q=0", False),
        ("deflate, br", False),
        ("identity", False),
    ],
)
async def test_accept_encoding_chooses_the_coding(
    wide_client: Client, wide: str, accept: str, coded: bool
) -> None:
    path = f"/{wide}/"
    plain = await fetch(wide_client, path, IDENTITY)
    reply = await fetch(wide_client, path, {"Accept-Encoding": accept})
    assert reply.status == 200
    assert reply.headers["Vary"] == "Accept-Encoding"
    if coded:
        assert reply.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(reply.body) == plain.body
        assert GZIP_TAG.fullmatch(reply.etag)
    else:
        assert "Content-Encoding" not in reply.headers
        assert reply.body == plain.body
        assert reply.etag == plain.etag


async def test_gzip_etag_in_if_none_match_gives_304(wide_client: Client, wide: str) -> None:
    path = f"/{wide}/"
    packed = await fetch(wide_client, path, {"Accept-Encoding": "gzip"})
    assert GZIP_TAG.fullmatch(packed.etag)
    again = await fetch(
        wide_client, path, {"Accept-Encoding": "gzip", "If-None-Match": packed.etag}
    )
    assert again.status == 304
    assert again.body == b""
    assert again.etag == packed.etag
    assert "Content-Encoding" not in again.headers
    weak = await fetch(
        wide_client, path, {"Accept-Encoding": "gzip", "If-None-Match": "W/" + packed.etag}
    )
    assert weak.status == 304


async def test_small_bodies_are_never_gzipped(client: Client) -> None:
    reply = await fetch(client, "/acc/1", {"Accept-Encoding": "gzip"})
    assert reply.status == 200
    assert len(reply.body) < GZIP_MIN_BYTES
    assert "Content-Encoding" not in reply.headers
    assert TAG.fullmatch(reply.etag)
    assert reply.body.startswith(b'{"id":1')


# --- caching headers ---------------------------------------------------------------------------


def assert_caching_headers(reply: Reply, x_cache: str, cache_status: str) -> None:
    assert reply.headers["X-Cache"] == x_cache
    assert re.fullmatch(cache_status, reply.headers["Cache-Status"]), reply.headers["Cache-Status"]
    assert re.fullmatch(r"[0-9]+", reply.headers["Age"])
    assert reply.headers["Cache-Control"] == "no-cache"
    assert reply.headers["Vary"] == "Accept-Encoding"


async def test_miss_then_hit_headers(client: Client) -> None:
    miss = await fetch(client, "/user/")
    assert_caching_headers(miss, "MISS", r"cm-api; fwd=miss; ttl=[1-5]; stored")
    assert miss.headers["Age"] == "0"
    hit = await fetch(client, "/user/")
    assert_caching_headers(hit, "HIT", r"cm-api; hit; ttl=[1-5]")
    assert hit.etag == miss.etag
    assert hit.body == miss.body


async def test_age_counts_whole_seconds_since_the_load(client: Client) -> None:
    await fetch(client, "/acc/3")
    await asyncio.sleep(1.05)
    hit = await fetch(client, "/acc/3")
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.headers["Age"] == "1"
    assert hit.headers["Cache-Status"] == "cm-api; hit; ttl=4"


async def test_coalesced_headers(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], sql: SQL
) -> None:
    client = await app_client(aiohttp_client, make_settings)
    replies = await all_in_flight(client, sql, ["acc"], ["/acc/4"] * 3)
    miss = [r for r in replies if r.headers["X-Cache"] == "MISS"]
    joiners = [r for r in replies if r.headers["X-Cache"] == "COALESCED"]
    assert (len(miss), len(joiners)) == (1, 2)
    assert_caching_headers(miss[0], "MISS", r"cm-api; fwd=miss; ttl=[1-5]; stored")
    for reply in joiners:
        assert_caching_headers(reply, "COALESCED", r"cm-api; fwd=miss; ttl=[1-5]; collapsed")
        assert reply.etag == miss[0].etag
        assert reply.body == miss[0].body


async def test_stale_while_revalidate_headers_then_the_refreshed_entry_is_a_hit(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    overrides = {"CACHE_TTL_SECONDS": "0.05", "CACHE_STALE_WHILE_REVALIDATE_SECONDS": "30"}
    client = await app_client(aiohttp_client, make_settings, overrides)
    first = await fetch(client, "/acc/5")
    await asyncio.sleep(0.1)
    start = await selects(client)
    stale = await fetch(client, "/acc/5")
    assert_caching_headers(stale, "STALE", r"cm-api; hit; ttl=-1; detail=revalidating")
    assert stale.headers["Age"] == "0"
    assert stale.body == first.body
    cache = client.app[CACHE]
    await wait_until(lambda: cache.stats().in_flight == 0)
    assert cache.stats().refreshes == 1
    assert await selects(client) - start == 1
    fresh = await fetch(client, "/acc/5")
    assert fresh.headers["X-Cache"] == "HIT"


async def test_link_header_is_kept_on_a_cached_page(client: Client) -> None:
    first = await fetch(client, "/acc/?limit=2")
    hit = await fetch(client, "/acc/?limit=2")
    assert first.headers["X-Cache"] == "MISS"
    assert hit.headers["X-Cache"] == "HIT"
    assert first.headers["Link"] == hit.headers["Link"] == '</acc/?after=2&limit=2>; rel="next"'
    assert [row["id"] for row in json.loads(hit.body)] == [1, 2]
    not_modified = await fetch(client, "/acc/?limit=2", {"If-None-Match": hit.etag})
    assert not_modified.status == 304
    assert not_modified.headers["Link"] == hit.headers["Link"]
    # The last page has no next link, cached or not.
    for _ in range(2):
        last = await fetch(client, "/acc/?after=4&limit=2")
        assert "Link" not in last.headers


async def test_head_is_answered_from_the_cache(client: Client) -> None:
    get = await fetch(client, "/user/")
    start = await selects(client)
    head = await fetch(client, "/user/", method="HEAD")
    assert await selects(client) - start == 0
    assert head.status == 200
    assert head.body == b""
    assert head.headers["X-Cache"] == "HIT"
    assert head.headers["Content-Length"] == get.headers["Content-Length"] == str(len(get.body))
    assert head.etag == get.etag
    assert head.headers["Content-Type"] == "application/json"


# --- cache keys ----------------------------------------------------------------------------------


async def test_parameter_order_and_spelling_share_one_entry(client: Client) -> None:
    start = await selects(client)
    first = await fetch(client, "/acc/?after=1&limit=2")
    second = await fetch(client, "/acc/?limit=2&after=1")
    third = await fetch(client, "/acc/?after=01&limit=2")
    assert await selects(client) - start == 1
    assert first.headers["X-Cache"] == "MISS"
    assert second.headers["X-Cache"] == third.headers["X-Cache"] == "HIT"
    assert first.body == second.body == third.body
    assert [row["id"] for row in json.loads(first.body)] == [2, 3]


async def test_item_keys_are_typed(client: Client) -> None:
    start = await selects(client)
    one = await fetch(client, "/acc/1")
    padded = await fetch(client, "/acc/01")
    assert await selects(client) - start == 1
    assert (one.headers["X-Cache"], padded.headers["X-Cache"]) == ("MISS", "HIT")
    assert padded.body == one.body


async def test_different_items_and_pages_are_different_entries(client: Client) -> None:
    start = await selects(client)
    paths = ["/acc/1", "/acc/2", "/user/1", "/acc/", "/acc/?limit=2", "/acc/?after=1"]
    replies = [await fetch(client, path) for path in paths]
    assert await selects(client) - start == len(paths)
    assert [r.headers["X-Cache"] for r in replies] == ["MISS"] * len(paths)
    assert len({r.body for r in replies}) == len(paths)
    assert client.app[CACHE].stats().entries == len(paths)


async def test_list_route_with_and_without_slash_share_one_entry(client: Client) -> None:
    first = await fetch(client, "/acc")
    second = await fetch(client, "/acc/")
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")


# --- storage off ---------------------------------------------------------------------------------


async def test_ttl_zero_loads_every_sequential_request(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await app_client(aiohttp_client, make_settings, {"CACHE_TTL_SECONDS": "0"})
    start = await selects(client)
    replies = [await fetch(client, "/acc/") for _ in range(3)]
    assert await selects(client) - start == 3
    assert [r.headers["X-Cache"] for r in replies] == ["MISS"] * 3
    assert all("stored" not in r.headers["Cache-Status"] for r in replies)
    assert len({r.etag for r in replies}) == 1
    # A validator still works, but it is checked against a fresh load.
    start = await selects(client)
    reply = await fetch(client, "/acc/", {"If-None-Match": replies[0].etag})
    assert reply.status == 304
    assert await selects(client) - start == 1
    assert client.app[CACHE].stats().entries == 0


async def test_ttl_zero_still_runs_one_select_for_a_concurrent_burst(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], sql: SQL
) -> None:
    client = await app_client(aiohttp_client, make_settings, {"CACHE_TTL_SECONDS": "0"})
    start = await selects(client)
    replies = await all_in_flight(client, sql, ["user"], ["/user/"] * 50)
    assert await selects(client) - start == 1
    assert [r.status for r in replies] == [200] * 50
    outcomes = sorted(r.headers["X-Cache"] for r in replies)
    assert outcomes == ["COALESCED"] * 49 + ["MISS"]
    assert len({r.body for r in replies}) == 1
    assert client.app[CACHE].stats().entries == 0
    # Nothing was kept: the next request loads again.
    start = await selects(client)
    assert (await fetch(client, "/user/")).headers["X-Cache"] == "MISS"
    assert await selects(client) - start == 1


# --- big answers ---------------------------------------------------------------------------------


async def test_an_answer_bigger_than_the_cache_is_served_to_a_burst_by_one_select_and_logged(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], sql: SQL, wide: str
) -> None:
    """Not stored, so each later request loads again; concurrent ones still share one load."""
    overrides = {"RESOURCES": f"acc,{wide}", "CACHE_MAX_BYTES": "1024"}
    client = await app_client(aiohttp_client, make_settings, overrides)
    start = await selects(client)
    with capture_logs() as logs:
        replies = await all_in_flight(client, sql, [wide], [f"/{wide}/"] * 20)
    assert await selects(client) - start == 1
    assert [r.status for r in replies] == [200] * 20
    assert len({r.body for r in replies}) == 1
    assert replies[0].headers["Content-Encoding"] == "gzip"
    identity = gzip.decompress(replies[0].body)
    assert len(json.loads(identity)) == WIDE_ROWS
    stats = client.app[CACHE].stats()
    assert (stats.oversize, stats.entries) == (1, 0)
    [logged] = [e for e in logs if e["event"] == "cache_entry_too_large"]
    assert logged["log_level"] == "warning"
    assert logged["key"] == repr((wide, "list", ()))
    size = len(identity) + len(replies[0].body) + ENTRY_OVERHEAD_BYTES  # both copies
    assert (logged["bytes"], logged["max_bytes"]) == (size, 1024)
    start = await selects(client)
    assert (await fetch(client, f"/{wide}/")).headers["X-Cache"] == "MISS"
    assert await selects(client) - start == 1


async def test_a_list_over_max_list_bytes_is_refused_once_per_ttl_and_pages_are_served(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], sql: SQL, wide: str
) -> None:
    overrides = {"RESOURCES": f"acc,{wide}", "MAX_LIST_BYTES": "1024"}
    client = await app_client(aiohttp_client, make_settings, overrides)
    db = client.app[DATABASE]
    replies = await all_in_flight(client, sql, [wide], [f"/{wide}/"] * 20)
    assert [r.status for r in replies] == [400] * 20
    error = json.loads(replies[0].body)["error"]
    assert error["code"] == "result_too_large"
    assert "MAX_LIST_BYTES (1024 bytes" in error["message"]
    assert "?limit=N (at most 1000)" in error["message"]
    assert replies[0].headers["Cache-Control"] == "no-store"
    # Remembered for the TTL: polling clients do not run the query again.
    assert (await fetch(client, f"/{wide}/")).status == 400
    # One load for all of them: its connection, left in the middle of the rows, was closed
    # rather than drained (so the SELECT counter of that session is gone with it).
    assert db.stats().closed_total == {"error": 1}
    # Pages are the way out: each is small, served and cached.
    start = await selects(client, opened=2)
    page = await fetch(client, f"/{wide}/?limit=10")
    assert page.status == 200
    assert len(json.loads(page.body)) == 10
    assert 'rel="next"' in page.headers["Link"]
    assert (await fetch(client, f"/{wide}/?limit=10")).headers["X-Cache"] == "HIT"
    assert await selects(client, opened=2) - start == 1


# --- never cached --------------------------------------------------------------------------------


async def test_missing_item_is_404_every_time_and_not_cached(client: Client) -> None:
    start = await selects(client)
    for _ in range(3):
        reply = await fetch(client, "/acc/999999")
        assert reply.status == 404
        assert reply.headers["Cache-Control"] == "no-store"
        for name in ("ETag", "X-Cache", "Cache-Status", "Age"):
            assert name not in reply.headers
        assert b'"not_found"' in reply.body
    assert await selects(client) - start == 3
    assert client.app[CACHE].stats().entries == 0


async def test_row_added_after_a_404_is_found_at_once(
    wide_client: Client, sql: SQL, wide: str
) -> None:
    path = f"/{wide}/{WIDE_ROWS + 1}"
    assert (await fetch(wide_client, path)).status == 404
    sql(f"INSERT INTO {wide} VALUES (%s, 'late')", (WIDE_ROWS + 1,))
    found = await fetch(wide_client, path)
    assert found.status == 200
    assert found.headers["X-Cache"] == "MISS"


@pytest.mark.parametrize(
    "path",
    [
        "/acc/?limit=0",
        "/acc/?limit=x",
        "/acc/?after=abc",
        "/acc/?bogus=1",
        "/acc/?limit=1&limit=2",
        "/acc/1?x=1",
    ],
)
async def test_bad_parameter_is_400_without_cache_or_database(client: Client, path: str) -> None:
    start = await selects(client)
    for _ in range(2):
        reply = await fetch(client, path)
        assert reply.status == 400
        assert b'"bad_request"' in reply.body
        assert "ETag" not in reply.headers
        assert "X-Cache" not in reply.headers
        assert reply.headers["Cache-Control"] == "no-store"
    assert await selects(client) - start == 0
    stats = client.app[CACHE].stats()
    assert (stats.entries, stats.in_flight, stats.waiting) == (0, 0, 0)
