"""Filters on list routes (`/user/?acc_id=7`): which columns a list may be filtered on, how a
filter's text becomes the value bound in the query, and the JSON schema of exactly the texts
accepted (openapi.py serves it, so the description cannot drift from the parser).

A column is filterable when it is exposed, leads an index (resources.py checks both) and has a
type whose values are read from text exactly: the integer types, DECIMAL, ENUM, DATE, TIMESTAMP
and CHAR/VARCHAR in utf8mb4 (the connections' character set: any text compares with them; a
latin1 column would make the server refuse a value it cannot convert).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any, Final

from .errors import BadRequest
from .schema import INTEGER_TYPES, ColumnInfo

Value = int | str | Decimal | dt.date | dt.datetime
# The value to bind and its canonical text (cache keys, Link URLs), or None for a text that is
# no value of the column.
Reader = Callable[[str], tuple[Value, str] | None]

_INTEGER: Final = re.compile(r"-?[0-9]{1,20}")
# Years 0001-9999: Python's dates have no year 0, and MySQL's zero dates are no dates.
_YEAR: Final = "([1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
DATE_PATTERN: Final = f"^{_YEAR}-[0-9]{{2}}-[0-9]{{2}}$"
# A TIMESTAMP as encoding.py writes it (timezones.py: in UTC, microseconds when not zero).
TIMESTAMP_PATTERN: Final = (
    f"^{_YEAR}-[0-9]{{2}}-[0-9]{{2}}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{{6}})?Z$"
)
# Enough digits for any DECIMAL (65 at most): the default context's 28 would round.
_DECIMAL_CONTEXT: Final = Context(prec=200)
_MEMBERS_SHOWN: Final = 10
# Why a column of an indexed, exposed type cannot be filtered; other types: "<type> values".
_NOT_EXACT: Final = {
    "float": "floating-point values are approximate",
    "double": "floating-point values are approximate",
    "real": "floating-point values are approximate",
    "datetime": "DATETIME values are written without a zone, or with an offset that depends on "
    "DB_DATETIME_ZONE and daylight saving time",
}


@dataclass(frozen=True)
class Condition:
    """`column` equal to any of `values`: distinct, ordered by their canonical `texts`."""

    column: str
    values: tuple[Value, ...]
    texts: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class ColumnFilter:
    """How the filter values of one filterable column are read and described."""

    column: ColumnInfo
    expects: str  # what a value must be, for messages: "an integer from 0 to 255"
    read: Reader
    schema: Mapping[str, Any]  # the JSON schema of exactly the texts `read` accepts

    @property
    def name(self) -> str:
        return self.column.name

    def condition(self, raw: Sequence[str], max_values: int) -> Condition:
        """The condition the repeated parameter's values `raw` make; BadRequest for too many
        values or one that is no value of the column."""
        if len(raw) > max_values:
            raise BadRequest(
                f"{self.name} may be given at most {max_values} times in one request, got "
                f"{len(raw)}; split the values over several requests"
            )
        read: dict[str, Value] = {}
        for text in raw:
            found = self.read(text)
            if found is None:
                raise BadRequest(
                    f"{self.name} must be {self.expects} ({self.column.column_type}), "
                    f"got {text[:64]!r}"
                )
            value, canonical = found
            read.setdefault(canonical, value)
        texts = tuple(sorted(read))
        return Condition(self.name, tuple(read[t] for t in texts), texts)


def read_integer(raw: str, low: int, high: int) -> int | None:
    """The integer in `raw` when it is plain decimal within [low, high], else None. (int()
    alone would also take "+5", " 5", "5_0" and non-ASCII digits.)"""
    if not _INTEGER.fullmatch(raw):
        return None
    value = int(raw)
    return value if low <= value <= high else None


def column_filter(column: ColumnInfo) -> ColumnFilter | str:
    """How `column`'s filter values are read, or why its type cannot be filtered on."""
    build = _BUILDERS.get(column.data_type)
    if build is None:
        return _NOT_EXACT.get(column.data_type, f"{column.data_type} values cannot be filtered on")
    return build(column)


def _integer(column: ColumnInfo) -> ColumnFilter:
    low, high = column.integer_range()

    def read(raw: str) -> tuple[Value, str] | None:
        value = read_integer(raw, low, high)
        return None if value is None else (value, str(value))

    schema = {"type": "integer", "minimum": low, "maximum": high}
    return ColumnFilter(column, f"an integer from {low} to {high}", read, schema)


