"""Optional bearer-token protection (RFC 6750) for routes that serve personal data or
operational detail. Tokens come from a file (settings: API_TOKENS_FILE, METRICS_TOKENS_FILE);
every token grants the same read access, so the cache is shared by all of them."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import Unauthorized
from .settings import Secret


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps the comparison's time independent of the presented
    # token's length and of how many leading characters it shares with a real one.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class BearerTokens:
    """The accepted tokens of one realm, kept only as SHA-256 digests."""

    def __init__(self, tokens: Iterable[Secret], realm: str) -> None:
        self._digests = tuple(_digest(t.reveal()) for t in tokens)
        if not self._digests:
            raise ValueError("BearerTokens needs at least one token")
        self.realm = realm

    def verify(self, authorization: str | None) -> None:
        """Return when `authorization` (the header's value) carries an accepted token; raise
        Unauthorized otherwise."""
        if authorization is None:
            raise Unauthorized(
                "this route needs an Authorization: Bearer <token> header", realm=self.realm
            )
        scheme, _, credentials = authorization.strip().partition(" ")
        token = credentials.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "the Authorization header must be Bearer <token>",
                realm=self.realm,
                error="invalid_request",
            )
        presented = _digest(token)
        # Every digest is compared, a match or not, so timing says nothing of which one matched.
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(digest, presented)
        if not matched:
            raise Unauthorized(
                "the bearer token is not valid", realm=self.realm, error="invalid_token"
            )


def require_token(handler: Handler, tokens: BearerTokens) -> Handler:
    """`handler`, answered only for requests that carry one of `tokens`."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        tokens.verify(request.headers.get("Authorization"))
        return await handler(request)

    return guarded
