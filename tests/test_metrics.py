"""GET /metrics over the real app and a real MariaDB: after a known sequence of requests the
scraped values equal what happened; the pool's numbers agree with what MariaDB itself lists in
PROCESSLIST; an exhausted pool shows its waiters and time-outs; the scrape passes promtool."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.keys import DATABASE
from service.settings import Settings

from .conftest import SQL, prometheus_tool, wait_until

Client = TestClient[web.Request, web.Application]
Labels = frozenset[tuple[str, str]]


class Scrape:
    """One parsed scrape: sample value by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[sample.name, frozenset(sample.labels.items())] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples[name, frozenset(labels.items())]

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self.samples.items() if n == name)


async def scrape(client: Client) -> Scrape:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return Scrape(await response.text())


async def scrape_after(client: Client, requests: int) -> Scrape:
    """A scrape once `requests` responses have been accounted (aiohttp reports a response just
    after its last byte is written, which the client may see first)."""
    for _ in range(100):
        result = await scrape(client)
        if result.total("cmapi_http_requests_total") >= requests:
            return result
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {requests} requests accounted: {result.text}")


async def test_scrape_counts_a_known_sequence(client: Client, sql: SQL) -> None:
    def selects() -> int:
        return sql.status("Com_select")["Com_select"]

    first = await client.get("/acc/")  # MISS
    etag = first.headers["ETag"]
    await client.get("/acc/")  # HIT
    assert (await client.get("/acc/", headers={"If-None-Match": etag})).status == 304  # HIT
    await client.get("/acc/1")  # MISS
    await client.head("/user/")  # MISS
    assert (await client.get("/no/such/path")).status == 404
    assert (await client.post("/acc/")).status == 405
    assert (await client.get("/acc/?limit=zero")).status == 400
    m = await scrape_after(client, 8)

    assert m("cmapi_http_requests_total", route="/acc/", method="GET", status="200") == 2
    assert m("cmapi_http_requests_total", route="/acc/", method="GET", status="304") == 1
    assert m("cmapi_http_requests_total", route="/acc/", method="GET", status="400") == 1
    assert m("cmapi_http_requests_total", route="/acc/{id}", method="GET", status="200") == 1
    assert m("cmapi_http_requests_total", route="/user/", method="HEAD", status="200") == 1
    assert m("cmapi_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert m("cmapi_http_requests_total", route="/acc/", method="POST", status="405") == 1
    assert m.total("cmapi_http_requests_total") == 8  # the scrape itself is not counted yet
    assert m("cmapi_http_request_duration_seconds_count", route="/acc/") == 5  # any method
    assert m("cmapi_cache_requests_total", resource="acc", result="miss") == 2
    assert m("cmapi_cache_requests_total", resource="acc", result="hit") == 2
    assert m("cmapi_cache_requests_total", resource="user", result="miss") == 1
    assert m("cmapi_cache_requests_total", resource="user", result="coalesced") == 0
    assert m("cmapi_db_query_seconds_count", resource="acc") == 2
    assert m("cmapi_db_query_seconds_count", resource="user") == 1
    assert m("cmapi_cache_load_seconds_count", resource="acc") == 2
    assert m("cmapi_db_query_errors_total", resource="acc", kind="timeout") == 0
    assert m("cmapi_cache_entries") == 3
    assert 0 < m("cmapi_cache_bytes") <= m("cmapi_cache_max_bytes") == 64 * 1024 * 1024
    assert m("cmapi_http_requests_in_flight") == 1  # the scrape itself

    # MariaDB agrees on the number of SELECTs: three new keys, then hits only.
    before = selects()
    for path in ("/acc/", "/acc/1", "/user/", "/acc/2", "/user/2"):
        await client.get(path)
    m = await scrape_after(client, 14)
    assert selects() - before == 2
    queries = m("cmapi_db_query_seconds_count", resource="acc")
    assert queries + m("cmapi_db_query_seconds_count", resource="user") == 5


async def test_coalesced_requests_are_counted_as_such(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], sql: SQL
) -> None:
    client = await aiohttp_client(create_app(make_settings(DB_POOL_SIZE="1")))
    sql("LOCK TABLES `acc` WRITE")
    tasks = [asyncio.create_task(client.get("/acc/")) for _ in range(20)]
    try:
        await wait_until(lambda: client.app[DATABASE].stats().in_use == 1)
        await asyncio.sleep(0.05)  # the other 19 have joined the load by now (no more queries)
    finally:
        sql("UNLOCK TABLES")
    assert {r.status for r in await asyncio.gather(*tasks)} == {200}
    m = await scrape_after(client, 20)
    assert m("cmapi_cache_requests_total", resource="acc", result="miss") == 1
    assert m("cmapi_cache_requests_total", resource="acc", result="coalesced") == 19
    assert m("cmapi_db_query_seconds_count", resource="acc") == 1


def processlist(sql: SQL, user: str) -> int:
    rows = sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
    return int(rows[0][0])


def pool_view(m: Scrape) -> tuple[float, float]:
    """(in use + idle, opened - closed) as the scrape says."""
    held = m("cmapi_db_pool_connections", state="in_use") + m(
        "cmapi_db_pool_connections", state="idle"
    )
    return held, m("cmapi_db_connections_opened_total") - m.total(
        "cmapi_db_connections_closed_total"
    )


