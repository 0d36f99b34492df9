"""The HTTP contract of the resource routes, over the real app and a real database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.settings import Settings

from .conftest import SQL

Client = TestClient[web.Request, web.Application]


async def get_json(client: Client, path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


def assert_error(body: Any, code: str) -> None:
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


@pytest.mark.parametrize("path", ["/acc/", "/acc"])
async def test_list_returns_every_row_ordered_by_key(client: Client, sql: SQL, path: str) -> None:
    expected = [row[0] for row in sql("SELECT id FROM acc ORDER BY id")]
    body = await get_json(client, path)
    assert [row["id"] for row in body] == expected
    assert len(expected) == 5


async def test_list_exposes_every_column_but_secret_looking_ones(client: Client, sql: SQL) -> None:
    columns = [
        r[0]
        for r in sql(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'user' "
            "ORDER BY ORDINAL_POSITION"
        )
    ]
    body = await get_json(client, "/user/")
    assert "password_hash" in columns
    assert list(body[0]) == [c for c in columns if c != "password_hash"]
    raw = await (await client.get("/user/")).text()
    assert "$2b$" not in raw


async def test_secret_column_served_when_configured(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(
        create_app(make_settings(EXPOSE_SECRET_COLUMNS="user.password_hash"))
    )
    body = await get_json(client, "/user/1")
    assert body["password_hash"].startswith("$2b$")


async def test_item_returns_one_object(client: Client) -> None:
    body = await get_json(client, "/acc/4")
    assert body["id"] == 4
    assert body["notes"] == "Tokyo office \N{TOKYO TOWER}"
    assert body["balance"] == "987654.3210"


@pytest.mark.parametrize(
    "path", ["/acc/999", "/acc/abc", "/acc/1.5", "/acc/99999999999999999999999"]
)
async def test_unknown_or_impossible_id_is_404(client: Client, path: str) -> None:
    assert_error(await get_json(client, path, 404), "not_found")


@pytest.mark.parametrize("path", ["/nope/", "/acc/1/extra", "/"])
async def test_unknown_route_is_404_json(client: Client, path: str) -> None:
    assert_error(await get_json(client, path, 404), "not_found")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405_with_allow(client: Client, method: str) -> None:
    response = await client.request(method, "/acc/")
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert_error(await response.json(), "method_not_allowed")


async def test_head_has_headers_and_no_body(client: Client) -> None:
    get = await client.get("/acc/")
    head = await client.head("/acc/")
    assert head.status == 200
    assert head.headers["Content-Type"] == "application/json"
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    assert await head.read() == b""


# -- keyset pages ----------------------------------------------------------------------------


async def test_first_page_links_to_the_next(client: Client) -> None:
    response = await client.get("/acc/?limit=2")
    assert [r["id"] for r in await response.json()] == [1, 2]
    assert response.headers["Link"] == '</acc/?after=2&limit=2>; rel="next"'


async def test_following_the_links_visits_every_row_once(client: Client, sql: SQL) -> None:
    seen: list[int] = []
    path: str | None = "/acc/?limit=2"
    while path is not None:
        response = await client.get(path)
        assert response.status == 200
        seen += [r["id"] for r in await response.json()]
        link = response.headers.get("Link")
        path = link[1 : link.index(">")] if link else None
    assert seen == [r[0] for r in sql("SELECT id FROM acc ORDER BY id")]


async def test_last_page_has_no_link(client: Client) -> None:
    response = await client.get("/acc/?after=3&limit=2")
    assert [r["id"] for r in await response.json()] == [4, 5]
    assert "Link" not in response.headers


async def test_after_past_the_end_is_an_empty_page(client: Client) -> None:
    response = await client.get("/acc/?after=1000&limit=10")
    assert response.status == 200
    assert await response.json() == []
    assert "Link" not in response.headers


async def test_limit_one_and_the_maximum(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(create_app(make_settings(MAX_PAGE_SIZE="5")))
    one = await client.get("/acc/?limit=1")
    assert [r["id"] for r in await one.json()] == [1]
    assert one.headers["Link"] == '</acc/?after=1&limit=1>; rel="next"'
    most = await client.get("/acc/?limit=5")
    assert len(await most.json()) == 5
    assert "Link" not in most.headers
    assert_error(await get_json(client, "/acc/?limit=6", 400), "bad_request")


async def test_parameter_order_does_not_matter(client: Client) -> None:
    a = await (await client.get("/acc/?after=1&limit=2")).read()
    b = await (await client.get("/acc/?limit=2&after=1")).read()
    assert a == b


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=",
        "limit=99999999999999999999",
        "after=abc",
        "after=",
        "after=1;DROP TABLE acc",
        "limit=1&limit=2",
        "foo=1",
        "lmit=2",
    ],
)
async def test_malformed_query_is_400(client: Client, query: str, sql: SQL) -> None:
    body = await get_json(client, f"/acc/?{query}", 400)
    assert_error(body, "bad_request")
    assert sql("SELECT COUNT(*) FROM acc")[0][0] == 5


async def test_item_rejects_query_parameters(client: Client) -> None:
    assert_error(await get_json(client, "/acc/1?limit=1", 400), "bad_request")


# -- JSON type fidelity, on a table whose columns differ from the demo schema -----------------


@pytest.fixture
def odd_table(sql: SQL) -> str:
    sql("DROP TABLE IF EXISTS odd_things")
    sql(
        """CREATE TABLE odd_things (
            code VARCHAR(20) NOT NULL PRIMARY KEY,
            big BIGINT UNSIGNED NULL,
            exact DECIMAL(30, 10) NULL,
            ratio DOUBLE NULL,
            at DATETIME(6) NULL,
            day DATE NULL,
            span TIME(3) NULL,
            blob_value VARBINARY(16) NULL,
            label TEXT NULL,
            flag TINYINT(1) NULL,
            api_key VARCHAR(40) NULL
        ) CHARACTER SET utf8mb4"""
    )
    sql(
        "INSERT INTO odd_things VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            "a-1",
            18446744073709551615,
            "12345678901234567890.0123456789",
            0.5,
            "2024-02-29 23:59:59.123456",
            "1999-12-31",
            "-838:59:59.000",
            b"\x00\xff\x10",
            "emoji \N{PILE OF POO} and \N{FACE WITH TEARS OF JOY} and \u00e9",
            1,
            "hidden",
        ),
    )
    sql("INSERT INTO odd_things (code, exact, span) VALUES ('b/2', 0, '12:30:00')")
    sql("INSERT INTO odd_things (code) VALUES ('c 3')")
    return "odd_things"


async def test_json_types_are_exact(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], odd_table: str
) -> None:
    client = await aiohttp_client(create_app(make_settings(RESOURCES=odd_table)))
    rows = await get_json(client, f"/{odd_table}/")
    assert [r["code"] for r in rows] == ["a-1", "b/2", "c 3"]
    first = rows[0]
    assert "api_key" not in first
    assert first["big"] == 18446744073709551615
    assert first["exact"] == "12345678901234567890.0123456789"
    assert first["ratio"] == 0.5
    assert first["at"] == "2024-02-29T23:59:59.123456"
    assert first["day"] == "1999-12-31"
    assert first["span"] == "-838:59:59"
    assert first["blob_value"] == "AP8Q"  # base64 of 00 ff 10
    assert first["label"] == "emoji \N{PILE OF POO} and \N{FACE WITH TEARS OF JOY} and \u00e9"
    assert first["flag"] == 1
    assert rows[1]["exact"] == "0.0000000000"
    assert rows[1]["span"] == "12:30:00"
    assert all(v is None for k, v in rows[2].items() if k != "code")


async def test_text_keys_page_and_look_up(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], odd_table: str
) -> None:
    client = await aiohttp_client(create_app(make_settings(RESOURCES=odd_table)))
    response = await client.get(f"/{odd_table}/?limit=1&after=a-1")
    assert [r["code"] for r in await response.json()] == ["b/2"]
    assert response.headers["Link"] == f'</{odd_table}/?after=b%2F2&limit=1>; rel="next"'
    follow = await client.get(f"/{odd_table}/?after=b%2F2&limit=1")
    assert [r["code"] for r in await follow.json()] == ["c 3"]
    item = await get_json(client, f"/{odd_table}/c%203")
    assert item["code"] == "c 3"
    assert_error(await get_json(client, f"/{odd_table}/{'x' * 21}", 404), "not_found")
