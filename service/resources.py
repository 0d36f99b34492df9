"""The exposed resources: which table, which columns (and which of them filter a list), how a
request's parameters become a bound-parameter SELECT. Table and column names come only from the
configuration and the start-up introspection, never from a request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final
from urllib.parse import urlencode

from .errors import BadRequest, StartupError
from .filters import ColumnFilter, Condition, column_filter, read_integer
from .schema import INTEGER_TYPES, ColumnInfo, TableInfo, quote_identifier

SECRET_NAME: Final = re.compile(r"password|passwd|secret|token|salt|hash|api_?key", re.IGNORECASE)
# The keys a URL may name (any MySQL integer type; at most this many characters of text): the
# parsing below and the OpenAPI document (openapi.py) both take them from here.
INTEGER_KEY_MIN: Final = -(2**63)
INTEGER_KEY_MAX: Final = 2**64 - 1
MAX_TEXT_KEY: Final = 1024
LIST_PARAMETERS: Final = ("after", "limit")
# jQuery's `cache: false` adds `_=<time>` to every URL: accepted anywhere, never part of a key.
CACHE_BUSTER: Final = "_"


@dataclass(frozen=True)
class Page:
    """A validated list request: rows matching every filter, with key > after (when given), at
    most `limit` of them."""

    after: int | str | None = None
    limit: int | None = None
    filters: tuple[Condition, ...] = ()  # by column name

    def filter_parameters(self) -> list[tuple[str, str]]:
        return [(c.column, text) for c in self.filters for text in c.texts]

    def normalised(self) -> tuple[tuple[str, str], ...]:
        """The parameters in one canonical order, for cache keys and links."""
        items = self.filter_parameters()
        if self.after is not None:
            items.append(("after", str(self.after)))
        if self.limit is not None:
            items.append(("limit", str(self.limit)))
        return tuple(items)


@dataclass(frozen=True)
class Resource:
    name: str
    table: str
    key: ColumnInfo
    columns: tuple[str, ...]  # exposed, in table order
    hidden: tuple[str, ...]  # secret-looking columns not exposed
    # What introspection said of each exposed column (types, nullability): for the OpenAPI
    # document's row schemas. A column missing here is described as any JSON value.
    described: tuple[ColumnInfo, ...] = ()
    filters: tuple[ColumnFilter, ...] = ()  # the filterable columns, in table order
    # Each other exposed column and why it cannot filter: for the 400 that says so.
    unfilterable: tuple[tuple[str, str], ...] = ()

    @property
    def integer_key(self) -> bool:
        return self.key.data_type in INTEGER_TYPES

    @cached_property
    def _filters(self) -> dict[str, ColumnFilter]:
        return {f.name: f for f in self.filters}

    @cached_property
    def _select(self) -> str:
        cols = ", ".join(quote_identifier(c) for c in self.columns)
        return f"SELECT {cols} FROM {quote_identifier(self.table)}"

    def list_query(self, page: Page) -> tuple[str, tuple[object, ...]]:
        """SQL and arguments for a page; one row more than the limit tells whether more follow."""
        key = quote_identifier(self.key.name)
        where: list[str] = []
        args: list[object] = []
        for condition in page.filters:
            places = ", ".join(["%s"] * len(condition.values))
            where.append(f"{quote_identifier(condition.column)} IN ({places})")
            args.extend(condition.values)
        if page.after is not None:
            where.append(f"{key} > %s")
            args.append(page.after)
        sql = f"{self._select} WHERE {' AND '.join(where)}" if where else self._select
        sql += f" ORDER BY {key}"
        if page.limit is not None:
            sql += " LIMIT %s"
            args.append(page.limit + 1)
        return sql, tuple(args)

    def one_query(self, key: int | str) -> tuple[str, tuple[object, ...]]:
        return f"{self._select} WHERE {quote_identifier(self.key.name)} = %s", (key,)

    def parse_key(self, raw: str) -> int | str | None:
        """The typed key value for an id from a URL, or None when no row can have it."""
        if self.integer_key:
            return _integer_key(raw)
        limit = self.key.max_length or MAX_TEXT_KEY
        return raw if 0 < len(raw) <= limit else None

    def parse_page(
        self, query: Iterable[tuple[str, str]], max_page_size: int, max_filter_values: int
    ) -> Page:
        """Validate list parameters; anything unknown, repeated (but a filter) or malformed is a
        BadRequest. A filter may be repeated up to `max_filter_values` times: any of them."""
        single, repeated = self._gather(query)
        filters = tuple(
            self._filters[name].condition(values, max_filter_values)
            for name, values in sorted(repeated.items())
        )
        limit = _limit(single["limit"], max_page_size) if "limit" in single else None
        after = self._after(single["after"]) if "after" in single else None
        return Page(after=after, limit=limit, filters=filters)

    def _gather(
        self, query: Iterable[tuple[str, str]]
    ) -> tuple[dict[str, str], dict[str, list[str]]]:
        """The list parameters by name, and each filter's values; the cache-buster dropped."""
        single: dict[str, str] = {}
        repeated: dict[str, list[str]] = {}
        for name, value in query:
            if name == CACHE_BUSTER:
                continue
            if name in self._filters:
                repeated.setdefault(name, []).append(value)
            elif name not in LIST_PARAMETERS:
                raise BadRequest(self._not_a_parameter(name))
            elif name in single:
                raise BadRequest(f"query parameter {name!r} given more than once")
            else:
                single[name] = value
        return single, repeated

    def _after(self, raw: str) -> int | str:
        if self.integer_key:
            after = _integer_key(raw)
            if after is None:
                raise BadRequest(f"after must be an integer key, got {raw[:32]!r}")
            return after
        if not 0 < len(raw) <= MAX_TEXT_KEY:
            raise BadRequest(f"after must be 1 to {MAX_TEXT_KEY} characters")
        return raw

    def _not_a_parameter(self, name: str) -> str:
        """Why `name` is no parameter of the list: it names no filterable column."""
        filterable = ", ".join(self._filters) or "none on this table"
        accepted = f"filters: {filterable}; other parameters: {', '.join(LIST_PARAMETERS)}"
        reason = dict(self.unfilterable).get(name)
        if reason is None:  # hidden columns too: their names are not told
            return f"unknown query parameter {name[:64]!r}; {accepted}"
        return f"{name!r} cannot filter this list: {reason}; {accepted}"

    def next_link(self, page: Page, last: Mapping[str, Any] | None, path: str) -> str | None:
        """RFC 8288 `Link` value for the page after the one ending with row `last`, when the
        query found more rows than the limit (else None is passed)."""
        if page.limit is None or last is None:
            return None
        query = urlencode(
            [
                *page.filter_parameters(),
                ("after", _key_text(last[self.key.name])),
                ("limit", str(page.limit)),
            ]
        )
        return f'<{path}?{query}>; rel="next"'


