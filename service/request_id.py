"""Request ids: taken from a well-formed incoming `X-Request-ID` (so a proxy's or a client's id
follows the request through our logs), otherwise made here. Bound to the logging context of the
request, echoed in the response."""

from __future__ import annotations

import itertools
import os
import re
from contextvars import ContextVar
from typing import Any, Final

HEADER: Final = "X-Request-ID"
# Printable, header-safe and short enough for a log line; anything else is replaced, not trusted.
PATTERN: Final = r"[A-Za-z0-9._:/+=@-]{1,128}"
_VALID: Final = re.compile(PATTERN)
# The id of the request being handled in this context (tasks a handler starts inherit it): one
# variable read by one processor, where structlog's merge_contextvars would copy the whole
# context on every event.
CURRENT: Final[ContextVar[str | None]] = ContextVar("request_id", default=None)


def add_request_id(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current request's id, unless the event names one itself."""
    request_id = CURRENT.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


class RequestIds:
    """Makes ids unique across processes without a random draw per request: a random prefix
    per process start, then a counter (cheaper than uuid4 on the hot path, and still sortable
    within one process)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._next = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}-{next(self._next):x}"

    def for_request(self, incoming: str | None) -> str:
        if incoming is not None and _VALID.fullmatch(incoming):
            return incoming
        return self.new()
