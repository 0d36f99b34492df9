"""HTTP responses built from cache lookups: validators and 304, the stored gzip copy, and the
caching headers (ETag, Cache-Control, Age, Vary, X-Cache and RFC 9211 Cache-Status)."""

from __future__ import annotations

import math
import re
from typing import Final

from aiohttp import web
from aiohttp.helpers import ETAG_ANY, ETag
from multidict import CIMultiDict

from .access import CACHE_OUTCOME
from .cache import Lookup, Outcome

JSON: Final = "application/json"
CACHE_NAME: Final = "cm-api"  # the cache's name in Cache-Status
REVALIDATE: Final = "no-cache"  # Cache-Control of cached answers: kept, revalidated by ETag
GZIP_SUFFIX: Final = "-gzip"  # a strong ETag differs per content coding (RFC 9110 8.8.3)
# RFC 9110 12.4.2. float() would also read "inf", "1e999", "0_1" or non-ASCII digits as weights.
_QVALUE: Final = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_GZIP_OR_ANY: Final = frozenset({"gzip", "x-gzip", "*"})


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value admits gzip (q-values honoured, `*` included)."""
    value = accept_encoding.lower()  # content codings are case-insensitive
    if "gzip" not in value and "*" not in value:
        return False
    if ";" not in value:  # no weights, as browsers send it: any listed coding is wanted
        return not _GZIP_OR_ANY.isdisjoint(map(str.strip, value.split(",")))
    gzip_q: float | None = None
    any_q: float | None = None
    for item in value.split(","):
        coding, _, params = item.partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip() == "q":
                weight = value.strip()
                # An unreadable weight counts as 0: the coding is not known to be wanted.
                q = float(weight) if _QVALUE.fullmatch(weight) else 0.0
        coding = coding.strip()
        if coding in ("gzip", "x-gzip"):
            gzip_q = q
        elif coding == "*":
            any_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return any_q is not None and any_q > 0


def not_modified(if_none_match: tuple[ETag, ...] | None, tag: str) -> bool:
    """If-None-Match uses the weak comparison: W/"x" matches "x" (RFC 9110 13.1.2)."""
    if not if_none_match:
        return False
    accepted = (tag, tag + GZIP_SUFFIX, ETAG_ANY)
    return any(t.value in accepted for t in if_none_match)


def whole_seconds(freshness: float) -> int:
    # Rounded away from zero, so a positive ttl always means fresh and a negative one stale.
    return math.ceil(freshness) if freshness > 0 else math.floor(freshness)


def cache_status(lookup: Lookup) -> str:
    """RFC 9211 Cache-Status of a lookup."""
    ttl = whole_seconds(lookup.freshness)
    outcome, detail = lookup.outcome, lookup.detail
    if outcome is Outcome.HIT:
        return f"{CACHE_NAME}; hit; ttl={ttl}"
    if outcome is Outcome.MISS:
        stored = "; stored" if detail == "stored" else ""
        return f"{CACHE_NAME}; fwd=miss; ttl={ttl}{stored}"
    if outcome is Outcome.COALESCED:
        return f"{CACHE_NAME}; fwd=miss; ttl={ttl}; collapsed"
    if detail == "revalidating":
        return f"{CACHE_NAME}; hit; ttl={ttl}; detail=revalidating"
    return f"{CACHE_NAME}; fwd=stale; ttl={ttl}; detail={detail}"


def _headers(lookup: Lookup, gzip: bool) -> CIMultiDict[str]:
    """The response headers of `lookup` served plain or gzipped, without Content-Type and
    Content-Encoding."""
    entry = lookup.entry
    return CIMultiDict(
        (
            ("ETag", f'"{entry.tag}{GZIP_SUFFIX}"' if gzip else f'"{entry.tag}"'),
            ("Cache-Control", REVALIDATE),
            ("Vary", "Accept-Encoding"),
            ("Age", str(int(lookup.age))),  # whole seconds; the clock is monotonic
            ("X-Cache", lookup.outcome.value),
            ("Cache-Status", cache_status(lookup)),
            *entry.headers,
        )
    )


def cached_response(request: web.Request, lookup: Lookup) -> web.Response:
    request[CACHE_OUTCOME] = lookup.outcome
    entry = lookup.entry
    gzip = entry.gzip is not None and accepts_gzip(request.headers.get("Accept-Encoding", ""))
    headers = _headers(lookup, gzip)
    if not_modified(request.if_none_match, entry.tag):
        return web.Response(status=304, headers=headers)
    if gzip:
        response = web.Response(body=entry.gzip, headers=headers, content_type=JSON)
        response.headers["Content-Encoding"] = "gzip"
        return response
    return web.Response(body=entry.body, headers=headers, content_type=JSON)