def _limit(raw: str, max_page_size: int) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", raw) or not 1 <= int(raw) <= max_page_size:
        raise BadRequest(f"limit must be an integer from 1 to {max_page_size}, got {raw[:32]!r}")
    return int(raw)


def _integer_key(raw: str) -> int | None:
    """The integer in `raw` when it is plain decimal within MySQL's integer range, else None."""
    return read_integer(raw, INTEGER_KEY_MIN, INTEGER_KEY_MAX)


def _key_text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


@dataclass(frozen=True)
class Catalog:
    resources: Mapping[str, Resource]

    def __getitem__(self, name: str) -> Resource:
        return self.resources[name]


def build_catalog(
    names: Iterable[str],
    tables: Mapping[str, TableInfo],
    expose_secret_columns: frozenset[tuple[str, str]],
    where: str,
) -> Catalog:
    """Check each configured table and decide its exposed columns; StartupError on a problem."""
    resources: dict[str, Resource] = {}
    for name in names:
        info = tables.get(name)
        if info is None:
            raise StartupError(f"table {name!r} does not exist ({where}); check RESOURCES")
        if len(info.primary_key) != 1:
            shape = "no primary key" if not info.primary_key else "a composite primary key"
            raise StartupError(
                f"table {name!r} has {shape} ({where}); cm-api pages and looks rows up by a "
                "one-column primary key"
            )
        key_name = info.primary_key[0]
        exposed: list[ColumnInfo] = []
        hidden: list[str] = []
        for column in info.columns:
            secret = SECRET_NAME.search(column.name) is not None
            if secret and (name, column.name) not in expose_secret_columns:
                hidden.append(column.name)
            else:
                exposed.append(column)
        if key_name in hidden:
            raise StartupError(
                f"table {name!r}: its primary key {key_name!r} looks secret and would show in "
                f"URLs; list {name}.{key_name} in EXPOSE_SECRET_COLUMNS to serve it anyway"
            )
        key = next(c for c in info.columns if c.name == key_name)
        filters, unfilterable = _filterable(exposed, info.indexed)
        resources[name] = Resource(
            name,
            name,
            key,
            tuple(c.name for c in exposed),
            tuple(hidden),
            tuple(exposed),
            filters,
            unfilterable,
        )
    return Catalog(resources)


def _filterable(
    exposed: Iterable[ColumnInfo], indexed: frozenset[str]
) -> tuple[tuple[ColumnFilter, ...], tuple[tuple[str, str], ...]]:
    """The filters of the exposed columns that lead an index, and why each other cannot be
    one: without an index, every load of a filtered list would scan the table."""
    filters: list[ColumnFilter] = []
    refused: list[tuple[str, str]] = []
    for column in exposed:
        if column.name in (*LIST_PARAMETERS, CACHE_BUSTER):
            continue  # the name is taken by the list parameter
        if column.name not in indexed:
            refused.append((column.name, "it is not indexed (no index starts with it)"))
            continue
        found = column_filter(column)
        if isinstance(found, str):
            refused.append((column.name, found))
        else:
            filters.append(found)
    return tuple(filters), tuple(refused)
