"""Rows to JSON bytes, once per load: DECIMAL as exact strings, dates and times as ISO 8601,
binary as base64, NULL as null."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final, Self

import orjson

from .compression import Encodings, GzipStream

# Joining more than this at once would hold the event loop for over a millisecond.
JOIN_IN_THREAD_BYTES: Final = 1024 * 1024
# Below this, compressing once at the end is cheaper than a worker thread's bookkeeping.
COMPRESS_ALONG_BYTES: Final = 256 * 1024


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
    # Rows come from a SELECT of exactly these columns; the length check cost a third of this
    # function on big tables (bench/README.md).
    return [dict(zip(columns, row, strict=False)) for row in rows]


def encode(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)


class TooLarge(Exception):
    """A JsonArray grew past its `max_bytes` after `rows` rows."""

    def __init__(self, max_bytes: int, rows: int) -> None:
        super().__init__(f"more than {max_bytes} bytes of JSON after {rows} rows")
        self.max_bytes = max_bytes
        self.rows = rows


class JsonArray:
    """Rows encoded into one JSON array of objects a chunk at a time, so only one chunk's dicts
    exist at once. With a `limit`, rows past it are not encoded; `more` tells they existed.
    Past `max_bytes`, `add` raises TooLarge and drops what it holds. With `compress`, a big
    array's gzip copy and tag are made in a worker thread as the chunks arrive; `close` (or
    leaving the `with` block) stops that thread if `finish` was not reached."""

    def __init__(
        self,
        columns: Sequence[str],
        limit: int | None = None,
        *,
        max_bytes: int | None = None,
        compress: bool = False,
    ) -> None:
        self.columns = columns
        self.limit = limit
        self.count = 0
        self.more = False
        self.last: Mapping[str, Any] | None = None  # the last row encoded
        self.size = 0  # bytes of the array so far
        self._max_bytes = max_bytes
        self._parts: list[bytes] = []
        self._compress = compress
        self._stream: GzipStream | None = None  # started once the array is big enough
        self._emit(b"[")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    def _emit(self, *parts: bytes) -> None:
        self._parts.extend(parts)
        self.size += sum(map(len, parts))
        if self._stream is not None:
            self._stream.feed(parts)
        elif self._compress and self.size >= COMPRESS_ALONG_BYTES:
            self._stream = GzipStream()
            self._stream.feed(list(self._parts))

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        if self.limit is not None and self.count + len(rows) > self.limit:
            self.more = True
            rows = rows[: self.limit - self.count]
        if not rows:
            return
        objects = rows_to_objects(self.columns, rows)
        part = encode(objects)[1:-1]  # the elements, without the brackets
        if self._max_bytes is not None and self.size + len(part) + 2 > self._max_bytes:
            self._parts.clear()
            self.close()
            raise TooLarge(self._max_bytes, self.count + len(objects))
        if self.count:
            self._emit(b",", part)
        else:
            self._emit(part)
        self.count += len(objects)
        self.last = objects[-1]

    async def finish(self) -> tuple[bytes, Encodings | None]:
        """The array, and its encodings when they were made along (`compress`)."""
        self._emit(b"]")
        parts, self._parts = self._parts, []
        if self.size < JOIN_IN_THREAD_BYTES:
            body = b"".join(parts)
        else:
            # bytes.join copies without holding the GIL: the loop keeps serving meanwhile.
            body = await asyncio.to_thread(b"".join, parts)
        if self._stream is None:  # not asked for, or small: the cache makes them at once
            return body, None
        return body, await self._stream.finish(body)
