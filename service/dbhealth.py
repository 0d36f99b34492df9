"""What this replica knows of its database now: reachable or not, and why, from the latest
outcome of a statement, a connection attempt or a ping; and the background ping that keeps it
current when no request asked the database lately.

It is shown by /readyz?verbose and cmapi_db_up and logged once per incident, but it never
decides readiness: every replica shares the database, so taking them out of the Service for
its outage would only turn stale answers and honest 503s into connection errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import structlog

log = structlog.get_logger(__name__)

# Kinds of failure (the `kind` label of cmapi_db_query_errors_total) that say the database did
# not answer; "server" (it answered with an error) and "pool" (no free connection) do not.
UNREACHABLE_KINDS: Final = frozenset({"timeout", "connection"})


@dataclass(frozen=True, slots=True)
class DatabaseStatus:
    up: bool
    message: str  # what the latest outcome was, named by cause; no address, no driver text
    since: float  # clock time the database became up or down
    checked_at: float  # clock time of the latest outcome


@dataclass(slots=True)
class _Incident:
    kind: str
    since: float
    failures: int = 1


class DatabaseHealth:
    """Fed by db.Database with every outcome; `clock` is injectable for tests, and what the
    ages of its status are measured with."""

    def __init__(self, where: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._where = where
        self.clock = clock
        now = clock()
        self._status = DatabaseStatus(False, "not reached yet", now, now)
        # The failure being lived through: logged when it starts, changes kind and ends, so an
        # outage under load is a few lines, not one per request.
        self._incident: _Incident | None = None
        self.tls = "no connection yet"  # the newest connection's, as `encrypted` was told

    def status(self) -> DatabaseStatus:
        return self._status

    def quiet_for(self) -> float:
        """Seconds since the latest outcome."""
        return self.clock() - self._status.checked_at

    def succeeded(self, message: str) -> None:
        self._set(True, message)
        incident = self._incident
        if incident is not None:
            self._incident = None
            log.info(
                "database_recovered",
                kind=incident.kind,
                failures=incident.failures,
                lasted_s=round(self.clock() - incident.since, 3),
            )

    def failed(self, kind: str, message: str, reason: str, resource: str) -> None:
        """A failed statement, connection attempt or ping of `kind` (UNREACHABLE_KINDS, "server"
        or "pool"): `message` is the status for the first, `reason` (the driver's words, never
        the password) goes to the log."""
        if kind in UNREACHABLE_KINDS:
            self._set(False, message)
        elif kind == "server":
            self._set(True, "answered, with an error")
        incident = self._incident
        if incident is not None and incident.kind == kind:
            incident.failures += 1
            return
        log_failure = log.error if kind == "server" else log.warning
        log_failure(
            "database_failing",
            kind=kind,
            reason=reason,
            resource=resource,
            where=self._where,
            previous_kind=None if incident is None else incident.kind,
        )
        self._incident = _Incident(kind, self.clock())

    def encrypted(self, tls: str, *, as_configured: bool) -> None:
        """A new connection's TLS, described by `tls`; logged when it differs from the one
        before, as a warning when it is not encrypted although DB_SSL_MODE asked for TLS."""
        if tls == self.tls:
            return
        log_tls = log.info if as_configured else log.warning
        log_tls("database_tls", tls=tls, previous=self.tls, where=self._where)
        self.tls = tls

    def _set(self, up: bool, message: str) -> None:
        now = self.clock()
        since = self._status.since if self._status.up == up else now
        self._status = DatabaseStatus(up, message, since, now)


async def keep_checked(
    health: DatabaseHealth,
    ping: Callable[[], Awaitable[object]],
    interval: float,
) -> None:
    """Ping whenever nothing told `health` anything for `interval` seconds (and no ping was
    tried in that time either: one that records nothing, say for want of a free connection,
    is not repeated at once); run as a task until cancelled. `ping` records its own outcome."""
    tried = health.clock() - interval
    while True:
        since_tried = health.clock() - tried
        wait = interval - min(health.quiet_for(), since_tried)
        if wait > 0:
            await asyncio.sleep(wait)
            continue
        tried = health.clock()
        try:
            await ping()
        except Exception as exc:  # the ping has told `health` what it means
            log.debug("database_check_failed", error=repr(exc))
