"""Request middlewares: every error leaves as the JSON envelope
{"error": {"code": ..., "message": ...}} with the right status, and never with internals."""

from __future__ import annotations

from typing import Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from .encoding import encode
from .errors import (
    BadRequest,
    DatabaseQueryError,
    DatabaseUnavailable,
    NotFound,
    ServiceError,
)
from .keys import SETTINGS

log = structlog.get_logger(__name__)

# Long enough not to hammer a database that is restarting, short enough for a dashboard.
RETRY_AFTER_SECONDS: Final = 2

_STATUS: Final[dict[type[ServiceError], int]] = {
    BadRequest: 400,
    NotFound: 404,
    DatabaseUnavailable: 503,
    DatabaseQueryError: 500,
}
_HTTP_CODES: Final = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    414: "uri_too_long",
    431: "headers_too_large",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = encode({"error": {"code": code, "message": message}})
    response = web.Response(
        status=status, body=body, content_type="application/json", headers=headers
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _explain(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPNotFound):
        routes = ", ".join(f"/{name}/" for name in request.app[SETTINGS].resources)
        return f"no such route; the resources are {routes}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = " or ".join(sorted(exc.allowed_methods))
        return f"method {request.method[:16]} is not allowed here; use {allowed}"
    return exc.reason


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServiceError as exc:
        status = _STATUS.get(type(exc), 500)
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
        return error_response(status, exc.code, exc.message, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
        return error_response(exc.status, code, _explain(request, exc), headers)
    except Exception:
        # Logged with its traceback for the operator; the client learns nothing internal.
        log.exception("unhandled_error", path=request.path, method=request.method)
        return error_response(500, "internal_error", "internal server error")
