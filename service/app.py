"""Application factory: wires settings, resources opened in cleanup_ctx, metrics and routes.
It only wires; every piece of behaviour lives in its own module."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry

from .auth import BearerTokens
from .cache import ReadThroughCache
from .changes import ChangeWaits
from .cors import CorsPolicy
from .db import Database, QueryObserver
from .dbhealth import keep_checked
from .errors import DatabaseQueryError, DatabaseUnavailable, ResultTooLarge, StartupError
from .handlers import ResourceHandlers
from .health import Readiness, livez, readyz
from .keys import CACHE, CATALOG, CHANGES, DATABASE, METRICS, READINESS, SETTINGS
from .metrics import Metrics
from .openapi import openapi_ctx, openapi_json
from .request_id import RequestIds
from .resources import Catalog, build_catalog
from .routing import Routing, add_not_found, add_read_only
from .settings import Settings

log = structlog.get_logger(__name__)

# Seconds the pool waits at shutdown for connections still in use. By then the server has let
# in-flight requests finish (SHUTDOWN_GRACE_SECONDS) and the cache has cancelled its loads, so
# this only covers a connection on its way back.
POOL_CLOSE_GRACE = 5.0


async def open_database(
    settings: Settings, observer: QueryObserver | None = None
) -> tuple[Database, Catalog]:
    """Open the pool (retrying as configured) and verify every exposed table, as start-up and
    `cm-api check-config --database` do; StartupError names what is wrong. The caller closes
    the Database."""
    db = Database(settings, observer=observer)
    await db.start()
    try:
        tables = await db.introspect(settings.resources)
        catalog = build_catalog(
            settings.resources, tables, settings.expose_secret_columns, db.where
        )
    except (DatabaseUnavailable, DatabaseQueryError) as exc:
        await db.close()
        raise StartupError(f"cannot read the schema from {db.where}: {exc.message}") from None
    except BaseException:
        await db.close()
        raise
    return db, catalog


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the pool, check the schema once, and close the pool at shutdown."""
    db, catalog = await open_database(app[SETTINGS], observer=app[METRICS])
    for resource in catalog.resources.values():
        if resource.hidden:
            log.info("columns_hidden", table=resource.table, columns=list(resource.hidden))
    app[DATABASE] = db
    app[CATALOG] = catalog
    app[METRICS].watch_pool(db.stats)
    stats = db.stats()
    log.info(
        "database_ready",
        where=db.where,
        pool_min=stats.min_size,
        pool_max=stats.max_size,
        resources={
            name: {
                "table": r.table,
                "columns": list(r.columns),
                "key": r.key.name,
                "filters": [f.name for f in r.filters],
            }
            for name, r in catalog.resources.items()
        },
    )
    yield
    await db.close(POOL_CLOSE_GRACE)


async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
    """The response cache; loads still running at shutdown are cancelled before the pool
    closes (this context is cleaned up before database_ctx)."""
    settings = app[SETTINGS]
    cache = ReadThroughCache(
        ttl=settings.cache_ttl_seconds,
        stale_while_revalidate=settings.cache_stale_while_revalidate_seconds,
        stale_if_error=settings.cache_stale_if_error_seconds,
        max_bytes=settings.cache_max_bytes,
        # Only "cannot answer now" errors: a missing row is an answer, not an outage.
        failure_types=(DatabaseUnavailable, DatabaseQueryError),
        refusal_types=(ResultTooLarge,),
        on_load=app[METRICS].cache_loaded,
    )
    app[CACHE] = cache
    app[METRICS].watch_cache(cache.stats)
    yield
    await cache.close()


async def changes_ctx(app: web.Application) -> AsyncIterator[None]:
    """Requests held until their data changes (long-poll); released and their reloads stopped
    at shutdown, before the cache closes (this context comes after cache_ctx)."""
    changes = ChangeWaits(app[CACHE], max_held=app[SETTINGS].long_poll_max_held)
    app[CHANGES] = changes
    app[METRICS].watch_held(changes.stats)
    yield
    await changes.close()


async def readiness_ctx(app: web.Application) -> AsyncIterator[None]:
    """/readyz's state, and the background check that keeps the database's state current
    while no request asks it; needs the database, so it comes after database_ctx."""
    db, catalog = app[DATABASE], app[CATALOG]
    readiness = Readiness(
        db.health, db.stats, schema=f"{len(catalog.resources)} table(s) verified at start-up"
    )
    app[READINESS] = readiness
    app[METRICS].watch_readiness(lambda: readiness.ready)
    app[METRICS].watch_database(lambda: db.health.status().up)
    interval = app[SETTINGS].db_check_interval
    checking = asyncio.create_task(keep_checked(db.health, db.ping, interval)) if interval else None
    yield
    if checking is not None:
        checking.cancel()
        await asyncio.gather(checking, return_exceptions=True)


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> web.Application:
    """The app; its metrics go to `registry` (a new one by default, never the global one).
    Serve it with `access.server_options(app)` for the access log and HTTP metrics."""
    # Requests carry no body: a small limit rejects anything bigger with 413 early.
    app = web.Application(client_max_size=64 * 1024)
    app[SETTINGS] = settings
    metrics = app[METRICS] = Metrics(registry)
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(cache_ctx)
    app.cleanup_ctx.append(changes_ctx)
    app.cleanup_ctx.append(readiness_ctx)
    app.cleanup_ctx.append(openapi_ctx)
    cors = None
    if settings.cors_allowed_origins:
        cors = CorsPolicy(
            settings.cors_allowed_origins,
            credentials=settings.cors_allow_credentials,
            headers=settings.cors_allowed_headers,
        )
    routing = Routing(RequestIds(), metrics.http, cors)
    data_tokens = BearerTokens(settings.api_tokens, "cm-api") if settings.api_tokens else None
    router = app.router
    for name in settings.resources:
        handlers = ResourceHandlers(name)
        for path, handler in (
            (f"/{name}", handlers.list),
            (f"/{name}/", handlers.list),
            (f"/{name}/{{id}}", handlers.item),
        ):
            add_read_only(router, path, handler, routing, data_tokens)
            metrics.add_route(path, name)
    scrape_tokens = None
    if settings.metrics_tokens:
        scrape_tokens = BearerTokens(settings.metrics_tokens, "cm-api metrics")
    probes_and_scrape: tuple[tuple[str, Handler, BearerTokens | None], ...] = (
        ("/livez", livez, None),
        ("/readyz", readyz, None),
        ("/metrics", metrics.handler(), scrape_tokens),
        # It names every column of the data routes, so it takes their tokens.
        ("/openapi.json", openapi_json, data_tokens),
    )
    # Not data routes: no cache in front of them, no resource in their metrics. The probes are
    # always open (the kubelet sends no token).
    for path, endpoint, tokens in probes_and_scrape:
        add_read_only(router, path, endpoint, routing, tokens)
        metrics.add_route(path)
    add_not_found(router, settings.resources, routing)
    return app
