"""What every answered request adds to the metrics, kept as plain numbers and turned into
Prometheus families only when Prometheus scrapes (a prometheus-client Collector).

Not prometheus-client's Counter and Histogram children: each update of theirs takes a lock,
and a request made six (bench/README.md, "Figures behind design choices"). Only the event
loop's thread changes or reads these numbers, so they need no lock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from .cache import Outcome

# The cache results of a data route's answer: its Outcome, or "error" for a 5xx without one.
_RESULT_OF: Final = {outcome: outcome.value.lower() for outcome in Outcome}
CACHE_RESULTS: Final = (*_RESULT_OF.values(), "error")
# Bounded method label: anything else a client sends is "other".
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD: Final = "other"


@dataclass(slots=True)
class _Durations:
    """One route's duration histogram: a count per bucket (not cumulative; the last one is
    +Inf) and the sum of the observations."""

    counts: list[int]
    total: float = 0.0


@dataclass(slots=True, eq=False)  # hashable by identity: the registry keys its collectors
class HttpStats:
    """Requests answered by route, method and status; their durations by route; cache results
    by resource; requests in flight (moved by routing.wrap). A prometheus-client Collector."""

    buckets: Sequence[float]  # upper bounds of the duration histogram, ascending, without +Inf
    in_flight: int = 0
    _requests: dict[tuple[str, str, int], int] = field(default_factory=dict)
    _durations: dict[str, _Durations] = field(default_factory=dict)
    _cache: dict[tuple[str, str], int] = field(default_factory=dict)

    def declare(self, route: str, resource: str | None) -> None:
        """Make a route's main series exist at zero before its first request (so that rate()
        and absent() see them from the start)."""
        if route not in self._durations:
            self._new_durations(route)
        for status in (200, 304, 503) if resource is not None else (200,):
            self._requests.setdefault((route, "GET", status), 0)
        if resource is not None:
            for result in CACHE_RESULTS:
                self._cache.setdefault((resource, result), 0)

    # -- the request path --------------------------------------------------------------------

    def count(
        self,
        route: str,
        resource: str | None,
        method: str,
        status: int,
        *,
        seconds: float,
        outcome: Outcome | None,
    ) -> None:
        """One answered request of `route` (serving `resource`, if a data route)."""
        key = (route, method if method in METHODS else OTHER_METHOD, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        durations = self._durations.get(route)
        if durations is None:
            durations = self._new_durations(route)
        # Prometheus buckets count observations <= their bound: the first bound >= seconds.
        durations.counts[bisect_left(self.buckets, seconds)] += 1
        durations.total += seconds
        if resource is not None:
            if outcome is not None:
                self._count_cache(resource, _RESULT_OF[outcome])
            elif status >= 500:
                self._count_cache(resource, "error")

    def _count_cache(self, resource: str, result: str) -> None:
        key = (resource, result)
        self._cache[key] = self._cache.get(key, 0) + 1

    def _new_durations(self, route: str) -> _Durations:
        durations = self._durations[route] = _Durations([0] * (len(self.buckets) + 1))
        return durations

    # -- the scrape ----------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "cmapi_http_requests",
            "HTTP requests answered, by route template, method and status",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in sorted(self._requests.items()):
            requests.add_metric([route, method, str(status)], count)
        yield requests
        # By route only: a method label would double the biggest block of every scrape (each
        # series is 14 lines) for HEAD requests nobody charts apart.
        durations = HistogramMetricFamily(
            "cmapi_http_request_duration_seconds",
            "From the request's arrival to its last byte written, less the time a long-poll"
            " was held waiting for a change",
            labels=["route"],
        )
        bounds = [*map(floatToGoString, self.buckets), "+Inf"]
        for route, series in sorted(self._durations.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, series.counts, strict=True):
                running += count
                cumulative.append((bound, float(running)))
            durations.add_metric([route], cumulative, series.total)
        yield durations
        yield GaugeMetricFamily(
            "cmapi_http_requests_in_flight", "Requests being handled now", value=self.in_flight
        )
        cache = CounterMetricFamily(
            "cmapi_cache_requests",
            "Requests answered through the cache, by resource and result",
            labels=["resource", "result"],
        )
        for (resource, result), count in sorted(self._cache.items()):
            cache.add_metric([resource, result], count)
        yield cache
