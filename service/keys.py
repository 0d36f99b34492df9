"""Every value stored on the application, as a typed key.

The types are imported for the type checker only, so this module stays at the bottom of the
import graph (DESIGN.md section 3) and any module may import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .cache import ReadThroughCache
    from .changes import ChangeWaits
    from .db import Database
    from .health import Readiness
    from .metrics import Metrics
    from .openapi import ServedDocument
    from .resources import Catalog
    from .settings import Settings

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
DATABASE: web.AppKey[Database] = web.AppKey("database")
CATALOG: web.AppKey[Catalog] = web.AppKey("catalog")
CACHE: web.AppKey[ReadThroughCache] = web.AppKey("cache")
CHANGES: web.AppKey[ChangeWaits] = web.AppKey("changes")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
READINESS: web.AppKey[Readiness] = web.AppKey("readiness")
OPENAPI: web.AppKey[ServedDocument] = web.AppKey("openapi")
