"""Application factory: wires settings, resources opened in cleanup_ctx, and routes.
It only wires; every piece of behaviour lives in its own module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from .cache import ReadThroughCache
from .db import Database
from .errors import DatabaseQueryError, DatabaseUnavailable, StartupError
from .handlers import ResourceHandlers
from .http_errors import add_not_found, add_read_only
from .keys import CACHE, CATALOG, DATABASE, SETTINGS
from .resources import build_catalog
from .settings import Settings

log = structlog.get_logger(__name__)

# Seconds the pool waits at shutdown for connections still serving a request.
POOL_CLOSE_GRACE = 10.0


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the pool, check the schema once, and close the pool at shutdown."""
    settings = app[SETTINGS]
    db = Database(settings)
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
    for resource in catalog.resources.values():
        if resource.hidden:
            log.info("columns_hidden", table=resource.table, columns=list(resource.hidden))
    app[DATABASE] = db
    app[CATALOG] = catalog
    log.info("database_ready", where=db.where, resources=list(catalog.resources))
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
    )
    app[CACHE] = cache
    yield
    await cache.close()


def create_app(settings: Settings) -> web.Application:
    # Requests carry no body: a small limit rejects anything bigger with 413 early.
    app = web.Application(client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(cache_ctx)
    for name in settings.resources:
        handlers = ResourceHandlers(name)
        add_read_only(app.router, f"/{name}", handlers.list)
        add_read_only(app.router, f"/{name}/", handlers.list)
        add_read_only(app.router, f"/{name}/{{id}}", handlers.item)
    add_not_found(app.router, settings.resources)
    return app
