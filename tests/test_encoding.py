"""JSON encoding of database values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import orjson
import pytest

from service.encoding import encode, rows_to_objects


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("0E-10"), "0.0000000000"),
        (Decimal("-120.7500"), "-120.7500"),
        (Decimal("12345678901234567890.0123456789"), "12345678901234567890.0123456789"),
        (dt.datetime(2024, 2, 29, 23, 59, 59, 123456), "2024-02-29T23:59:59.123456"),
        (dt.datetime(2024, 1, 1, 0, 0), "2024-01-01T00:00:00"),
        (dt.date(1999, 12, 31), "1999-12-31"),
        (dt.timedelta(hours=-838, minutes=-59, seconds=-59), "-838:59:59"),
        (dt.timedelta(hours=12, minutes=30, microseconds=5), "12:30:00.000005"),
        (dt.timedelta(0), "00:00:00"),
        (b"\x00\xff\x10", "AP8Q"),
        ({"b", "a"}, ["a", "b"]),
        (None, None),
        ("\N{PILE OF POO}", "\N{PILE OF POO}"),
    ],
)
def test_values(value: object, expected: object) -> None:
    assert orjson.loads(encode([value])) == [expected]


def test_unknown_types_are_refused_not_stringified() -> None:
    with pytest.raises(TypeError):
        encode([object()])


def test_rows_to_objects_keeps_column_order() -> None:
    objects = rows_to_objects(["b", "a"], [(1, 2), (3, 4)])
    assert encode(objects) == b'[{"b":1,"a":2},{"b":3,"a":4}]'