async def test_pool_gauges_agree_with_mariadb_processlist(
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    sql: SQL,
    password_user: tuple[str, str],
) -> None:
    user, password = password_user  # an account of its own: its sessions are the app's
    settings = make_settings(
        DB_USER=user, DB_PASSWORD=password, DB_POOL_SIZE="3", DB_POOL_MIN_SIZE="1"
    )
    client = await aiohttp_client(create_app(settings))
    m = await scrape(client)
    assert m("cmapi_db_pool_max_connections") == 3
    assert m("cmapi_db_pool_min_connections") == 1
    assert pool_view(m) == (1, 1)
    assert processlist(sql, user) == 1

    # Three distinct keys while the table is locked: three connections, all in use.
    sql("LOCK TABLES `acc` WRITE")
    tasks = [asyncio.create_task(client.get(f"/acc/{n}")) for n in (1, 2, 3)]
    try:
        await wait_until(lambda: client.app[DATABASE].stats().in_use == 3)
        m = await scrape(client)
        assert m("cmapi_db_pool_connections", state="in_use") == 3
        assert pool_view(m) == (3, 3)
        assert processlist(sql, user) == 3
    finally:
        sql("UNLOCK TABLES")
    assert [r.status for r in await asyncio.gather(*tasks)] == [200, 200, 200]

    m = await scrape(client)
    assert m("cmapi_db_pool_connections", state="idle") == 3
    assert m("cmapi_db_pool_connections", state="in_use") == 0
    assert pool_view(m) == (3, 3)
    assert processlist(sql, user) == 3
    assert m("cmapi_db_pool_acquire_seconds_count") >= 4  # start-up introspection included


async def test_exhausted_pool_shows_pending_acquires_and_counts_timeouts(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], sql: SQL
) -> None:
    settings = make_settings(DB_POOL_SIZE="1", DB_ACQUIRE_TIMEOUT="1", DB_QUERY_TIMEOUT="30")
    client = await aiohttp_client(create_app(settings))
    sql("LOCK TABLES `acc` WRITE")
    try:
        holder = asyncio.create_task(client.get("/acc/1"))  # takes the only connection
        await wait_until(lambda: client.app[DATABASE].stats().in_use == 1)
        waiter = asyncio.create_task(client.get("/acc/2"))  # another key: waits for it
        await wait_until(lambda: client.app[DATABASE].stats().pending == 1)
        m = await scrape(client)
        assert m("cmapi_db_pool_pending_acquires") == 1
        assert m("cmapi_db_pool_acquire_timeouts_total") == 0
        timed_out = await waiter
        assert timed_out.status == 503
        assert "no database connection free" in (await timed_out.json())["error"]["message"]
    finally:
        sql("UNLOCK TABLES")
    assert (await holder).status == 200
    m = await scrape(client)
    assert m("cmapi_db_pool_pending_acquires") == 0
    assert m("cmapi_db_pool_acquire_timeouts_total") == 1
    assert m("cmapi_db_query_errors_total", resource="acc", kind="pool") == 1
    assert m("cmapi_cache_requests_total", resource="acc", result="error") == 1
    assert m("cmapi_http_requests_total", route="/acc/{id}", method="GET", status="503") == 1


async def test_openmetrics_when_asked_and_never_compressed(client: Client) -> None:
    response = await client.get(
        "/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).endswith("# EOF\n")
    raw = await client.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert "Content-Encoding" not in raw.headers
    assert b"cmapi_build_info" in await raw.read()


async def test_build_info_and_process_collectors(client: Client) -> None:
    m = await scrape(client)
    (labels,) = [dict(k) for (n, k) in m.samples if n == "cmapi_build_info"]
    assert set(labels) == {"version", "python", "aiohttp"}
    assert m("process_open_fds") > 0
    assert m.total("python_info") == 1


async def test_each_app_has_its_own_registry(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    registry = CollectorRegistry()
    one = await aiohttp_client(create_app(make_settings(), registry=registry))
    two = await aiohttp_client(create_app(make_settings()))
    await one.get("/acc/")
    await scrape_after(one, 1)
    assert (
        registry.get_sample_value(
            "cmapi_cache_requests_total", {"resource": "acc", "result": "miss"}
        )
        == 1
    )
    m = await scrape(two)
    assert m("cmapi_cache_requests_total", resource="acc", result="miss") == 0


async def test_password_is_in_no_scrape(
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    password_user: tuple[str, str],
) -> None:
    user, password = password_user
    client = await aiohttp_client(create_app(make_settings(DB_USER=user, DB_PASSWORD=password)))
    await client.get("/acc/")
    assert password not in (await scrape(client)).text


async def test_scrape_passes_promtool_check_metrics(client: Client) -> None:
    promtool = prometheus_tool("promtool")
    for path in ("/acc/", "/acc/", "/user/1", "/nope", "/acc/?limit=x"):
        await client.get(path)
    text = (await scrape_after(client, 5)).text
    result = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""  # no lint warnings either
