"""Resource building and request parsing (pure functions: no database needed)."""

from __future__ import annotations

import pytest

from service.errors import BadRequest, StartupError
from service.resources import Page, Resource, build_catalog
from service.schema import ColumnInfo, TableInfo

WHERE = "MySQL at h:1, database 'd', user 'u'"


def col(name: str, data_type: str = "varchar", max_length: int | None = 10) -> ColumnInfo:
    return ColumnInfo(name, data_type, data_type, max_length)


def table(name: str, *cols: ColumnInfo, key: tuple[str, ...] = ("id",)) -> TableInfo:
    return TableInfo(name, (col("id", "int", None), *cols), key)


def test_secret_looking_columns_are_hidden_unless_exposed() -> None:
    names = ["Password", "user_passwd", "client_secret", "token_v2", "salt", "pw_hash",
             "api_key", "APIKEY", "name", "hashtag_count"]  # fmt: skip
    info = table("t", *(col(n) for n in names))
    catalog = build_catalog(["t"], {"t": info}, frozenset({("t", "salt")}), WHERE)
    resource = catalog["t"]
    assert resource.columns == ("id", "salt", "name")
    assert set(resource.hidden) == set(names) - {"salt", "name"}


def test_missing_table_names_it() -> None:
    with pytest.raises(StartupError, match=r"table 'orders' does not exist \(MySQL at h:1"):
        build_catalog(["orders"], {}, frozenset(), WHERE)


@pytest.mark.parametrize(("key", "shape"), [((), "no primary key"), (("id", "x"), "composite")])
def test_unusable_primary_key_is_refused(key: tuple[str, ...], shape: str) -> None:
    with pytest.raises(StartupError, match=shape):
        build_catalog(["t"], {"t": table("t", col("x"), key=key)}, frozenset(), WHERE)


def test_secret_looking_primary_key_is_refused_unless_exposed() -> None:
    info = TableInfo("s", (col("token"), col("name")), ("token",))
    with pytest.raises(StartupError, match="EXPOSE_SECRET_COLUMNS"):
        build_catalog(["s"], {"s": info}, frozenset(), WHERE)
    assert build_catalog(["s"], {"s": info}, frozenset({("s", "token")}), WHERE)["s"]


def resource(data_type: str = "int", max_length: int | None = None) -> Resource:
    key = ColumnInfo("id", data_type, data_type, max_length)
    return Resource("t", "t", key, ("id", "name"), ())


def test_sql_quotes_identifiers_and_binds_values() -> None:
    sql, args = resource().list_query(Page(after=5, limit=10))
    assert sql == "SELECT `id`, `name` FROM `t` WHERE `id` > %s ORDER BY `id` LIMIT %s"
    assert args == (5, 11)  # one more row than asked tells whether a next page exists
    assert resource().list_query(Page()) == ("SELECT `id`, `name` FROM `t` ORDER BY `id`", ())
    assert resource().one_query(7) == ("SELECT `id`, `name` FROM `t` WHERE `id` = %s", (7,))


def test_page_parsing_normalises() -> None:
    r = resource()
    a = r.parse_page([("limit", "10"), ("after", "5")], 100, 100)
    b = r.parse_page([("after", "5"), ("limit", "10")], 100, 100)
    assert a == b == Page(after=5, limit=10)
    assert a.normalised() == (("after", "5"), ("limit", "10"))
    assert r.parse_page([], 100, 100) == Page()


@pytest.mark.parametrize(
    "query",
    [
        [("limit", "0")],
        [("limit", "101")],
        [("limit", "-3")],
        [("limit", "+3")],
        [("limit", "\u0661")],  # an Arabic-Indic digit: int() would take it
        [("limit", "1"), ("limit", "1")],
        [("after", "x")],
        [("after", "1" * 25)],
        [("offset", "1")],
        [("LIMIT", "1")],
    ],
)
def test_bad_pages(query: list[tuple[str, str]]) -> None:
    with pytest.raises(BadRequest):
        resource().parse_page(query, 100, 100)


def test_key_parsing_by_type() -> None:
    assert resource().parse_key("42") == 42
    assert resource().parse_key("-1") == -1
    assert resource().parse_key("4x") is None
    assert resource().parse_key("1" * 21) is None
    assert resource().parse_key(str(2**64)) is None
    text = resource("varchar", 3)
    assert text.parse_key("abc") == "abc"
    assert text.parse_key("abcd") is None
    assert text.parse_key("") is None
