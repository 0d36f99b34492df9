"""Filters on list routes (`/user/?acc_id=1`) and the `_` cache-buster.

First the readers alone (every type parsed and refused at its edges, each agreeing with the JSON
schema /openapi.json gives it), then over the real app and a real MariaDB: any-of, paging and
the Link header, cache keys (SELECTs counted by MariaDB, as in test_caching.py), the 400s, a
table of every filterable and unfilterable kind of column, bound values and the document.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

import jsonschema_rs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from service.errors import BadRequest
from service.filters import ColumnFilter, Condition, column_filter
from service.keys import CATALOG
from service.resources import Page, Resource, build_catalog
from service.schema import ColumnInfo, TableInfo
from service.settings import Settings

from .conftest import SQL
from .test_caching import POOL_OF_ONE, app_client, fetch, selects
from .test_openapi import Contract

Client = TestClient[web.Request, web.Application]
TYPES = "filter_types"  # this module's table: every kind of column, indexed or not
IDENTITY = {"Accept-Encoding": "identity"}


# -- the readers, and the schemas that describe them ------------------------------------------


def column(
    column_type: str, *, max_length: int | None = None, charset: str | None = None
) -> ColumnInfo:
    data_type = column_type.partition("(")[0].partition(" ")[0]
    return ColumnInfo("c", data_type, column_type, max_length, nullable=True, charset=charset)


def reader(info: ColumnInfo) -> ColumnFilter:
    found = column_filter(info)
    assert isinstance(found, ColumnFilter), found
    return found


# (column, text, the canonical text it is read as, or None when it is refused)
READS = [
    (column("tinyint(4)"), "-128", "-128"),
    (column("tinyint(4)"), "127", "127"),
    (column("tinyint(4)"), "128", None),
    (column("tinyint(4)"), "-129", None),
    (column("tinyint(3) unsigned"), "255", "255"),
    (column("tinyint(3) unsigned"), "-1", None),
    (column("tinyint(3) unsigned"), "007", "7"),
    (column("int(10) unsigned"), "4294967295", "4294967295"),
    (column("int(10) unsigned"), "4294967296", None),
    (column("bigint(20) unsigned"), str(2**64 - 1), str(2**64 - 1)),
    (column("bigint(20) unsigned"), str(2**64), None),
    (column("bigint(20)"), str(-(2**63)), str(-(2**63))),
    (column("bigint(20)"), str(2**63), None),
    (column("int(11)"), "-0", "0"),
    (column("int(11)"), "+1", None),
    (column("int(11)"), " 1", None),
    (column("int(11)"), "1_0", None),
    (column("int(11)"), "1.0", None),
    (column("int(11)"), "\u0661", None),  # an Arabic-Indic digit: int() would take it
    (column("int(11)"), "", None),
    (column("int(11)"), "0x10", None),
    (column("decimal(6,2)"), "9999.99", "9999.99"),
    (column("decimal(6,2)"), "-9999.99", "-9999.99"),
    (column("decimal(6,2)"), "10000", None),
    (column("decimal(6,2)"), "1.5", "1.50"),
    (column("decimal(6,2)"), "0001.5", "1.50"),
    (column("decimal(6,2)"), "-0", "0.00"),
    (column("decimal(6,2)"), "-0.00", "0.00"),
    (column("decimal(6,2)"), "1.234", None),
    (column("decimal(6,2)"), ".5", None),
    (column("decimal(6,2)"), "1.", None),
    (column("decimal(6,2)"), "1e2", None),
    (column("decimal(6,2)"), "+1", None),
    (column("decimal(6,2)"), "NaN", None),
    (column("decimal(6,2)"), "1\n", None),
    (column("decimal(6,2) unsigned"), "-1", None),
    (column("decimal(6,2) unsigned"), "0.01", "0.01"),
    (column("decimal(5,0)"), "-99999", "-99999"),
    (column("decimal(5,0)"), "1.0", None),
    (column("decimal(4,4)"), "0.1234", "0.1234"),
    (column("decimal(4,4)"), "1.0", None),
    (column("decimal(65,30)"), "9" * 35 + "." + "9" * 30, "9" * 35 + "." + "9" * 30),
    (column("decimal(65,30)"), "1", "1." + "0" * 30),
    (column("enum('Big','it''s','small')"), "Big", "Big"),
    (column("enum('Big','it''s','small')"), "it's", "it's"),
    (column("enum('Big','it''s','small')"), "big", None),  # exactly as the rows come back
    (column("enum('Big','it''s','small')"), "", None),
    (column("enum('Big','it''s','small')"), "Big ", None),
    (column("varchar(3)", max_length=3, charset="utf8mb4"), "abc", "abc"),
    (
        column("varchar(3)", max_length=3, charset="utf8mb4"),
        "\N{GRINNING FACE}" * 3,
        "\N{GRINNING FACE}" * 3,
    ),
    (column("varchar(3)", max_length=3, charset="utf8mb4"), "abcd", None),
    (column("varchar(3)", max_length=3, charset="utf8mb4"), "", ""),
    (column("char(2)", max_length=2, charset="utf8mb4"), "' OR", None),
    (column("char(4)", max_length=4, charset="utf8mb4"), "' OR", "' OR"),
    (column("date"), "2024-02-29", "2024-02-29"),
    (column("date"), "2023-02-29", None),
    (column("date"), "0001-01-01", "0001-01-01"),
    (column("date"), "9999-12-31", "9999-12-31"),
    (column("date"), "0000-01-01", None),
    (column("date"), "0000-00-00", None),
    (column("date"), "2024-1-02", None),
    (column("date"), "20240102", None),
    (column("date"), "2024-01-02T00:00:00", None),
    (column("timestamp(3)"), "2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
    (column("timestamp(3)"), "2024-01-02T03:04:05.123000Z", "2024-01-02T03:04:05.123000Z"),
    (column("timestamp(3)"), "2024-01-02T03:04:05.000000Z", "2024-01-02T03:04:05Z"),
    (column("timestamp"), "2024-02-29T23:59:59Z", "2024-02-29T23:59:59Z"),
    (column("timestamp"), "2024-01-02T03:04:05.123Z", None),
    (column("timestamp"), "2024-01-02T03:04:05", None),
    (column("timestamp"), "2024-01-02T03:04:05+00:00", None),
    (column("timestamp"), "2024-01-02 03:04:05Z", None),
    (column("timestamp"), "2024-01-02t03:04:05z", None),
    (column("timestamp"), "2024-01-02T24:00:00Z", None),
    (column("timestamp"), "2024-01-02T23:59:60Z", None),
    (column("timestamp"), "2023-02-29T00:00:00Z", None),
    (column("timestamp"), "0000-01-01T00:00:00Z", None),
]


@pytest.mark.parametrize(("info", "text", "canonical"), READS)
def test_each_type_reads_exactly_its_values(
    info: ColumnInfo, text: str, canonical: str | None
) -> None:
    found = reader(info).read(text)
    assert (None if found is None else found[1]) == canonical


@pytest.mark.parametrize(("info", "text", "canonical"), READS)
def test_the_schema_accepts_exactly_what_the_reader_accepts(
    info: ColumnInfo, text: str, canonical: str | None
) -> None:
    """With the validator schemathesis (.ci/fuzz) checks generated values against. An integer
    parameter is an integer in the schema: its other spellings ("007") are only tolerated."""
    schema = reader(info).schema
    validator = jsonschema_rs.validator_for(dict(schema), validate_formats=True)
    instance: Any = text
    if schema["type"] == "integer":
        if not re.fullmatch(r"-?(0|[1-9][0-9]*)", text) or text == "-0":
            assert not validator.is_valid(text)
            return
        instance = int(text)
    assert validator.is_valid(instance) is (canonical is not None), (schema, text)


def test_values_are_bound_as_their_type() -> None:
    assert reader(column("decimal(6,2)")).read("1.5") == (Decimal("1.50"), "1.50")
    assert reader(column("date")).read("2024-02-29") == (dt.date(2024, 2, 29), "2024-02-29")
    # A TIMESTAMP as the UTC wall time: every session runs with time_zone '+00:00'.
    stamp = reader(column("timestamp(3)")).read("2024-01-02T03:04:05.123000Z")
    assert stamp == (dt.datetime(2024, 1, 2, 3, 4, 5, 123000), "2024-01-02T03:04:05.123000Z")


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        (column("float"), "floating-point values are approximate"),
        (column("double"), "floating-point values are approximate"),
        (column("datetime(6)"), "DATETIME values are written without a zone"),
        (column("varchar(9)", max_length=9, charset="latin1"), "character set is latin1"),
        (column("char(9)", max_length=9, charset="utf8mb3"), "character set is utf8mb3"),
        (column("text", max_length=65535, charset="utf8mb4"), "text values cannot"),
        (column("json"), "json values cannot"),
        (column("bit(3)"), "bit values cannot"),
        (column("varbinary(8)", max_length=8), "varbinary values cannot"),
        (column("time"), "time values cannot"),
    ],
)
def test_inexact_types_are_not_filterable(info: ColumnInfo, reason: str) -> None:
    found = column_filter(info)
    assert isinstance(found, str)
    assert reason in found


def test_too_many_values_and_a_bad_value_are_bad_requests() -> None:
    acc_id = ColumnInfo("acc_id", "int", "int(10) unsigned", None, nullable=False)
    flt = reader(acc_id)
    assert flt.condition(["3", "1", "03", "2"], 4) == Condition(
        "acc_id", (1, 2, 3), ("1", "2", "3")
    )
    with pytest.raises(
        BadRequest, match="acc_id may be given at most 3 times in one request, got 4"
    ):
        flt.condition(["1", "1", "1", "1"], 3)
    message = "acc_id must be an integer from 0 to 4294967295 (int(10) unsigned), got 'x'"
    with pytest.raises(BadRequest, match=re.escape(message)):
        flt.condition(["1", "x"], 3)
    with pytest.raises(BadRequest) as caught:
        flt.condition(["9" * 400], 3)
    assert caught.value.message.endswith(repr("9" * 64))


# -- the catalog and the list request -------------------------------------------------------


def demo_user() -> Resource:
    """A table like the demo's user: indexes on id, acc_id and login; role unindexed; (acc_id,
    role) composite; a secret-looking column with an index of its own."""
    cols = (
        ColumnInfo("id", "int", "int(10) unsigned", None, nullable=False),
        ColumnInfo("acc_id", "int", "int(10) unsigned", None, nullable=False),
        ColumnInfo("login", "varchar", "varchar(64)", 64, nullable=False, charset="utf8mb4"),
        ColumnInfo("role", "varchar", "varchar(32)", 32, nullable=False, charset="utf8mb4"),
        ColumnInfo("api_key", "varchar", "varchar(32)", 32, charset="utf8mb4"),
        ColumnInfo("limit", "int", "int(11)", None),  # a column named like a list parameter
    )
    indexed = frozenset({"id", "acc_id", "login", "api_key", "limit"})
    info = TableInfo("user", cols, ("id",), indexed)
    return build_catalog(["user"], {"user": info}, frozenset(), "here")["user"]


def test_filterable_columns_are_exposed_indexed_and_exactly_readable() -> None:
    user = demo_user()
    assert [f.name for f in user.filters] == ["id", "acc_id", "login"]
    assert dict(user.unfilterable) == {"role": "it is not indexed (no index starts with it)"}


def test_a_list_request_is_normalised_whatever_the_spelling() -> None:
    user = demo_user()
    a = user.parse_page(
        [("acc_id", "2"), ("limit", "5"), ("acc_id", "1"), ("login", "b"), ("login", "a")], 100, 100
    )
    b = user.parse_page(
        [("_", "1"), ("login", "a"), ("acc_id", "01"), ("login", "b"), ("acc_id", "2"),
         ("acc_id", "1"), ("limit", "05"), ("_", "2")],
        100,
        100,
    )  # fmt: skip
    assert a == b
    assert a.normalised() == (
        ("acc_id", "1"), ("acc_id", "2"), ("login", "a"), ("login", "b"), ("limit", "5")
    )  # fmt: skip
    assert user.parse_page([("_", "")], 100, 100) == Page()
    assert user.parse_page([("login", "A"), ("login", "a")], 100, 100).normalised() == (
        ("login", "A"),
        ("login", "a"),
    )  # the cache keys the exact spelling; the collation decides what matches


def test_filters_are_bound_in_and_conditions_before_the_keyset() -> None:
    user = demo_user()
    page = user.parse_page(
        [("login", "x' OR '1'='1"), ("acc_id", "7"), ("acc_id", "3"), ("after", "10"),
         ("limit", "2")],
        100,
        100,
    )  # fmt: skip
    sql, args = user.list_query(page)
    columns = "`id`, `acc_id`, `login`, `role`, `limit`"
    assert sql == (
        f"SELECT {columns} FROM `user` WHERE `acc_id` IN (%s, %s) AND `login` IN (%s)"
        " AND `id` > %s ORDER BY `id` LIMIT %s"
    )
    assert args == (3, 7, "x' OR '1'='1", 10, 3)
    assert user.list_query(user.parse_page([("id", "4")], 100, 100)) == (
        f"SELECT {columns} FROM `user` WHERE `id` IN (%s) ORDER BY `id`",
        (4,),
    )


def test_the_next_link_carries_the_filters() -> None:
    user = demo_user()
    page = user.parse_page([("limit", "2"), ("login", "a b&c"), ("acc_id", "1")], 100, 100)
    link = user.next_link(page, {"id": 9}, "/user/")
    assert link == '</user/?acc_id=1&login=a+b%26c&after=9&limit=2>; rel="next"'


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ([("role", "admin")], "'role' cannot filter this list: it is not indexed"),
        ([("api_key", "x")], "unknown query parameter 'api_key'; filters: id, acc_id, login"),
        ([("colour", "red")], "unknown query parameter 'colour'; filters: id, acc_id, login; "
         "other parameters: after, limit"),
        ([("ACC_ID", "1")], "unknown query parameter 'ACC_ID'"),
        ([("limit", "1"), ("limit", "1")], "query parameter 'limit' given more than once"),
        ([("acc_id", "-1")], "acc_id must be an integer from 0 to 4294967295"),
        ([("login", "x" * 65)], "login must be text of at most 64 characters (varchar(64))"),
    ],
)  # fmt: skip
def test_bad_list_requests_say_what_is_accepted(
    query: list[tuple[str, str]], expected: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        demo_user().parse_page(query, 100, 100)
    assert expected in caught.value.message


# -- over the real app ----------------------------------------------------------------------


async def ids(client: Client, path: str) -> list[int]:
    reply = await fetch(client, path, IDENTITY)
    assert reply.status == 200, reply.body
    return [row["id"] for row in json.loads(reply.body)]


async def error(client: Client, path: str) -> str:
    reply = await fetch(client, path)
    assert reply.status == 400, reply.body
    body = json.loads(reply.body)
    assert body["error"]["code"] == "bad_request"
    message: str = body["error"]["message"]
    return message


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**POOL_OF_ONE)


async def test_repeated_filter_values_are_any_of(client: Client, sql: SQL) -> None:
    assert await ids(client, "/user/?acc_id=1") == [1, 2]
    assert await ids(client, "/user/?acc_id=1&acc_id=3") == [1, 2, 5]
    assert await ids(client, "/user/?acc_id=999") == []
    assert await ids(client, "/acc/?status=active") == [1, 2, 4]
    assert await ids(client, "/acc/?status=active&status=suspended") == [1, 2, 3, 4]
    assert await ids(client, "/user/?login=lgarcia&acc_id=2") == [3]
    assert await ids(client, "/user/?login=lgarcia&acc_id=1") == []
    assert await ids(client, "/user/?id=4&id=2") == [2, 4]
    expected = [r[0] for r in sql("SELECT id FROM user WHERE acc_id IN (1, 4) ORDER BY id")]
    assert await ids(client, "/user/?acc_id=4&acc_id=1") == expected


async def test_pages_of_a_filtered_list_link_to_the_next_filtered_page(client: Client) -> None:
    first = await fetch(client, "/user/?acc_id=3&limit=2&acc_id=1&_=17")
    assert [row["id"] for row in json.loads(first.body)] == [1, 2]
    link = first.headers["Link"]
    assert link == '</user/?acc_id=1&acc_id=3&after=2&limit=2>; rel="next"'
    second = await fetch(client, link[1:].partition(">")[0])
    assert [row["id"] for row in json.loads(second.body)] == [5]
    assert "Link" not in second.headers
    assert await ids(client, "/user/?acc_id=1&after=1") == [2]


async def test_spellings_of_one_filtered_request_share_one_select(client: Client) -> None:
    start = await selects(client)
    paths = [
        "/user/?acc_id=3&acc_id=1&limit=2",
        "/user/?limit=2&acc_id=1&acc_id=3",
        "/user/?acc_id=01&limit=002&acc_id=3&acc_id=1",
        "/user/?acc_id=1&acc_id=3&limit=2&_=1700000000000",
    ]
    replies = [await fetch(client, path) for path in paths]
    assert await selects(client) - start == 1
    assert [r.headers["X-Cache"] for r in replies] == ["MISS", "HIT", "HIT", "HIT"]
    assert len({r.body for r in replies}) == 1
    assert len({r.headers["Link"] for r in replies}) == 1
    # Other values are other entries.
    await fetch(client, "/user/?acc_id=1&limit=2")
    assert await selects(client) - start == 2


async def test_the_cache_buster_shares_the_bare_urls_entry(client: Client) -> None:
    start = await selects(client)
    bare = await fetch(client, "/acc/")
    busted = [await fetch(client, f"/acc/?_={n}") for n in (1, 2)]
    busted.append(await fetch(client, "/acc?_=&_=x"))
    assert await selects(client) - start == 1
    assert [r.headers["X-Cache"] for r in busted] == ["HIT"] * 3
    assert {r.body for r in busted} == {bare.body}

    page = await fetch(client, "/acc/?limit=2&_=5")
    assert page.headers["Link"] == '</acc/?after=2&limit=2>; rel="next"'
    assert (await fetch(client, "/acc/?_=6&limit=2")).headers["X-Cache"] == "HIT"

    item = await fetch(client, "/acc/1")
    again = await fetch(client, "/acc/1?_=1700000000000")
    assert (again.status, again.headers["X-Cache"], again.body) == (200, "HIT", item.body)
    assert await selects(client) - start == 3
    assert "items take none" in await error(client, "/acc/1?_=1&x=1")
    assert "'x'" in await error(client, "/acc/1?x=1&_=1")


async def test_unknown_unindexed_and_malformed_filters_are_400_without_a_query(
    client: Client,
) -> None:
    start = await selects(client)
    role = await error(client, "/user/?role=admin")
    assert role.startswith("'role' cannot filter this list: it is not indexed")
    assert role.endswith("filters: id, acc_id, login; other parameters: after, limit")
    hidden = await error(client, "/user/?password_hash=x")
    assert hidden.startswith("unknown query parameter 'password_hash'; filters: id, acc_id, login")
    notes = await error(client, "/acc/?notes=x")
    assert "filters: id, status" in notes
    assert await error(client, "/user/?acc_id=x") == (
        "acc_id must be an integer from 0 to 4294967295 (int(10) unsigned), got 'x'"
    )
    assert "status must be one of 'active', 'suspended', 'closed'" in await error(
        client, "/acc/?status=ACTIVE"
    )
    assert "got '" + "x" * 64 + "'" in await error(client, "/user/?acc_id=" + "x" * 500)
    assert await selects(client) - start == 0


async def test_more_values_than_the_bound_is_400(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await app_client(aiohttp_client, make_settings, {"FILTER_MAX_VALUES": "3"})
    assert await ids(client, "/user/?acc_id=1&acc_id=2&acc_id=4") == [1, 2, 3, 4]
    message = await error(client, "/user/?acc_id=1&acc_id=2&acc_id=4&acc_id=1")
    assert message.startswith("acc_id may be given at most 3 times in one request, got 4")


async def test_sql_in_a_filter_value_is_a_value(client: Client, sql: SQL) -> None:
    for login in ("' OR ''='", "x' OR 1=1 -- ", "jdoe' OR '1'='1", "jdoe'); DROP TABLE user; --"):
        assert await ids(client, f"/user/?login={quote(login, safe='')}") == []
    assert "status must be one of" in await error(client, "/acc/?status=active'%20OR%20'1'='1")
    assert sql("SELECT COUNT(*) FROM user")[0][0] == 5
    # Plain text, and a case-insensitive collation: the column's own comparison decides.
    assert await ids(client, "/user/?login=JDOE") == [1]
    assert await ids(client, "/user/?login=jdoe%20") == [1]  # PAD SPACE: trailing spaces too


# -- a table of every kind of column ----------------------------------------------------------


@pytest.fixture
def types_table(sql: SQL) -> Iterator[str]:
    sql(f"DROP TABLE IF EXISTS {TYPES}")
    sql(
        f"CREATE TABLE {TYPES} ("
        " id INT UNSIGNED NOT NULL PRIMARY KEY, ti TINYINT NOT NULL, amount DECIMAL(6,2) NULL,"
        " kind ENUM('Big','it''s','small') NULL, code CHAR(4) NULL, label VARCHAR(20) NULL,"
        " day DATE NULL, seen TIMESTAMP(3) NULL, at DATETIME NULL, ratio FLOAT NULL,"
        " legacy VARCHAR(10) CHARACTER SET latin1 NULL, a INT NULL, b INT NULL, words"
        " VARCHAR(50) NULL, note VARCHAR(10) NULL,"
        " KEY (ti), KEY (amount), KEY (kind), KEY (code), KEY (label), KEY (day), KEY (seen),"
        " KEY (at), KEY (ratio), KEY (legacy), KEY ab (a, b), FULLTEXT KEY (words)"
        ") DEFAULT CHARSET utf8mb4 COLLATE utf8mb4_unicode_ci"
    )
    rows = [
        (1, -128, "-9999.99", "Big", "ab", "Ünïcode \N{GRINNING FACE}", "2024-02-29",
         "2024-01-02 03:04:05.123", 1, 1),
        (2, 127, "9999.99", "it's", "AB", "' OR ''='", "0001-01-01", "2038-01-19 03:14:07", 1, 2),
        (3, 0, "0.00", "small", None, "", "9999-12-31", "1970-01-01 00:00:01", 2, 1),
        (4, 0, "1.50", None, "x%_", "label", None, "2024-01-02 03:04:05", None, None),
    ]  # fmt: skip
    for row in rows:
        sql(
            f"INSERT INTO {TYPES} (id, ti, amount, kind, code, label, day, seen, a, b)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, CONVERT_TZ(%s, '+00:00', @@session.time_zone),"
            " %s, %s)",
            row,
        )
    try:
        yield TYPES
    finally:
        sql(f"DROP TABLE IF EXISTS {TYPES}")


@pytest.fixture
async def types_client(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], types_table: str
) -> Client:
    return await app_client(aiohttp_client, make_settings, {"RESOURCES": f"acc,user,{types_table}"})


FILTERABLE = ["id", "ti", "amount", "kind", "code", "label", "day", "seen", "a"]


async def test_which_columns_of_every_kind_filter(types_client: Client) -> None:
    resource = types_client.app[CATALOG][TYPES]
    assert [f.name for f in resource.filters] == FILTERABLE
    reasons = dict(resource.unfilterable)
    assert set(reasons) == {"at", "ratio", "legacy", "b", "words", "note"}
    for name in ("b", "words", "note"):  # 2nd of a composite index; FULLTEXT; none
        assert reasons[name] == "it is not indexed (no index starts with it)"
        assert "it is not indexed" in await error(types_client, f"/{TYPES}/?{name}=1")
    assert "DATETIME values" in await error(types_client, f"/{TYPES}/?at=2024-01-01T00:00:00")
    assert "approximate" in await error(types_client, f"/{TYPES}/?ratio=1")
    assert "latin1" in await error(types_client, f"/{TYPES}/?legacy=x")


async def test_every_written_value_filters_back_to_its_rows(types_client: Client, sql: SQL) -> None:
    """The round trip: each value as a list writes it, sent back as a filter, finds exactly
    the rows the database finds equal to it (NULL finds nothing and is not sent)."""
    rows = json.loads((await fetch(types_client, f"/{TYPES}/", IDENTITY)).body)
    stored = {r[0]: r for r in sql(f"SELECT id, {', '.join(FILTERABLE)} FROM {TYPES}")}
    tried = 0
    for row in rows:
        for position, name in enumerate(FILTERABLE, start=1):
            if row[name] is None:
                continue
            written = row[name] if isinstance(row[name], str) else str(row[name])
            expected = [
                r[0]
                for r in sql(
                    f"SELECT id FROM {TYPES} WHERE {name} = %s ORDER BY id",
                    (stored[row["id"]][position],),
                )
            ]
            assert row["id"] in expected
            found = await ids(types_client, f"/{TYPES}/?{urlencode({name: written})}")
            assert found == expected, (name, written)
            tried += 1
    assert tried == 32  # every non-NULL value of a filterable column


async def test_filters_of_every_kind(types_client: Client) -> None:
    async def find(query: str) -> list[int]:
        return await ids(types_client, f"/{TYPES}/?{query}")

    assert await find("ti=-128&ti=0") == [1, 3, 4]
    assert await find("amount=1.5&amount=-9999.99") == [1, 4]
    assert await find("amount=-0") == [3]
    assert await find("kind=it%27s") == [2]
    assert await find("code=AB") == [1, 2]  # utf8mb4_unicode_ci: case-insensitive
    assert await find("code=x%25_") == [4]  # LIKE's wildcards are plain characters here
    assert await find("code=x%25%25") == []
    assert await find("label=") == [3]
    assert await find("day=2024-02-29&day=9999-12-31") == [1, 3]
    assert await find("seen=2024-01-02T03:04:05Z") == [4]
    assert await find("seen=2024-01-02T03:04:05.123000Z") == [1]
    assert await find("seen=1969-12-31T23:59:59Z") == []  # outside TIMESTAMP's range
    assert await find("seen=2106-02-07T06:28:15Z") == []
    assert await find("a=1&limit=1") == [1]
    assert "ti must be an integer from -128 to 127 (tinyint(4)), got '128'" in await error(
        types_client, f"/{TYPES}/?ti=128"
    )
    assert "amount must be a decimal number with at most 4 digits" in await error(
        types_client, f"/{TYPES}/?amount=1.234"
    )
    assert "day must be a date written YYYY-MM-DD" in await error(
        types_client, f"/{TYPES}/?day=2023-02-29"
    )
    assert "seen must be a UTC time" in await error(
        types_client, f"/{TYPES}/?seen=2024-01-02T03:04:05%2B00:00"
    )


async def test_each_filter_can_use_its_index(types_client: Client, sql: SQL) -> None:
    """The server's plan lists an index for every filter (which one it picks is its choice)."""
    resource = types_client.app[CATALOG][TYPES]
    samples = {
        **{"id": "1", "ti": "0", "amount": "1.5", "kind": "Big", "code": "ab", "label": "x"},
        **{"day": "2024-02-29", "seen": "2024-01-02T03:04:05Z", "a": "1"},
    }
    assert sorted(samples) == sorted(FILTERABLE)
    for name, value in samples.items():
        page = resource.parse_page([(name, value), ("limit", "10")], 100, 100)
        statement, args = resource.list_query(page)
        [plan] = sql("EXPLAIN " + statement, args)
        index = {"id": "PRIMARY", "a": "ab"}.get(name, name)
        assert index in str(plan[4] or "").split(","), (name, plan)


