"""JSON encoding of database values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import orjson
import pytest

from service.encoding import JOIN_IN_THREAD_BYTES, JsonArray, TooLarge, encode, rows_to_objects


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


ROWS = [(n, f"name {n}", Decimal(f"{n}.50"), None) for n in range(1, 12)]
COLUMNS = ["id", "name", "balance", "notes"]


@pytest.mark.parametrize("chunk", [1, 3, 5, 11, 20])
async def test_json_array_in_chunks_equals_encoding_all_rows_at_once(chunk: int) -> None:
    array = JsonArray(COLUMNS)
    for start in range(0, len(ROWS), chunk):
        array.add(ROWS[start : start + chunk])
    assert await array.finish() == encode(rows_to_objects(COLUMNS, ROWS))
    assert (array.count, array.more) == (len(ROWS), False)
    assert array.last == {"id": 11, "name": "name 11", "balance": Decimal("11.50"), "notes": None}


@pytest.mark.parametrize("chunk", [1, 4, 11])
async def test_json_array_stops_at_the_limit_and_says_more_followed(chunk: int) -> None:
    array = JsonArray(COLUMNS, limit=7)
    for start in range(0, 8, chunk):  # a limit + 1 query: one row more than the limit
        array.add(ROWS[start : min(start + chunk, 8)])
    assert orjson.loads(await array.finish()) == orjson.loads(
        encode(rows_to_objects(COLUMNS, ROWS[:7]))
    )
    assert (array.count, array.more) == (7, True)
    assert array.last is not None
    assert array.last["id"] == 7


async def test_json_array_of_nothing_is_an_empty_array() -> None:
    array = JsonArray(COLUMNS, limit=3)
    array.add([])
    assert await array.finish() == b"[]"
    assert (array.count, array.more, array.last) == (0, False, None)


async def test_json_array_counts_its_size_and_joins_a_large_array_in_a_thread() -> None:
    """Past JOIN_IN_THREAD_BYTES the join runs in a worker thread: the bytes are the same."""
    rows = [(n, "x" * 1000, Decimal(n), None) for n in range(1500)]
    array = JsonArray(COLUMNS)
    for start in range(0, len(rows), 64):
        array.add(rows[start : start + 64])
    assert array.size > JOIN_IN_THREAD_BYTES
    body = await array.finish()
    assert body == encode(rows_to_objects(COLUMNS, rows))
    assert array.size == len(body)


def test_json_array_past_its_byte_bound_raises_too_large_and_drops_its_parts() -> None:
    array = JsonArray(COLUMNS, max_bytes=500)
    array.add(ROWS[:5])  # about 250 bytes: within the bound
    with pytest.raises(TooLarge) as caught:
        array.add(ROWS[5:])
    assert (caught.value.max_bytes, caught.value.rows) == (500, 11)
    assert array._parts == []
