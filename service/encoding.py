"""Rows to JSON bytes, once per load: DECIMAL as exact strings, dates and times as ISO 8601
(with an offset when the datetime is aware: timezones.py), binary as base64, NULL as null."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import orjson

# Joining more than this at once would hold the event loop for over a millisecond.
JOIN_IN_THREAD_BYTES: Final = 1024 * 1024


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # format(..., "f") keeps every stored digit and never switches to exponent notation
        # (str(Decimal("0E-10")) would).
        return format(value, "f")
    if isinstance(value, dt.timedelta):
        return _mysql_time(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _mysql_time(value: dt.timedelta) -> str:
    """A MySQL TIME (which PyMySQL returns as a timedelta; it may exceed 24 h or be negative)
    as [-]HH:MM:SS[.ffffff], the ISO 8601 extended time form."""
    sign = "-" if value < dt.timedelta(0) else ""
    micros = abs(value) // dt.timedelta(microseconds=1)
    seconds, micro = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    text = f"{sign}{hours:02d}:{minute:02d}:{second:02d}"
    return f"{text}.{micro:06d}" if micro else text


def rows_to_objects(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    # Rows come from a SELECT of exactly these columns: zip's length check is not needed, and
    # is measurable on big tables (bench/README.md).
    return [dict(zip(columns, row, strict=False)) for row in rows]


def encode(value: Any) -> bytes:
    # Aware datetimes with offset zero (TIMESTAMP columns, timezones.py) end in Z, not +00:00.
    return orjson.dumps(value, default=_default, option=orjson.OPT_UTC_Z)


class TooLarge(Exception):
    """A JsonArray grew past its `max_bytes` after `rows` rows."""

    def __init__(self, max_bytes: int, rows: int) -> None:
        super().__init__(f"more than {max_bytes} bytes of JSON after {rows} rows")
        self.max_bytes = max_bytes
        self.rows = rows


class JsonArray:
    """Rows encoded into one JSON array of objects a chunk at a time, so only one chunk's dicts
    exist at once. With a `limit`, rows past it are not encoded; `more` tells they existed.
    Past `max_bytes`, `add` raises TooLarge and drops what it holds."""

    def __init__(
        self, columns: Sequence[str], limit: int | None = None, *, max_bytes: int | None = None
    ) -> None:
        self.columns = columns
        self.limit = limit
        self.count = 0
        self.more = False
        self.last: Mapping[str, Any] | None = None  # the last row encoded
        self.size = 2  # bytes of the array so far, brackets included
        self._max_bytes = max_bytes
        self._parts: list[bytes] = [b"["]

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        if self.limit is not None and self.count + len(rows) > self.limit:
            self.more = True
            rows = rows[: self.limit - self.count]
        if not rows:
            return
        objects = rows_to_objects(self.columns, rows)
        if self.count:
            self._parts.append(b",")
            self.size += 1
        part = encode(objects)[1:-1]  # the elements, without the brackets
        self._parts.append(part)
        self.size += len(part)
        self.count += len(objects)
        self.last = objects[-1]
        if self._max_bytes is not None and self.size > self._max_bytes:
            self._parts.clear()
            raise TooLarge(self._max_bytes, self.count)

    async def finish(self) -> bytes:
        self._parts.append(b"]")
        parts, self._parts = self._parts, []
        if self.size < JOIN_IN_THREAD_BYTES:
            return b"".join(parts)
        # bytes.join copies without holding the GIL: the loop keeps serving meanwhile.
        return await asyncio.to_thread(b"".join, parts)
