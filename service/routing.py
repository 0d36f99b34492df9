"""How every route is served: one handler wrapper (request id, requests in flight, errors as the
JSON envelope {"error": {"code": ..., "message": ...}} with the right status and never with
internals), a 405 for other methods on a known path and a 404 for unknown paths, with the
CORS headers and preflight answers when a CORS policy is configured.

No aiohttp middleware: each costs two coroutine layers per request (bench/README.md). The
wrapper leaves the start time and the request id on the request; access.py reports the rest
once the response is sent.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from .access import REQUEST_ID, STARTED
from .auth import BearerTokens, require_token
from .cors import CorsPolicy, PreflightRejected
from .encoding import encode
from .errors import (
    CorsRejected,
    DatabaseUnavailable,
    MethodNotAllowed,
    NotFound,
    ServiceError,
    Unauthorized,
)
from .request_id import CURRENT as CURRENT_REQUEST_ID
from .request_id import HEADER as REQUEST_ID_HEADER
from .request_id import RequestIds

log = structlog.get_logger(__name__)

# Long enough not to hammer a database that is restarting, short enough for a dashboard.
RETRY_AFTER_SECONDS: Final = 2
# Cache-Control of answers about this instant (errors, probes): no cache may keep them.
NO_STORE: Final = "no-store"
# The methods every route serves (a 405's Allow header; the methods openapi.py documents).
ALLOWED: Final = "GET,HEAD"


class InFlight(Protocol):
    """Where the wrapper counts the requests being handled now (httpstats.HttpStats has this
    shape): a plain int, moved only on the event loop's thread."""

    in_flight: int


@dataclass(slots=True)
class _Uncounted:
    in_flight: int = 0


@dataclass(frozen=True)
class Routing:
    """What the wrapper of every route shares: where request ids come from, where requests in
    flight are counted, and the CORS policy (None: no CORS headers, no preflights)."""

    ids: RequestIds = field(default_factory=RequestIds)
    counts: InFlight = field(default_factory=_Uncounted)
    cors: CorsPolicy | None = None


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    """An answer about this instant (an error, a probe): JSON that no cache may keep."""
    response = web.Response(
        status=status, body=encode(body), content_type="application/json", headers=headers
    )
    response.headers["Cache-Control"] = NO_STORE
    return response


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(status, {"error": {"code": code, "message": message}}, headers)


def wrap(handler: Handler, routing: Routing) -> Handler:
    """`handler` with a request id (logging context and response header), counted in flight,
    and whatever it raises turned into a JSON error response."""
    ids, counts, cors = routing.ids, routing.counts, routing.cors

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        request[STARTED] = time.perf_counter()
        request_id = ids.for_request(request.headers.get(REQUEST_ID_HEADER))
        request[REQUEST_ID] = request_id
        # Everything logged while handling this request (a load it starts included) carries it.
        token = CURRENT_REQUEST_ID.set(request_id)
        counts.in_flight += 1
        try:
            response = await handler(request)
        except ServiceError as exc:
            response = error_response(exc.status, exc.code, exc.message, _headers_of(exc))
        except Exception:
            # Logged with its traceback for the operator; the client learns nothing internal.
            log.exception("unhandled_error", path=request.path, method=request.method)
            response = error_response(
                ServiceError.status, ServiceError.code, "internal server error"
            )
        finally:
            counts.in_flight -= 1
            CURRENT_REQUEST_ID.reset(token)
        response.headers[REQUEST_ID_HEADER] = request_id
        if cors is not None:
            cors.decorate(request, response)
        return response

    return wrapped


def _headers_of(error: ServiceError) -> dict[str, str] | None:
    """The headers an error's status calls for (RFC 9110, RFC 6750)."""
    if isinstance(error, DatabaseUnavailable):
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if isinstance(error, Unauthorized):
        return {"WWW-Authenticate": error.challenge}
    if isinstance(error, MethodNotAllowed):
        return {"Allow": ALLOWED}
    return None


async def method_not_allowed(request: web.Request) -> web.Response:
    raise MethodNotAllowed(f"method {request.method[:16]} is not allowed here; use GET or HEAD")


def preflight_handler(cors: CorsPolicy) -> Handler:
    """OPTIONS: a CORS preflight gets `cors`'s answer (403 when it is not allowed); any other
    OPTIONS request is a method this API does not serve."""

    async def preflight(request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        method = request.headers.get("Access-Control-Request-Method")
        if origin is None or method is None:
            return await method_not_allowed(request)
        try:
            return cors.preflight(request, origin, method)
        except PreflightRejected as exc:
            raise CorsRejected(f"CORS preflight rejected: {exc}") from None

    return preflight


def add_read_only(
    router: web.UrlDispatcher,
    path: str,
    handler: Handler,
    routing: Routing,
    tokens: BearerTokens | None = None,
) -> None:
    """GET and HEAD on `path` go to `handler` (only with one of `tokens` when given), OPTIONS
    to the CORS preflight when CORS is on, any other method gets 405."""
    resource = router.add_resource(path)
    wrapped = wrap(handler if tokens is None else require_token(handler, tokens), routing)
    resource.add_route("HEAD", wrapped)
    resource.add_route("GET", wrapped)
    if routing.cors is not None:
        # Browsers send preflights without credentials, so they are never behind the tokens.
        resource.add_route("OPTIONS", wrap(preflight_handler(routing.cors), routing))
    resource.add_route("*", wrap(method_not_allowed, routing))


def add_not_found(router: web.UrlDispatcher, resources: Iterable[str], routing: Routing) -> None:
    """Call last: every path no other route matched gets a 404 naming the `resources`."""
    message = "no such route; the resources are " + ", ".join(f"/{n}/" for n in resources)

    async def not_found(request: web.Request) -> web.Response:
        raise NotFound(message)

    router.add_route("*", "/{tail:.*}", wrap(not_found, routing))
