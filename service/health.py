"""Kubernetes probes. `/livez`: the process and its event loop answer (never the database, so a
database outage never gets pods restarted). `/readyz`: this replica can serve now: the schema
was verified at start-up, a database ping succeeds (at most one per `PING_MAX_AGE` seconds,
whatever the number of probes) and shutdown has not begun.

Neither goes through the data cache, and neither counts as a data request in the metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import structlog
from aiohttp import web

from .errors import DatabaseUnavailable
from .keys import READINESS
from .routing import RETRY_AFTER_SECONDS, json_response

log = structlog.get_logger(__name__)

# How long one ping's result answers readiness: a probe storm (many kubelets, a curious
# operator, a load balancer) costs the database at most one ping per second.
PING_MAX_AGE: Final = 1.0

OK: Final = "ok"
FAILED: Final = "failed"
SKIPPED: Final = "skipped"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, FAILED or SKIPPED
    message: str  # shown to the prober
    detail: str | None = None  # for the operator's log only (e.g. the driver's error)


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
    """Whether this replica should get traffic. `ping` raises DatabaseUnavailable when the
    database cannot serve and returns the seconds it took otherwise; `clock` is injectable for
    tests of the ping cache."""

    def __init__(
        self,
        ping: Callable[[], Awaitable[float]],
        *,
        schema: str,
        max_age: float = PING_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ping = ping
        self._schema = Check("schema", OK, schema)
        self._max_age = max_age
        self._clock = clock
        self._last: tuple[float, Check] | None = None
        self._running: asyncio.Task[Check] | None = None
        self._draining = False
        # The start-up check just passed with a working connection.
        self._ready = True

    @property
    def ready(self) -> bool:
        """The last answer given (False from the start of shutdown); read by /metrics."""
        return self._ready and not self._draining

    @property
    def draining(self) -> bool:
        return self._draining

    def start_draining(self) -> None:
        """Shutdown has begun: every later report is 503, at once and without a ping."""
        self._draining = True

    async def report(self) -> Report:
        if self._draining:
            database = Check("database", SKIPPED, "not checked during shutdown")
            shutdown = Check("shutdown", FAILED, "shutdown has begun")
        else:
            database = await self._database()
            shutdown = Check("shutdown", OK, "not started")
        report = Report((self._schema, database, shutdown))
        if not self._draining and report.ready != self._ready:
            self._ready = report.ready
            if report.ready:
                log.info("ready_again")
            else:
                details = {c.name: c.detail for c in report.checks if c.detail is not None}
                log.warning("not_ready", reason=report.reason, details=details)
        return report

    async def close(self) -> None:
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)

    async def _database(self) -> Check:
        last = self._last
        if last is not None and self._clock() - last[0] < self._max_age:
            return last[1]
        if self._running is None:
            self._running = asyncio.create_task(self._run_ping())
        # Shielded: a probe that gives up must not cancel the ping other probes wait for.
        return await asyncio.shield(self._running)

    async def _run_ping(self) -> Check:
        try:
            seconds = await self._ping()
        except DatabaseUnavailable as exc:
            check = Check("database", FAILED, exc.message, exc.detail)
        else:
            check = Check("database", OK, f"ping answered in {seconds * 1000:.1f} ms")
        finally:
            self._running = None
        self._last = (self._clock(), check)
        return check


async def livez(request: web.Request) -> web.Response:
    return json_response(200, {"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    report = await request.app[READINESS].report()
    body: dict[str, object]
    if report.ready:
        body = {"status": "ready"}
    else:
        body = {
            "status": "not_ready",
            "error": {"code": "not_ready", "message": report.reason},
        }
    if "verbose" in request.query:
        body["checks"] = [
            {"name": c.name, "status": c.status, "message": c.message} for c in report.checks
        ]
    if report.ready:
        return json_response(200, body)
    return json_response(503, body, {"Retry-After": str(RETRY_AFTER_SECONDS)})
