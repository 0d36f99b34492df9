"""After every response: one access log line and the HTTP and cache request metrics.

aiohttp calls its access logger once the last byte of a response is written, with the time
since the request arrived; doing the accounting there costs no middleware layer on the request
path (see routing.py). The logger is set on the server, not the app: `server_options(app)`
gives the arguments for `web.run_app` / `AppRunner`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from .keys import METRICS
from .logs import AccessSink, structlog_access_lines
from .metrics import Metrics
from .request_id import HEADER as REQUEST_ID
from .routing import STARTED

# Probes and scrapes arrive every few seconds from every replica's kubelet and Prometheus:
# logged at debug level so they do not drown the requests that matter.
QUIET_ROUTES: Final = frozenset({"/livez", "/readyz", "/metrics"})
_RESULTS: Final = {"HIT": "hit", "MISS": "miss", "COALESCED": "coalesced", "STALE": "stale"}
_MAX_PATH: Final = 512  # the raw path is logged for debugging, not trusted to be short


def record(
    metrics: Metrics,
    sink: AccessSink,
    request: BaseRequest,
    response: StreamResponse,
    seconds: float,
) -> None:
    template: str | None = None
    # A request the parser rejected was never routed. (The type test first: isinstance goes
    # through ABCMeta's __instancecheck__, requests being MutableMappings.)
    if type(request) is web.Request or isinstance(request, web.Request):
        resource = request.match_info.route.resource
        template = None if resource is None else resource.canonical
        started = request.get(STARTED)
        if started is not None:
            seconds = time.perf_counter() - started
    route, served = metrics.route(template)
    status = response.status
    metrics.request_done(route, request.method, status, seconds)
    cache = response.headers.get("X-Cache")
    if served is not None:
        if cache is not None:
            metrics.cache_result(served, _RESULTS.get(cache, "other"))
        elif status >= 500:
            metrics.cache_result(served, "error")
    sink(
        logging.DEBUG if route in QUIET_ROUTES else logging.INFO,
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
    (logs.configure_logging's), else through structlog's "cm_api.access" logger."""
    metrics = app[METRICS]

    class AccessLogger(AbstractAccessLogger):
        def __init__(self, logger: logging.Logger, log_format: str) -> None:
            super().__init__(logger, log_format)
            self._sink = sink or structlog_access_lines(structlog.get_logger("cm_api.access"))

        def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
            record(metrics, self._sink, request, response, time)

    # aiohttp only wants a truthy logger object here: the lines go through structlog.
    return {"access_log_class": AccessLogger, "access_log": logging.getLogger("cm_api.access")}
