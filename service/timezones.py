"""Times that a browser reads right: TIMESTAMP and DATETIME values as aware datetimes, made by
the drivers' own row converters (their `conv` mapping), so that orjson writes an offset.

Every session runs with time_zone '+00:00' (db.py), so the server sends TIMESTAMP values (which
it stores in UTC) in UTC. DATETIME values have no zone in the database: DB_DATETIME_ZONE says in
which zone the application wrote them; without it they stay naive (written without an offset).

A wall time that a zone's clocks pass twice or skip gets zoneinfo's fold=0 reading: the earlier
of the two (before the clocks go back), and a skipped one the offset in force before the gap
(2024-03-31 02:30 in Europe/Berlin is 02:30+01:00, the instant 03:30+02:00).

A value that is no calendar date (the zero date 0000-00-00 00:00:00, a zero month or day) stays
the server's text, as the drivers return it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Final
from zoneinfo import ZoneInfo

from pymysql.constants import FIELD_TYPE

# What every session's time_zone is set to.
SESSION_TIME_ZONE: Final = "+00:00"

Decoder = Callable[[str], object]


def datetime_zone(name: str) -> ZoneInfo | None:
    """The zone DB_DATETIME_ZONE names (settings.py validated it); None when it is empty."""
    return ZoneInfo(name) if name else None


def row_decoders(zone: dt.tzinfo | None) -> Mapping[int, Decoder]:
    """Converters by field type for the text protocol, over the driver's defaults: TIMESTAMP in
    UTC, DATETIME in `zone` (left to the driver when None)."""
    decoders: dict[int, Decoder] = {FIELD_TYPE.TIMESTAMP: _in_utc}
    if zone is not None:
        decoders[FIELD_TYPE.DATETIME] = _in_zone(zone)
    return decoders


def _in_utc(text: str) -> dt.datetime | str:
    """'2024-01-02 03:04:05[.ffffff]' as an aware datetime in UTC."""
    try:
        # The suffix makes fromisoformat attach datetime.UTC itself: replace(tzinfo=) costs
        # several times the parse on Python 3.11 (bench/README.md).
        return dt.datetime.fromisoformat(text + "Z")
    except ValueError:
        return text


def _in_zone(zone: dt.tzinfo) -> Decoder:
    combine, parse = dt.datetime.combine, dt.datetime.fromisoformat

    def decode(text: str) -> dt.datetime | str:
        """The wall time `text` in `zone` (fold=0)."""
        try:
            wall = parse(text)
        except ValueError:
            return text
        # combine with a positional tzinfo: replace(tzinfo=) is the slow way (see above).
        return combine(wall, wall.time(), zone)

    return decode
