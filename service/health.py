"""Kubernetes probes. `/livez`: the process and its event loop answer (never the database, so a
database outage never gets pods restarted). `/readyz`: this replica can answer usefully: the
schema was verified at start-up and shutdown has not begun.

The database is not a condition of readiness: every replica shares it, and a replica out of the
Service serves nobody, where a ready one serves its stale answers (stale-if-error) or an honest
503. Its state (dbhealth.py) and the pool's are shown by `?verbose` as checks that are `ok` or
`degraded` without changing the answer. Both probes read state only: they never wait for a
connection or a query. Neither goes through the data cache or counts as a data request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from .dbhealth import DatabaseHealth
from .keys import READINESS
from .pool import PoolStats
from .routing import RETRY_AFTER_SECONDS, json_response

OK: Final = "ok"
DEGRADED: Final = "degraded"  # something is wrong that taking the replica out would not mend
FAILED: Final = "failed"  # the replica must not get traffic
STATUSES: Final = (OK, DEGRADED, FAILED)
CHECKS: Final = ("schema", "database", "pool", "shutdown")  # in the order reported
# The "status" of /livez and /readyz answers; NOT_READY is also the 503's error code.
ALIVE: Final = "alive"
READY: Final = "ready"
NOT_READY: Final = "not_ready"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, DEGRADED or FAILED
    message: str  # shown to the prober: no addresses, no driver text


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]

    @property
    def ready(self) -> bool:
        return all(check.status != FAILED for check in self.checks)

    @property
    def reason(self) -> str:
        """What keeps the replica out of service (empty when ready)."""
        return "; ".join(f"{c.name}: {c.message}" for c in self.checks if c.status == FAILED)


class Readiness:
    """Whether this replica should get traffic, and what else is wrong."""

    def __init__(
        self, database: DatabaseHealth, pool: Callable[[], PoolStats], *, schema: str
    ) -> None:
        self._database = database
        self._pool = pool
        self._schema = Check("schema", OK, schema)
        self._draining = False

    @property
    def ready(self) -> bool:
        """False from the start of shutdown; read by /metrics."""
        return not self._draining

    @property
    def draining(self) -> bool:
        return self._draining

    def start_draining(self) -> None:
        """Shutdown has begun: every later report is 503."""
        self._draining = True

    def report(self) -> Report:
        if self._draining:
            shutdown = Check("shutdown", FAILED, "shutdown has begun")
        else:
            shutdown = Check("shutdown", OK, "not started")
        return Report((self._schema, self._database_check(), self._pool_check(), shutdown))

    def _database_check(self) -> Check:
        status = self._database.status()
        now = self._database.clock()
        checked = f"checked {now - status.checked_at:.1f} s ago; TLS: {self._database.tls}"
        if status.up:
            return Check("database", OK, f"up: {status.message}, {checked}")
        down = f"down for {now - status.since:.0f} s"
        return Check("database", DEGRADED, f"{down}: {status.message}; {checked}")

    def _pool_check(self) -> Check:
        p = self._pool()
        used = f"{p.in_use} of {p.max_size} connections in use"
        if p.pending and p.in_use >= p.max_size:
            return Check("pool", DEGRADED, f"saturated: {used}, {p.pending} waiting for one")
        return Check("pool", OK, f"{used}, {p.idle} idle")


async def livez(request: web.Request) -> web.Response:
    return json_response(200, {"status": ALIVE})


async def readyz(request: web.Request) -> web.Response:
    report = request.app[READINESS].report()
    body: dict[str, object]
    if report.ready:
        body = {"status": READY}
    else:
        body = {"status": NOT_READY, "error": {"code": NOT_READY, "message": report.reason}}
    if "verbose" in request.query:
        body["checks"] = [
            {"name": c.name, "status": c.status, "message": c.message} for c in report.checks
        ]
    if report.ready:
        return json_response(200, body)
    return json_response(503, body, {"Retry-After": str(RETRY_AFTER_SECONDS)})
