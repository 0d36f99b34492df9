"""DatabaseHealth on its own, with an injected clock: which outcomes make the database up or
down, since when, and the incident log lines (one when it starts or changes kind, one when
it ends)."""

from __future__ import annotations

from structlog.testing import capture_logs

from service.dbhealth import DatabaseHealth


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_state_follows_the_latest_outcome_and_keeps_since() -> None:
    clock = Clock()
    health = DatabaseHealth("MySQL at db:3306", clock)
    assert not health.status().up  # nothing reached yet
    health.succeeded("reached at start-up")
    clock.now = 110.0
    health.failed("connection", "refused: nothing accepts connections", "(2003) ...", "acc")
    clock.now = 115.0
    health.failed("timeout", "time-out: no answer", "no answer within 5 s", "user")
    status = health.status()
    assert (status.up, status.message, status.since, status.checked_at) == (
        False, "time-out: no answer", 110.0, 115.0
    )  # fmt: skip
    clock.now = 118.0
    assert health.quiet_for() == 3.0
    # A full pool says nothing of the database; an error answer says it is there.
    health.failed("pool", "no database connection free", "no database connection free", "acc")
    assert not health.status().up
    health.failed("server", "rejected", "(1142) SELECT command denied", "acc")
    status = health.status()
    assert (status.up, status.since) == (True, 118.0)
    health.succeeded("a query answered in 1.0 ms")
    assert health.status().since == 118.0  # still up since the error answer


def test_one_log_line_per_incident_and_kind() -> None:
    clock = Clock()
    health = DatabaseHealth("MySQL at db:3306", clock)
    with capture_logs() as logs:
        for _ in range(5):
            health.failed("connection", "refused", "(2003) refused", "acc")
        health.failed("timeout", "time-out", "no answer within 5 s", "acc")
        clock.now += 7.5
        health.succeeded("a ping answered in 0.3 ms")
        health.succeeded("a query answered in 1.0 ms")
    assert [(e["event"], e["kind"]) for e in logs] == [
        ("database_failing", "connection"),
        ("database_failing", "timeout"),
        ("database_recovered", "timeout"),
    ]
    assert logs[1]["previous_kind"] == "connection"
    assert (logs[2]["failures"], logs[2]["lasted_s"]) == (1, 7.5)
