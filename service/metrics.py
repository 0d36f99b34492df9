"""Prometheus metrics of one app: its own registry (never prometheus-client's global one), the
instruments the request path updates, and a collector that reads the pool's and the cache's
state at scrape time (nothing is updated per request for those).

Names follow HikariCP's pool vocabulary (in use, idle, pending, max, min) and Prometheus'
conventions (`_total`, `_seconds`, `_bytes`; labels bounded: route templates, never raw paths).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Final

import aiohttp
from aiohttp.typedefs import Handler
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .cache import CacheStats
from .changes import Ended, HeldStats
from .httpstats import HttpStats
from .pool import PoolStats

# A cache hit is answered in well under a millisecond, a cold list in tens of milliseconds, and
# the query time-out is seconds: the buckets cover all three. Every bucket is a line of every
# scrape for every series (the scrape's cost is per line), so there are no more than needed.
HTTP_BUCKETS: Final = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
)  # fmt: skip
QUERY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
)  # fmt: skip
# Taking an idle connection costs microseconds; waiting for one is bounded by DB_ACQUIRE_TIMEOUT.
ACQUIRE_BUCKETS: Final = (
    0.00001, 0.0001, 0.001, 0.01, 0.05, 0.25, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

QUERY_ERROR_KINDS: Final = ("timeout", "connection", "server", "pool")
RETRY_OUTCOMES: Final = ("succeeded", "failed")
# Why the pool closed connections (service/pool.py): listed so that each series starts at zero.
CLOSE_REASONS: Final = (
    "recycled",
    "broken",
    "timeout",
    "cancelled",
    "error",
    "shutdown",
    "shutdown_forced",
    "below_min",
    "startup_failed",
)
OTHER_LABEL: Final = "other"  # resource label of queries outside any resource (introspection)


class _StateCollector(Collector):
    """Readiness, pool and cache gauges (and lifetime counters), read when Prometheus scrapes."""

    def __init__(self) -> None:
        self.pool: Callable[[], PoolStats] | None = None
        self.cache: Callable[[], CacheStats] | None = None
        self.ready: Callable[[], bool] | None = None
        self.database_up: Callable[[], bool] | None = None
        self.held: Callable[[], HeldStats] | None = None

    def collect(self) -> Iterable[Metric]:
        if self.ready is not None:
            yield GaugeMetricFamily(
                "cmapi_ready",
                "1 while /readyz answers 200, 0 once shutdown has begun",
                value=1 if self.ready() else 0,
            )
        if self.database_up is not None:
            yield GaugeMetricFamily(
                "cmapi_db_up",
                "1 when the latest statement, connection attempt or ping reached the database, "
                "0 when it was refused, unreachable, timed out or lost",
                value=1 if self.database_up() else 0,
            )
        if self.pool is not None:
            yield from _pool_metrics(self.pool())
        if self.cache is not None:
            yield from _cache_metrics(self.cache())
        if self.held is not None:
            yield from _held_metrics(self.held())


def _pool_metrics(p: PoolStats) -> Iterator[Metric]:
    connections = GaugeMetricFamily(
        "cmapi_db_pool_connections",
        "Connections held by the pool now, by state",
        labels=["state"],
    )
    connections.add_metric(["in_use"], p.in_use)
    connections.add_metric(["idle"], p.idle)
    yield connections
    yield GaugeMetricFamily(
        "cmapi_db_pool_opening_connections",
        "Connections being opened now (handshake in progress)",
        value=p.opening,
    )
    yield GaugeMetricFamily(
        "cmapi_db_pool_max_connections", "Configured pool maximum", value=p.max_size
    )
    yield GaugeMetricFamily(
        "cmapi_db_pool_min_connections", "Configured pool minimum", value=p.min_size
    )
    yield GaugeMetricFamily(
        "cmapi_db_pool_pending_acquires",
        "Coroutines waiting for a connection now",
        value=p.pending,
    )
    yield CounterMetricFamily(
        "cmapi_db_pool_acquire_timeouts",
        "Acquires that gave up after DB_ACQUIRE_TIMEOUT",
        value=p.acquire_timeouts_total,
    )
    yield CounterMetricFamily(
        "cmapi_db_connections_opened",
        "Server connections opened by the pool",
        value=p.opened_total,
    )
    closed = CounterMetricFamily(
        "cmapi_db_connections_closed",
        "Server connections closed by the pool, by reason",
        labels=["reason"],
    )
    for reason in sorted(set(CLOSE_REASONS) | set(p.closed_total)):
        closed.add_metric([reason], p.closed_total.get(reason, 0))
    yield closed
    yield CounterMetricFamily(
        "cmapi_db_connect_errors",
        "Attempts to open a server connection that failed",
        value=p.connect_errors_total,
    )


def _held_metrics(h: HeldStats) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "cmapi_http_held_requests",
        "Requests held now until their data changes (Prefer: wait, long-poll)",
        value=h.held,
    )
    yield GaugeMetricFamily(
        "cmapi_http_max_held_requests",
        "The most requests held at once (LONG_POLL_MAX_HELD)",
        value=h.max_held,
    )
    ended = CounterMetricFamily(
        "cmapi_http_long_polls",
        "Requests that asked to wait for a change, by how the wait ended (changed, timeout, "
        "released at shutdown, gone: the client left, refused: not held)",
        labels=["ended"],
    )
    for how in Ended:
        ended.add_metric([how.value], h.ended.get(how.value, 0))
    yield ended


def _cache_metrics(c: CacheStats) -> Iterator[Metric]:
    yield GaugeMetricFamily("cmapi_cache_entries", "Entries stored in the cache", value=c.entries)
    yield GaugeMetricFamily(
        "cmapi_cache_bytes", "Bytes stored (bodies, gzip copies, bookkeeping)", value=c.bytes
    )
    yield GaugeMetricFamily(
        "cmapi_cache_max_bytes", "The byte budget (CACHE_MAX_BYTES)", value=c.max_bytes
    )
    yield GaugeMetricFamily(
        "cmapi_cache_loads_in_flight", "Cache loads running now", value=c.in_flight
    )
    yield GaugeMetricFamily(
        "cmapi_cache_requests_waiting", "Requests waiting for a cache load now", value=c.waiting
    )
    yield CounterMetricFamily(
        "cmapi_cache_evictions", "Entries dropped to stay within the byte budget", value=c.evictions
    )
    yield CounterMetricFamily(
        "cmapi_cache_oversize",
        "Loads served but not stored: bigger than the whole budget",
        value=c.oversize,
    )
    yield CounterMetricFamily(
        "cmapi_cache_refreshes",
        "Background loads started by stale-while-revalidate or for long-poll waiters",
        value=c.refreshes,
    )
    yield CounterMetricFamily(
        "cmapi_cache_load_errors", "Loads that failed with a database error", value=c.load_errors
    )


class Metrics:
    """The app's registry and instruments; see README's metrics section for each name."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = CollectorRegistry() if registry is None else registry
        self.registry = r
        self.http = HttpStats(HTTP_BUCKETS)
        r.register(self.http)
        self.acquire_seconds = Histogram(
            "cmapi_db_pool_acquire_seconds",
            "Time to get a pooled connection (successful acquires)",
            buckets=ACQUIRE_BUCKETS,
            registry=r,
        )
        self.query_seconds = Histogram(
            "cmapi_db_query_seconds",
            "Time from sending a statement to its last row, by resource",
            ["resource"],
            buckets=QUERY_BUCKETS,
            registry=r,
        )
        self.query_errors = Counter(
            "cmapi_db_query_errors",
            "Statements that failed, by resource and kind (timeout, connection, server, pool)",
            ["resource", "kind"],
            registry=r,
        )
        self.connections_tls = Counter(
            "cmapi_db_connections_tls",
            "Server connections opened, by TLS version (none: not encrypted)",
            ["version"],
            registry=r,
        )
        self.query_retries = Counter(
            "cmapi_db_query_retries",
            "Statements run once more on a new connection because theirs broke before any row"
            " arrived, by resource and outcome (succeeded, failed)",
            ["resource", "outcome"],
            registry=r,
        )
        self.cache_load_seconds = Histogram(
            "cmapi_cache_load_seconds",
            "Time to fill a cache entry: query, encoding, ETag and gzip copy",
            ["resource"],
            buckets=QUERY_BUCKETS,
            registry=r,
        )
        build = Gauge(
            "cmapi_build_info",
            "Always 1; the labels say what is running",
            ["version", "python", "aiohttp"],
            registry=r,
        )
        build.labels(__version__, platform.python_version(), aiohttp.__version__).set(1)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._state = _StateCollector()
        r.register(self._state)
        # Route template -> (route label, resource or None); anything else is "unmatched".
        self._routes: dict[str, tuple[str, str | None]] = {}

    # -- wiring -----------------------------------------------------------------------------

    def watch_pool(self, stats: Callable[[], PoolStats]) -> None:
        self._state.pool = stats

    def watch_cache(self, stats: Callable[[], CacheStats]) -> None:
        self._state.cache = stats

    def watch_held(self, stats: Callable[[], HeldStats]) -> None:
        self._state.held = stats

    def watch_readiness(self, ready: Callable[[], bool]) -> None:
        self._state.ready = ready

    def watch_database(self, up: Callable[[], bool]) -> None:
        self._state.database_up = up

    def add_route(self, template: str, resource: str | None = None) -> None:
        """Declare a route template (and the resource it serves), with its main series at 0."""
        self._routes[template] = (template, resource)
        self.http.declare(template, resource)
        if resource is not None:
            self.query_seconds.labels(resource)
            self.cache_load_seconds.labels(resource)
            for kind in QUERY_ERROR_KINDS:
                self.query_errors.labels(resource, kind)
            for outcome in RETRY_OUTCOMES:
                self.query_retries.labels(resource, outcome)

    def route(self, template: str | None) -> tuple[str, str | None]:
        """(route label, resource) of a matched route template."""
        if template is None:
            return "unmatched", None
        return self._routes.get(template, ("unmatched", None))

    # -- recording (the request path's own counts are in self.http) -------------------------

    def cache_loaded(self, key: Hashable, seconds: float) -> None:
        resource = key[0] if isinstance(key, tuple) and key else OTHER_LABEL
        self.cache_load_seconds.labels(str(resource)).observe(seconds)

    # db.QueryObserver

    def acquired(self, seconds: float) -> None:
        self.acquire_seconds.observe(seconds)

    def query_done(self, resource: str, seconds: float) -> None:
        self.query_seconds.labels(resource).observe(seconds)

    def query_failed(self, resource: str, kind: str) -> None:
        self.query_errors.labels(resource, kind).inc()

    def connection_opened(self, tls_version: str) -> None:
        self.connections_tls.labels(tls_version).inc()

    def query_retried(self, resource: str, outcome: str) -> None:
        self.query_retries.labels(resource, outcome).inc()

    def handler(self) -> Handler:
        """GET /metrics: prometheus-client's own aiohttp exposition (text format, OpenMetrics
        when the scraper asks for it). Not compressed: aiohttp's threaded gzip waits for the
        event loop's GIL under load, which cost a busy scrape far more than the bytes it saves
        (bench/README.md)."""
        return make_aiohttp_handler(self.registry, disable_compression=True)
