"""Both drivers (DB_DRIVER) serve the same bytes: the same rows of every column type through the
real service, compared byte for byte, and each driver's connections behave as the pool needs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from service.app import create_app
from service.db import Database
from service.drivers import NAMES
from service.settings import Settings

from .conftest import SQL, query

TABLE = "every_type"

# One value per interesting case of each type: extremes, fractions, zero dates, NULL, 4-byte
# UTF-8, bytes that are no text.
ROWS = [
    (
        1, -9223372036854775808, 18446744073709551615, "-99999999999999999999.9999999999",
        "0.0000000001", 1.5e-300, 0.1, "2038-01-19 03:14:07.999999", "1000-01-01 00:00:00",
        "2024-02-29", "-838:59:59.999999", "838:59:59", b"\x00\xff\x80abc", b"\x00" * 3,
        "\N{PILE OF POO}\N{FACE WITH TEARS OF JOY} é ß 中文", '{"a": [1, 2.5, null]}', "b", "x,z",
        2155, b"\x05", "1970-01-01 00:00:01",
    ),
    (
        2, 0, 0, "0", "0", 0.0, 0.0, "0000-00-00 00:00:00", "9999-12-31 23:59:59",
        "0000-00-00", "00:00:00", "-00:00:01", b"", b"\x01\x02\x03", "", "[]", "a", "",
        1901, b"\x00", "2024-06-01 12:00:00",
    ),
    (3, *([None] * 20)),
]  # fmt: skip


@pytest.fixture
def every_type(sql: SQL) -> Iterator[str]:
    sql(f"DROP TABLE IF EXISTS {TABLE}")
    sql(
        f"""CREATE TABLE {TABLE} (
            id INT NOT NULL PRIMARY KEY,
            small BIGINT NULL, big BIGINT UNSIGNED NULL,
            exact DECIMAL(30, 10) NULL, tiny DECIMAL(11, 10) NULL,
            dbl DOUBLE NULL, flt FLOAT NULL,
            at DATETIME(6) NULL, at0 DATETIME NULL,
            day DATE NULL, span TIME(6) NULL, span0 TIME NULL,
            raw VARBINARY(16) NULL, fixed BINARY(3) NULL,
            label TEXT NULL, doc JSON NULL, choice ENUM('a', 'b') NULL,
            tags SET('x', 'y', 'z') NULL,
            yr YEAR NULL, bits BIT(3) NULL, stamp TIMESTAMP NULL
        ) CHARACTER SET utf8mb4"""
    )
    marks = ", ".join(["%s"] * len(ROWS[0]))
    for row in ROWS:
        sql(f"INSERT INTO {TABLE} VALUES ({marks})", row)
    yield TABLE
    sql(f"DROP TABLE IF EXISTS {TABLE}")


async def served(
    aiohttp_client: Callable[..., Any], settings: Settings, paths: list[str]
) -> list[bytes]:
    client = await aiohttp_client(create_app(settings))
    bodies = []
    for path in paths:
        response = await client.get(path, headers={"Accept-Encoding": "identity"})
        assert response.status == 200, await response.text()
        bodies.append(await response.read())
    await client.close()
    return bodies


async def test_both_drivers_serve_the_same_bytes_for_every_column_type(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], every_type: str
) -> None:
    paths = [f"/{every_type}/", f"/{every_type}/1", f"/{every_type}/2", "/acc/", "/user/"]
    resources = f"{every_type},acc,user"
    asyncmy, aiomysql = [
        await served(aiohttp_client, make_settings(DB_DRIVER=name, RESOURCES=resources), paths)
        for name in ("asyncmy", "aiomysql")
    ]
    assert asyncmy == aiomysql
    # And what they agree on is right (spot checks of the values most easily lost).
    listed = asyncmy[0].decode()
    for fragment in (
        '"small":-9223372036854775808',
        '"big":18446744073709551615',
        '"exact":"-99999999999999999999.9999999999"',
        '"tiny":"0.0000000001"',
        '"at":"2038-01-19T03:14:07.999999"',
        '"stamp":"2024-06-01T12:00:00Z"',  # TIMESTAMP in UTC (tests/test_timezones.py)
        '"at":"0000-00-00 00:00:00.000000"',  # a zero date: the server's text
        '"span":"-838:59:59.999999"',
        '"raw":"AP+AYWJj"',
        '"label":"\N{PILE OF POO}\N{FACE WITH TEARS OF JOY} é ß 中文"',
        '"tags":"x,z"',
        '"yr":2155',
    ):
        assert fragment in listed


@pytest.mark.parametrize("name", NAMES)
async def test_each_driver_runs_statements_and_reports_its_session(
    make_settings: Callable[..., Settings], name: str
) -> None:
    db = Database(make_settings(DB_DRIVER=name))
    conn = await db._connect()
    try:
        [(session,)] = await query(conn, "SELECT CONNECTION_ID()")
        assert conn.thread_id() == session
        assert "mariadb" in conn.server_info().lower()
        assert not conn.closed
        assert not conn.looks_dead()
        await conn.ping()
        settings = await query(conn, "SELECT @@max_statement_time, @@session.time_zone")
        assert settings == [(60.0, "+00:00")]
    finally:
        await conn.ensure_closed()
    assert conn.closed
    assert conn.looks_dead()
