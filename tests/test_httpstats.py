"""HttpStats as a unit: what the request path counts, read back the way Prometheus reads it
(prometheus-client's text exposition, parsed by its own parser)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.cache import Outcome
from service.httpstats import HttpStats

BUCKETS = (0.001, 0.01, 0.1)


def scrape(stats: HttpStats) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry()
    registry.register(stats)
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples[name, frozenset(labels.items())]


def test_declared_routes_exist_at_zero() -> None:
    stats = HttpStats(BUCKETS)
    stats.declare("/acc/", "acc")
    stats.declare("/livez", None)
    s = scrape(stats)
    for status in ("200", "304", "503"):
        assert (
            value(s, "cmapi_http_requests_total", route="/acc/", method="GET", status=status) == 0
        )
    assert value(s, "cmapi_http_requests_total", route="/livez", method="GET", status="200") == 0
    assert (
        "cmapi_http_requests_total",
        frozenset({("route", "/livez"), ("method", "GET"), ("status", "304")}),
    ) not in s
    for result in ("hit", "miss", "coalesced", "stale", "error"):
        assert value(s, "cmapi_cache_requests_total", resource="acc", result=result) == 0
    assert value(s, "cmapi_http_request_duration_seconds_count", route="/livez") == 0
    assert value(s, "cmapi_http_requests_in_flight") == 0


def test_durations_fall_in_the_first_bucket_whose_bound_they_do_not_exceed() -> None:
    stats = HttpStats(BUCKETS)
    for seconds in (0.0005, 0.001, 0.0011, 0.1, 0.5, 7.0):
        stats.count("/acc/", "acc", "GET", 200, seconds=seconds, outcome=Outcome.HIT)
    s = scrape(stats)

    def bucket(le: str) -> float:
        return value(s, "cmapi_http_request_duration_seconds_bucket", route="/acc/", le=le)

    # Cumulative, and a bound counts what equals it (Prometheus' "less than or equal").
    assert [bucket(le) for le in ("0.001", "0.01", "0.1", "+Inf")] == [2, 3, 4, 6]
    assert value(s, "cmapi_http_request_duration_seconds_count", route="/acc/") == 6
    total = value(s, "cmapi_http_request_duration_seconds_sum", route="/acc/")
    assert abs(total - 7.6026) < 1e-9
    assert value(s, "cmapi_http_requests_total", route="/acc/", method="GET", status="200") == 6


def test_methods_outside_the_known_set_share_one_label() -> None:
    stats = HttpStats(BUCKETS)
    for method in ("GET", "HEAD", "BREW", "PROPFIND", "get"):
        status = 405 if method != "GET" else 200
        stats.count("/acc/", "acc", method, status, seconds=0.0001, outcome=None)
    s = scrape(stats)
    assert value(s, "cmapi_http_requests_total", route="/acc/", method="GET", status="200") == 1
    assert value(s, "cmapi_http_requests_total", route="/acc/", method="HEAD", status="405") == 1
    assert value(s, "cmapi_http_requests_total", route="/acc/", method="other", status="405") == 3


def test_cache_results_and_requests_in_flight() -> None:
    stats = HttpStats(BUCKETS)
    for route, resource, status, outcome in (
        ("/acc/", "acc", 200, Outcome.HIT),
        ("/acc/", "acc", 304, Outcome.HIT),
        ("/user/", "user", 200, Outcome.STALE),
        ("/user/", "user", 503, None),  # no answer from the cache: an error
        ("/user/", "user", 400, None),  # refused before the cache: not a cache result
        ("/livez", None, 500, None),  # not a data route
    ):
        stats.count(route, resource, "GET", status, seconds=0.001, outcome=outcome)
    stats.in_flight += 3
    stats.in_flight -= 1
    s = scrape(stats)
    assert value(s, "cmapi_cache_requests_total", resource="acc", result="hit") == 2
    assert value(s, "cmapi_cache_requests_total", resource="user", result="stale") == 1
    assert value(s, "cmapi_cache_requests_total", resource="user", result="error") == 1
    assert sum(v for (name, _), v in s.items() if name == "cmapi_cache_requests_total") == 4
    assert value(s, "cmapi_http_requests_in_flight") == 2
