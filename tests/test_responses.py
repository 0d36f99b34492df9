"""The pure parts of service/responses.py: which Accept-Encoding values admit gzip, which
If-None-Match values match an entry (as aiohttp parses the header), the RFC 9211
Cache-Status value for each cache outcome, and the headers kept on an entry between hits."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.helpers import ETAG_ANY, ETag
from aiohttp.test_utils import make_mocked_request

from service.cache import Entry, Lookup, Outcome
from service.responses import accepts_gzip, cache_status, cached_response, not_modified

# --- accepts_gzip --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "gzip",
        "gzip, deflate",
        "deflate, gzip",
        "gzip, deflate, br, zstd",
        " gzip ",
        "gzip;q=1",
        "gzip;q=1.0",
        "gzip; q=0.5",
        "gzip;q=0.001",
        "gzip;Q=0.5",
        "br;q=1.0, gzip;q=0.8, *;q=0.1",
        "x-gzip",
        "x-gzip;q=0.5",
        "*",
        "*;q=0.5",
        "identity, *",
        "deflate;q=0, *",
        "*;q=0, gzip",
        "gzip;level=9;q=0.5",
    ],
)
def test_accepts_gzip(value: str) -> None:
    assert accepts_gzip(value) is True


@pytest.mark.parametrize(
    "value",
    [
        "",
        "identity",
        "deflate",
        "deflate, br",
        "gzipped",
        "gzip2, x-gzipx",
        "gzip;q=0",
        "gzip;q=0.0",
        "gzip;q=0.000",
        "gzip; q=0",
        "x-gzip;q=0",
        "*;q=0",
        "gzip;q=0, *",
        "*, gzip;q=0",
        "gzip;q=0, *;q=1",
        "identity;q=1, *;q=0",
        "gzip;q=",
        "gzip;q=abc",
        "gzip;q=0.5.5",
        ",,,;;;",
    ],
)
def test_refuses_gzip(value: str) -> None:
    # A q-value that does not parse counts as q=0: gzip is only sent when clearly welcome.
    assert accepts_gzip(value) is False


@pytest.mark.parametrize("value", ["GZIP", "Gzip", "X-GZIP", "deflate, GZip;q=0.5"])
def test_accepts_gzip_in_any_case(value: str) -> None:
    assert accepts_gzip(value) is True


# --- not_modified --------------------------------------------------------------------------------

TAG = "AbC-12_xyz"


def parsed(if_none_match: str) -> tuple[ETag, ...] | None:
    """If-None-Match as aiohttp hands it to the handler."""
    request = make_mocked_request("GET", "/acc/", headers={"If-None-Match": if_none_match})
    return request.if_none_match


def test_no_if_none_match_is_never_not_modified() -> None:
    assert not_modified(None, TAG) is False
    assert not_modified((), TAG) is False
    assert make_mocked_request("GET", "/acc/").if_none_match is None


@pytest.mark.parametrize(
    "etags",
    [
        (ETag(value=TAG),),
        (ETag(value=TAG, is_weak=True),),
        (ETag(value="other"), ETag(value=TAG)),
        (ETag(value=ETAG_ANY),),
        (ETag(value=TAG + "-gzip"),),
        (ETag(value=TAG + "-gzip", is_weak=True),),
    ],
    ids=["strong", "weak", "list", "any", "gzip", "weak-gzip"],
)
def test_matching_etag_objects(etags: tuple[ETag, ...]) -> None:
    assert not_modified(etags, TAG) is True


@pytest.mark.parametrize(
    "etags",
    [
        (ETag(value="other"),),
        (ETag(value="other"), ETag(value="other-gzip", is_weak=True)),
        (ETag(value=TAG.lower()),),
        (ETag(value=TAG + "-GZIP"),),
        (ETag(value=TAG + "-gzip-gzip"),),
        (ETag(value=TAG + "x"),),
        (ETag(value=TAG[:-1]),),
        (ETag(value="gzip"),),
        (ETag(value=""),),
    ],
    ids=[
        "other",
        "others",
        "case",
        "gzip-case",
        "gzip-twice",
        "longer",
        "prefix",
        "suffix",
        "empty",
    ],
)
def test_non_matching_etag_objects(etags: tuple[ETag, ...]) -> None:
    assert not_modified(etags, TAG) is False


@pytest.mark.parametrize(
    "header",
    [
        f'"{TAG}"',
        f'W/"{TAG}"',
        f'"a", "{TAG}"',
        f'"a",W/"b",   "{TAG}-gzip"',
        "*",
        f'"{TAG}-gzip"',
    ],
)
def test_matching_headers(header: str) -> None:
    assert not_modified(parsed(header), TAG) is True


@pytest.mark.parametrize(
    "header",
    [
        "",
        TAG,  # not quoted: not an entity-tag at all
        f'"{TAG}x"',
        '"a", "b"',
        f'w/"{TAG}"',  # the weak prefix is case-sensitive
        "**",
        f'garbage, "{TAG}"',  # aiohttp stops at the first thing that is not an entity-tag
    ],
)
def test_non_matching_headers(header: str) -> None:
    assert not_modified(parsed(header), TAG) is False


# --- cache_status --------------------------------------------------------------------------------

ENTRY = Entry(body=b"[]", gzip=None, tag="t", headers=(), loaded_at=100.0)

CASES = [
    (Lookup(ENTRY, Outcome.HIT, age=1.2, freshness=3.8), "cm-api; hit; ttl=4"),
    (Lookup(ENTRY, Outcome.HIT, age=4.99, freshness=0.01), "cm-api; hit; ttl=1"),
    (
        Lookup(ENTRY, Outcome.MISS, age=0.01, freshness=4.99, detail="stored"),
        "cm-api; fwd=miss; ttl=5; stored",
    ),
    (Lookup(ENTRY, Outcome.MISS, age=0.01, freshness=-0.01), "cm-api; fwd=miss; ttl=-1"),
    (
        Lookup(ENTRY, Outcome.COALESCED, age=0.3, freshness=4.7),
        "cm-api; fwd=miss; ttl=5; collapsed",
    ),
    (
        Lookup(ENTRY, Outcome.STALE, age=7.5, freshness=-2.5, detail="revalidating"),
        "cm-api; hit; ttl=-3; detail=revalidating",
    ),
    (
        Lookup(ENTRY, Outcome.STALE, age=42.0, freshness=-37.0, detail="stale-if-error"),
        "cm-api; fwd=stale; ttl=-37; detail=stale-if-error",
    ),
]


@pytest.mark.parametrize(("lookup", "expected"), CASES)
def test_cache_status(lookup: Lookup, expected: str) -> None:
    assert cache_status(lookup) == expected


def test_cache_status_cases_cover_every_outcome_and_stale_detail() -> None:
    assert {lookup.outcome for lookup, _ in CASES} == set(Outcome)
    stale = {lookup.detail for lookup, _ in CASES if lookup.outcome is Outcome.STALE}
    assert stale == {"revalidating", "stale-if-error"}


def test_cache_status_ignores_the_entry() -> None:
    big = Entry(b"x" * 5000, b"z", "other", (("Link", "<x>"),), 0.0)
    lookup = Lookup(big, Outcome.HIT, age=0.0, freshness=5.0)
    assert cache_status(lookup) == "cm-api; hit; ttl=5"


# --- cached_response: headers kept on the entry ---------------------------------------------------


def test_headers_are_rebuilt_when_a_whole_second_passes_and_kept_apart_per_coding() -> None:
    entry = Entry(body=b"[" + b"1," * 1000 + b"1]", gzip=b"gz", tag="t", headers=(), loaded_at=0.0)
    plain = make_mocked_request("GET", "/acc/")
    gzip = make_mocked_request("GET", "/acc/", headers={"Accept-Encoding": "gzip"})

    def served(request: web.Request, age: float) -> dict[str, str]:
        response = cached_response(request, Lookup(entry, Outcome.HIT, age, 5.0 - age))
        response.headers["X-Request-ID"] = "r"  # what routing adds must not reach the entry
        return dict(response.headers)

    first = served(plain, 1.2)
    assert served(plain, 1.9) == first  # the same second: the kept headers
    assert (first["Age"], first["Cache-Status"], first["ETag"]) == (
        "1",
        "cm-api; hit; ttl=4",
        '"t"',
    )
    later = served(plain, 2.1)
    assert (later["Age"], later["Cache-Status"]) == ("2", "cm-api; hit; ttl=3")
    zipped = served(gzip, 2.2)
    assert (zipped["ETag"], zipped["Content-Encoding"]) == ('"t-gzip"', "gzip")
    assert "Content-Encoding" not in served(plain, 2.3)
    assert served(plain, 2.4)["Content-Type"] == "application/json"
