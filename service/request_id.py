"""Request ids: taken from a well-formed incoming `X-Request-ID` (so a proxy's or a client's id
follows the request through our logs), otherwise made here. Bound to the logging context of the
request, echoed in the response."""

from __future__ import annotations

import itertools
import os
import re
from typing import Final

HEADER: Final = "X-Request-ID"
# Printable, header-safe and short enough for a log line; anything else is replaced, not trusted.
_VALID: Final = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


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
