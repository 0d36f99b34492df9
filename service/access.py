"""What happened to each request, told once after its response: the access line and the HTTP
metrics both come from here.

The request path leaves its facts on the request (`STARTED`, `REQUEST_ID`, `CACHE_OUTCOME`);
aiohttp calls the access logger once the last byte is written, so no middleware is needed.
`server_options(app, lines)` gives the arguments for `web.AppRunner` / aiohttp's TestServer.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final, cast

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from .cache import Outcome
from .keys import METRICS
from .logs import AccessLines
from .metrics import Metrics

# Set by routing.wrap when a route's handler starts (time.perf_counter: the loop's clock has
# millisecond resolution under uvloop), and the id the response carries.
STARTED: Final = web.RequestKey("started", float)
REQUEST_ID: Final = web.RequestKey("request_id", str)
# Set by responses.cached_response: what the cache did for this request.
CACHE_OUTCOME: Final = web.RequestKey("cache_outcome", Outcome)
# Set by longpoll.respond: seconds the request was held waiting for its data to change.
HELD: Final = web.RequestKey("held", float)

# Probes and scrapes arrive every few seconds from every kubelet and Prometheus: debug level.
QUIET_ROUTES: Final = frozenset({"/livez", "/readyz", "/metrics"})
# nginx's status for a request whose client closed the connection before the answer was sent.
CLIENT_CLOSED_REQUEST: Final = 499
_MAX_PATH: Final = 512  # the raw path is logged for debugging, not trusted to be short

# Limits of aiohttp's request parser: a request beyond them gets aiohttp's own 400 before any
# code of ours runs. The longest target we answer is a Link to a page after a 1024-character
# text key, percent-encoded (about 12.3 kB); aiohttp's default (8190) would refuse it.
MAX_URL_BYTES: Final = 16 * 1024
# One header line, as nginx and most ingresses in front of us accept it.
MAX_HEADER_BYTES: Final = 8 * 1024
# A browser's headers plus what an ingress or mesh adds, with room to spare.
MAX_HEADERS: Final = 64


def record(
    metrics: Metrics,
    lines: AccessLines,
    request: BaseRequest,
    response: StreamResponse,
    seconds: float,
) -> None:
    """Count `response` in the HTTP metrics and write its access line (if its level is on)."""
    template: str | None = None
    # Only routed requests set STARTED; one aiohttp's parser rejected has no match_info.
    started = request.get(STARTED)
    if started is not None:
        # A cast, not an isinstance test: that goes through ABCMeta (requests are Mappings).
        resource = cast(web.Request, request).match_info.route.resource
        template = None if resource is None else resource.canonical
        seconds = time.perf_counter() - started
    held = request.get(HELD, 0.0)
    route, served = metrics.route(template)
    status = response.status
    # aiohttp reports an answer it could not finish writing too; nginx's 499 says the client
    # gave up (aiohttp has no public "fully written" flag).
    if not response._eof_sent:
        status = CLIENT_CLOSED_REQUEST
    outcome = request.get(CACHE_OUTCOME)
    # The time spent waiting for a change is the client's choice, not the service's latency.
    metrics.http.count(
        route, served, request.method, status, seconds=seconds - held, outcome=outcome
    )
    level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
    if lines.enabled_for(level):
        lines.write(
            level,
            {
                "request_id": request.get(REQUEST_ID),
                "method": request.method,
                "route": route,
                "path": request.path[:_MAX_PATH],
                "status": status,
                "duration_ms": round(seconds * 1000, 3),  # handler start to last byte written
                "held_ms": round(held * 1000, 3),  # of which waiting for a change (long-poll)
                "bytes": response.body_length,
                "cache": None if outcome is None else outcome.value,
                "client": request.remote,
            },
        )


def server_options(app: web.Application, lines: AccessLines) -> dict[str, Any]:
    """Keyword arguments for `web.AppRunner` / aiohttp's TestServer: every response of `app` is
    reported through `record` (its line written by `lines`), and requests are held to the
    parser limits above."""
    metrics = app[METRICS]

    class AccessLog(AbstractAccessLogger):
        @property
        def enabled(self) -> bool:
            return True  # the metrics count every response, whatever the log level

        def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
            record(metrics, lines, request, response, time)

    return {
        "access_log_class": AccessLog,
        # aiohttp only wants a truthy logger object here: the lines go through `lines`.
        "access_log": logging.getLogger("cm_api.access"),
        "max_line_size": MAX_URL_BYTES,
        "max_field_size": MAX_HEADER_BYTES,
        "max_headers": MAX_HEADERS,
    }
