"""After every response: one access log line and the HTTP and cache request metrics.

aiohttp calls its access logger once the last byte of a response is written, with the time
since the request arrived; doing the accounting there costs no middleware layer on the request
path (see routing.py). The logger is set on the server, not the app: `server_options(app)`
gives the arguments for `web.run_app` / `AppRunner`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final, cast

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from .keys import METRICS
from .logs import AccessSink, StructlogAccessLines
from .metrics import Metrics
from .request_id import HEADER as REQUEST_ID
from .routing import STARTED

# Probes and scrapes arrive every few seconds from every replica's kubelet and Prometheus:
# logged at debug level so they do not drown the requests that matter.
QUIET_ROUTES: Final = frozenset({"/livez", "/readyz", "/metrics"})
_RESULTS: Final = {"HIT": "hit", "MISS": "miss", "COALESCED": "coalesced", "STALE": "stale"}
# nginx's status for a request whose client closed the connection before the answer was sent.
CLIENT_CLOSED_REQUEST: Final = 499
_MAX_PATH: Final = 512  # the raw path is logged for debugging, not trusted to be short

# Limits of aiohttp's request parser, chosen rather than inherited: a request beyond them gets
# aiohttp's own 400 (text/plain) before any code of ours runs, so it costs no routing, no
# cache lookup and no query.
# The request target. The longest this API answers is a page whose `after` is a text key of
# the most characters parse_page accepts (resources.MAX_TEXT_KEY, 1024), each 4 bytes of
# UTF-8 and so 12 once percent-encoded: about 12.3 kB. 16 KiB admits it (every Link we send
# can be followed), where aiohttp's default (8190) would not; longer ones are not for us.
MAX_URL_BYTES: Final = 16 * 1024
# One header, name and value together: the 8 KiB a header line may have at nginx and most
# ingresses in front of us, so whatever they forward (a domain's cookies included) is taken.
# The headers we read (If-None-Match, Accept-Encoding, X-Request-ID) are far shorter.
MAX_HEADER_BYTES: Final = 8 * 1024
# A browser sends some 20 headers and an ingress or mesh (X-Forwarded-*, tracing, Envoy's)
# adds up to some 20 more; 64 leaves room for both and bounds one request's headers at
# 64 x 8 KiB, half what aiohttp's default count (128) lets a client make us hold.
MAX_HEADERS: Final = 64


def record(
    metrics: Metrics,
    sink: AccessSink,
    request: BaseRequest,
    response: StreamResponse,
    seconds: float,
) -> None:
    template: str | None = None
    # Only routed requests went through routing.wrap, which sets STARTED. A request aiohttp's
    # parser rejected is a web.Request too, but without match_info (reading it asserts).
    started = request.get(STARTED)
    if started is not None:
        # A cast, not an isinstance test: that goes through ABCMeta (requests are Mappings).
        resource = cast(web.Request, request).match_info.route.resource
        template = None if resource is None else resource.canonical
        seconds = time.perf_counter() - started
    route, served = metrics.route(template)
    status = response.status
    # aiohttp logs an answer it could not write too (finish_response catches the
    # ConnectionError); only its end was never sent then. Counting it as the handler's 200
    # would say the client got data it never did: nginx's 499 says who gave up. (_eof_sent:
    # aiohttp has no public "fully written" flag.)
    if not response._eof_sent:
        status = CLIENT_CLOSED_REQUEST
    counts = metrics.http
    counts.request_done(route, request.method, status, seconds)
    cache = response.headers.get("X-Cache")
    if served is not None:
        if cache is not None:
            counts.cache_result(served, _RESULTS.get(cache, "other"))
        elif status >= 500:
            counts.cache_result(served, "error")
    level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
    if level < sink.min_level:
        return
    sink(
        level,
        {
            "request_id": response.headers.get(REQUEST_ID),
            "method": request.method,
            "route": route,
            "path": request.path[:_MAX_PATH],
            "status": status,
            "duration_ms": round(seconds * 1000, 3),  # handler start to last byte written
            "bytes": response.body_length,
            "cache": cache,
            "client": request.remote,
        },
    )


def server_options(app: web.Application, sink: AccessSink | None = None) -> dict[str, Any]:
    """Keyword arguments for `web.run_app` / `web.AppRunner` / aiohttp's TestServer that make
    the server report every response of `app` through `record`, its line written by `sink`
    (logs.configure_logging's), else through structlog's "cm_api.access" logger, and that
    hold requests to the parser limits above."""
    metrics = app[METRICS]

    class AccessLogger(AbstractAccessLogger):
        def __init__(self, logger: logging.Logger, log_format: str) -> None:
            super().__init__(logger, log_format)
            self._sink = sink or StructlogAccessLines(structlog.get_logger("cm_api.access"))

        def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
            record(metrics, self._sink, request, response, time)

    return {
        "access_log_class": AccessLogger,
        # aiohttp only wants a truthy logger object here: the lines go through structlog.
        "access_log": logging.getLogger("cm_api.access"),
        "max_line_size": MAX_URL_BYTES,
        "max_field_size": MAX_HEADER_BYTES,
        "max_headers": MAX_HEADERS,
    }
