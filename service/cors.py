"""CORS for the dashboard's pages (CORS_ALLOWED_ORIGINS, CORS_ALLOW_CREDENTIALS,
CORS_ALLOWED_HEADERS): the response headers that let an allowed origin's scripts read an
answer, and preflight answers.

Written here rather than taken from aiohttp-cors: that library cannot sit on a resource that
also has a '*' route (aio-libs/aiohttp-cors#241), which every route here has for its 405, and it
reaches into aiohttp's router internals; what a read-only API needs is this page."""

from __future__ import annotations

from typing import Final

from aiohttp import web

ALLOWED_METHODS: Final = ("GET", "HEAD")
# What the dashboard may send: a token, a validator for 304s, its own request id, a long-poll
# wait; and what fetch wrappers add to every request. The CORS-safelisted request headers are
# listed too: browsers ask for them when a value is not a safelisted one (a long Accept).
ALLOWED_HEADERS: Final = (
    "authorization",
    "if-none-match",
    "x-request-id",
    "prefer",
    "accept",
    "accept-language",
    "content-language",
    "content-type",
    "range",
    "x-requested-with",
    "cache-control",
    "pragma",
)
# Headers a script may read beyond the CORS-safelisted ones (Cache-Control, Content-Type, ...).
EXPOSED_HEADERS: Final = (
    "ETag, Link, Age, X-Cache, Cache-Status, X-Request-Id, Retry-After, Preference-Applied"
)
# Seconds a browser may reuse a preflight answer (Chromium caps it at 7200).
PREFLIGHT_MAX_AGE: Final = "600"


class PreflightRejected(Exception):
    """A preflight this policy does not allow; the message says what to change."""


def _add_vary(response: web.StreamResponse, name: str) -> None:
    vary = response.headers.get("Vary")
    response.headers["Vary"] = f"{vary}, {name}" if vary else name


class CorsPolicy:
    """Which origins may read the API from a browser, and whether with credentials."""

    def __init__(
        self, origins: frozenset[str], *, credentials: bool, headers: tuple[str, ...] = ()
    ) -> None:
        """`headers`: request headers a page may send besides ALLOWED_HEADERS (lower case)."""
        if credentials and "*" in origins:
            raise ValueError("credentials cannot be allowed for every origin")
        self._origins = origins
        self._any = "*" in origins
        self._credentials = credentials
        self._headers = ALLOWED_HEADERS + tuple(h for h in headers if h not in ALLOWED_HEADERS)
        self._header_set = frozenset(self._headers)

    def allows(self, origin: str) -> bool:
        return self._any or origin.lower() in self._origins

    def _allow_origin(self, response: web.StreamResponse, origin: str) -> None:
        if self._any:
            response.headers["Access-Control-Allow-Origin"] = "*"
        else:
            response.headers["Access-Control-Allow-Origin"] = origin
        if self._credentials:
            response.headers["Access-Control-Allow-Credentials"] = "true"

    def decorate(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """Add the CORS headers an actual (non-preflight) request's answer needs."""
        if not self._any:
            # The answer depends on Origin: a shared cache must not hand one origin's to another.
            _add_vary(response, "Origin")
        origin = request.headers.get("Origin")
        if origin is None or not self.allows(origin):
            return
        self._allow_origin(response, origin)
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS

    def preflight(self, request: web.BaseRequest, origin: str, method: str) -> web.Response:
        """The 204 answer to an allowed preflight; PreflightRejected says why one is not."""
        if not self.allows(origin):
            raise PreflightRejected(f"origin {origin[:100]!r} is not allowed")
        if method not in ALLOWED_METHODS:
            raise PreflightRejected(
                f"method {method[:16]!r} is not allowed; use {' or '.join(ALLOWED_METHODS)}"
            )
        requested = request.headers.get("Access-Control-Request-Headers", "")
        for name in (n.strip().lower() for n in requested.split(",")):
            if name and name not in self._header_set:
                raise PreflightRejected(
                    f"header {name[:64]!r} is not allowed; allowed: {', '.join(self._headers)} "
                    "(CORS_ALLOWED_HEADERS adds more)"
                )
        response = web.Response(status=204)
        self._allow_origin(response, origin)
        response.headers["Access-Control-Allow-Methods"] = ", ".join(ALLOWED_METHODS)
        response.headers["Access-Control-Allow-Headers"] = ", ".join(self._headers)
        response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        # (Vary: Origin is added by decorate(), which every answer goes through.)
        _add_vary(response, "Access-Control-Request-Method, Access-Control-Request-Headers")
        return response