def decimal_pattern(precision: int, scale: int, unsigned: bool) -> str:
    """The texts of a DECIMAL(precision, scale) value: at most precision - scale digits before
    the point (and any leading zeros), at most scale after it."""
    sign = "" if unsigned else "-?"
    whole = f"0*[0-9]{{1,{precision - scale}}}" if precision > scale else "0+"
    fraction = f"(\\.[0-9]{{1,{scale}}})?" if scale else ""
    return f"^{sign}{whole}{fraction}$"


def _decimal(column: ColumnInfo) -> ColumnFilter | str:
    digits = column.decimal_digits()
    if digits is None:
        return f"{column.column_type} declares no precision and scale"
    precision, scale = digits
    pattern = decimal_pattern(precision, scale, column.unsigned)
    compiled = re.compile(pattern)
    quantum = Decimal(1).scaleb(-scale)

    def read(raw: str) -> tuple[Value, str] | None:
        if not compiled.fullmatch(raw):
            return None
        value = Decimal(raw).quantize(quantum, context=_DECIMAL_CONTEXT)
        value = value.copy_abs() if value.is_zero() else value  # -0.00 is 0.00
        return value, format(value, "f")  # written as encoding.py writes the column

    after = f"{_digits(scale)} after it" if scale else "none after it"
    sign = "" if column.unsigned else ", optionally signed"
    expects = f"a decimal number with at most {_digits(max(precision - scale, 1))} before the point"
    schema = {"type": "string", "pattern": pattern}
    return ColumnFilter(column, f"{expects} and {after}{sign}", read, schema)


def _digits(count: int) -> str:
    return f"{count} digit" if count == 1 else f"{count} digits"


def _enum(column: ColumnInfo) -> ColumnFilter:
    """A member, spelled exactly as the rows come back (and as the OpenAPI enum lists it),
    whatever the column's collation would also match."""
    members = column.members()
    allowed = frozenset(members)

    def read(raw: str) -> tuple[Value, str] | None:
        return (raw, raw) if raw in allowed else None

    shown = ", ".join(repr(m) for m in members[:_MEMBERS_SHOWN])
    more = ", ..." if len(members) > _MEMBERS_SHOWN else ""
    schema = {"type": "string", "enum": members}
    return ColumnFilter(column, f"one of {shown}{more}", read, schema)


def _text(column: ColumnInfo) -> ColumnFilter | str:
    max_length = column.max_length
    if max_length is None:
        return f"{column.column_type} declares no length"
    if column.charset != "utf8mb4":
        return f"its character set is {column.charset}, not utf8mb4"

    def read(raw: str) -> tuple[Value, str] | None:
        return (raw, raw) if len(raw) <= max_length else None

    schema = {"type": "string", "maxLength": max_length}
    return ColumnFilter(column, f"text of at most {max_length} characters", read, schema)


def _date(column: ColumnInfo) -> ColumnFilter:
    compiled = re.compile(DATE_PATTERN)

    def read(raw: str) -> tuple[Value, str] | None:
        if not compiled.fullmatch(raw):
            return None
        try:
            value = dt.date.fromisoformat(raw)
        except ValueError:  # 2024-02-30
            return None
        return value, value.isoformat()

    schema = {"type": "string", "format": "date", "pattern": DATE_PATTERN}
    return ColumnFilter(column, "a date written YYYY-MM-DD", read, schema)


def _timestamp(column: ColumnInfo) -> ColumnFilter:
    """The instant in UTC as the API writes it; bound as the UTC wall time, which the session
    (time_zone '+00:00') reads as that instant."""
    compiled = re.compile(TIMESTAMP_PATTERN)

    def read(raw: str) -> tuple[Value, str] | None:
        if not compiled.fullmatch(raw):
            return None
        try:
            value = dt.datetime.fromisoformat(raw[:-1])
        except ValueError:  # 2024-02-30T00:00:00Z
            return None
        return value, value.isoformat() + "Z"  # microseconds only when not zero, as written

    expects = "a UTC time written YYYY-MM-DDTHH:MM:SS[.ffffff]Z, as this API writes it"
    schema = {"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}
    return ColumnFilter(column, expects, read, schema)


_BUILDERS: Final[Mapping[str, Callable[[ColumnInfo], ColumnFilter | str]]] = {
    **dict.fromkeys(INTEGER_TYPES, _integer),
    "decimal": _decimal,
    "numeric": _decimal,
    "enum": _enum,
    "char": _text,
    "varchar": _text,
    "date": _date,
    "timestamp": _timestamp,
}
