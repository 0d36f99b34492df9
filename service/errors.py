"""Domain exceptions. They carry a stable machine code and a message that is safe to show a
client: never SQL text, credentials or a stack trace. Each class names the HTTP status it is
answered with: routing.py answers with it, openapi.py documents it."""

from __future__ import annotations


class ServiceError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # What the operator's log may say beyond `message` (e.g. the driver's error); never
        # sent to a client.
        self.detail = detail


class BadRequest(ServiceError):
    status = 400
    code = "bad_request"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ServiceError):
    """A method other than routing.ALLOWED on a path that serves those."""

    status = 405
    code = "method_not_allowed"


class CorsRejected(ServiceError):
    """A CORS preflight whose origin, method or headers the policy does not allow."""

    status = 403
    code = "cors_rejected"


class ResultTooLarge(ServiceError):
    """A whole list bigger than MAX_LIST_BYTES: the client has to ask for pages instead."""

    status = 400
    code = "result_too_large"


class DatabaseUnavailable(ServiceError):
    """The database cannot answer now (down, unreachable, pool exhausted, query timed out).
    Worth retrying later; never to be mistaken for an empty result."""

    status = 503
    code = "database_unavailable"


class DatabaseQueryError(ServiceError):
    """The database answered with an error a retry will not fix (e.g. the schema changed)."""

    status = 500
    code = "database_error"


class StartupError(Exception):
    """The process cannot start; the message is one clear line for the operator."""


class Unauthorized(ServiceError):
    """The request lacks a valid bearer token. `error` is RFC 6750's error code for the
    WWW-Authenticate challenge (None when no credentials were sent at all)."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, realm: str, error: str | None = None) -> None:
        super().__init__(message)
        self.challenge = f'Bearer realm="{realm}"' + (f', error="{error}"' if error else "")
