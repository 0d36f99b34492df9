"""Long-poll over HTTP: a GET with `Prefer: wait=N` (RFC 7240) and an `If-None-Match` naming
the current tag is held until the data changes or N seconds (at most LONG_POLL_MAX_SECONDS)
pass, then answered as any request: 200 with the new body, or 304. Answers to a wait this
process honours carry `Preference-Applied: wait=N`; one it does not (long-poll off, too many
held, shutting down) is answered at once without it, so a client knows to poll instead.
"""

from __future__ import annotations

import re
import time
from collections.abc import Hashable
from typing import Final

from aiohttp import web

from .access import HELD
from .cache import Loader, Lookup
from .changes import Ended
from .keys import CACHE, CHANGES, SETTINGS
from .responses import cached_response, not_modified

PREFER: Final = "Prefer"
APPLIED: Final = "Preference-Applied"
# RFC 7240: preferences are comma-separated, each `name[=value]` with `;` parameters; a value
# may be quoted. Only whole-second waits are read.
_WAIT: Final = re.compile(
    r'(?:^|,)\s*wait\s*=\s*(?:"([0-9]{1,9})"|([0-9]{1,9}))\s*(?:$|[,;])', re.I
)


def requested_wait(prefer: list[str]) -> int | None:
    """The seconds of the first `wait` preference in these Prefer values, or None. A wait that
    cannot be read is ignored, as RFC 7240 asks of a preference a server does not understand."""
    for value in prefer:
        match = _WAIT.search(value)
        if match is not None:
            return int(match[1] or match[2])
    return None


async def respond(
    request: web.Request, key: Hashable, lookup: Lookup, load: Loader
) -> web.Response:
    """The answer to `lookup`, held first when the request asks to wait for a change."""
    max_seconds = request.app[SETTINGS].long_poll_max_seconds
    wait = requested_wait(request.headers.getall(PREFER, []))
    if wait is None or max_seconds == 0:
        return cached_response(request, lookup)
    seconds = min(wait, max_seconds)
    changes = request.app[CHANGES]
    if seconds > 0 and not_modified(request.if_none_match, lookup.entry.tag):
        began = time.perf_counter()
        ended, entry = await changes.wait(
            key, lookup.entry, seconds, load, gone=lambda: request.transport is None
        )
        request[HELD] = time.perf_counter() - began
        if ended is Ended.REFUSED:
            return cached_response(request, lookup)
        cache = request.app[CACHE]
        if entry is not None:
            lookup = cache.hit(entry)
        else:
            # Time is up, shutdown, or the row is gone: answered as any request (304, 404,
            # stale-if-error, 503...).
            lookup = await cache.get(key, load)
    elif not changes.accepting:
        return cached_response(request, lookup)
    response = cached_response(request, lookup)
    response.headers[APPLIED] = f"wait={seconds}"
    return response