# -- /openapi.json ----------------------------------------------------------------------------


async def test_the_document_describes_each_filter_and_the_cache_buster(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], types_table: str
) -> None:
    client = await app_client(
        aiohttp_client,
        make_settings,
        {"RESOURCES": f"acc,user,{types_table}", "FILTER_MAX_VALUES": "7"},
    )
    document = json.loads((await fetch(client, "/openapi.json", IDENTITY)).body)
    validate(document)
    parameters = document["components"]["parameters"]
    for path, names in (("/user/", ["id", "acc_id", "login"]), ("/acc", ["id", "status"])):
        refs = [p["$ref"] for p in document["paths"][path]["get"]["parameters"]]
        resource = path.strip("/")
        assert refs == [
            "#/components/parameters/limit",
            f"#/components/parameters/{resource}.after",
            *(f"#/components/parameters/{resource}.filter.{n}" for n in names),
            "#/components/parameters/_",
            "#/components/parameters/If-None-Match",
            "#/components/parameters/Prefer",
        ]
    item = [p["$ref"] for p in document["paths"]["/user/{id}"]["get"]["parameters"]]
    assert item == [
        "#/components/parameters/user.id",
        "#/components/parameters/_",
        "#/components/parameters/If-None-Match",
        "#/components/parameters/Prefer",
    ]
    acc_id = parameters["user.filter.acc_id"]
    assert acc_id["name"] == "acc_id"
    assert (acc_id["in"], acc_id["required"], acc_id["style"], acc_id["explode"]) == (
        "query",
        False,
        "form",
        True,
    )
    assert acc_id["schema"] == {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 4294967295},
        "maxItems": 7,
    }
    assert parameters["acc.filter.status"]["schema"]["items"] == {
        "type": "string",
        "enum": ["active", "suspended", "closed"],
    }
    assert parameters["user.filter.login"]["schema"]["items"] == {"type": "string", "maxLength": 64}
    assert parameters[f"{TYPES}.filter.amount"]["schema"]["items"] == {
        "type": "string",
        "pattern": r"^-?0*[0-9]{1,4}(\.[0-9]{1,2})?$",
    }
    assert parameters[f"{TYPES}.filter.seen"]["schema"]["items"]["format"] == "date-time"
    assert f"{TYPES}.filter.at" not in parameters
    assert parameters["_"]["schema"] == {"type": "string"}
    assert "cache-buster" in parameters["_"]["description"]

    contract = Contract(document)
    for path, template in (
        ("/user/?acc_id=1&acc_id=3&limit=1&_=5", "/user/"),
        ("/acc?status=closed", "/acc"),
        (f"/{TYPES}/?seen=2024-01-02T03:04:05.123000Z&kind=Big", f"/{TYPES}/"),
        ("/user/?acc_id=-1", "/user/"),
        ("/user/?role=admin", "/user/"),
        ("/user/2?_=1", "/user/{id}"),
    ):
        await contract.check(await client.get(path), template)
