"""cm-api started before its database: with nothing listening (a refused connection) or behind
a black hole (a handshake that never comes), it retries DB_CONNECT_RETRIES times,
DB_CONNECT_RETRY_DELAY apart, and becomes ready as soon as the database appears; when it never
does, it exits 1 after the last attempt with one line naming the server and the problem.
"""

from __future__ import annotations

import time
from typing import Final

import pytest

from devtools.mariadb import PrivateMariaDB

from ..conftest import free_port
from .conftest import (
    SOON,
    Account,
    FaultReport,
    MariaDBView,
    StartCmApi,
    eventually,
    settled,
)
from .proxy import FaultProxy, Mode

CONNECT_TIMEOUT = 0.5
# What the driver or the pool reports for each way of being absent.
ABSENCES: Final = {
    "closed": "(2003) Can't connect to MySQL server on '127.0.0.1'",
    "blackhole": f"no answer within DB_CONNECTION_TIMEOUT ({CONNECT_TIMEOUT:g} s)",
}


def absent_database(private_db: PrivateMariaDB, absence: str) -> FaultProxy:
    """A proxy to the private MariaDB on a port of its own: listening but holding everything
    ("blackhole"), or not listening yet ("closed")."""
    address = private_db.address
    if absence == "closed":
        return FaultProxy(address.host, address.port, port=free_port())
    proxy = FaultProxy(address.host, address.port, port=free_port(), mode=Mode.BLACKHOLE)
    proxy.start()
    return proxy


@pytest.mark.parametrize("absence", ABSENCES)
async def test_start_before_the_database_then_ready_when_it_appears(
    private_db: PrivateMariaDB,
    start_cmapi: StartCmApi,
    mariadb: MariaDBView,
    fault_report: FaultReport,
    absence: str,
) -> None:
    proxy = absent_database(private_db, absence)
    status = mariadb.status("Connections", "Aborted_connects")
    try:
        cmapi = await start_cmapi(
            proxy.port,
            ready=False,
            DB_CONNECTION_TIMEOUT=str(CONNECT_TIMEOUT),
            DB_CONNECT_RETRIES="100",
            DB_CONNECT_RETRY_DELAY="0.1",
        )
        await eventually(
            lambda: len(cmapi.events("database_connect_failed")) >= 2, SOON, "start-up retrying"
        )
        assert cmapi.process.poll() is None
        assert (await cmapi.get("/livez", within=2.0)).status is None  # not listening yet

        if absence == "blackhole":
            proxy.set_mode(Mode.PASS)
        else:
            proxy.start()
        ready_s = await cmapi.wait_ready()  # from the database's appearance

        failures = cmapi.events("database_connect_failed")
        assert [e["attempt"] for e in failures] == list(range(1, len(failures) + 1))
        assert {e["attempts"] for e in failures} == {101}
        assert all(e["error"].startswith(ABSENCES[absence]) for e in failures), failures
        scrape = await settled(cmapi, mariadb)
        assert scrape.pool_total == 2 == len(mariadb.sessions(cmapi.user))
        assert scrape.opened == 2  # the pool's minimum, opened once the database answered
        acc = await cmapi.get("/acc/")
        assert acc.status == 200
        assert len(acc.json()) == 5
        # MariaDB saw the pool's two connections and, through a black hole, each handshake
        # the service gave up on (held, then let through and abandoned); refused attempts
        # never reached it.
        held = len(failures) if absence == "blackhole" else 0
        seen: dict[str, int] = {}

        def counted() -> bool:
            now = mariadb.status("Connections", "Aborted_connects")
            seen.update({name: now[name] - status[name] for name in now})
            return seen == {"Connections": 2 + held, "Aborted_connects": held}

        await eventually(counted, SOON, "MariaDB's connection counters", lambda: seen)
        fault_report.record(
            f"start_before_db_{absence}",
            failed_attempts=len(failures),
            clients={"status": {"200": 1}},
            recovery_s=round(ready_s, 3),
            leaked_connections=mariadb.leaked(cmapi.user, scrape),
        )
        assert await cmapi.stop() == 0
    finally:
        proxy.stop()


@pytest.mark.parametrize("absence", ABSENCES)
async def test_start_gives_up_after_the_last_retry(
    private_db: PrivateMariaDB,
    start_cmapi: StartCmApi,
    mariadb: MariaDBView,
    account: Account,
    fault_report: FaultReport,
    absence: str,
) -> None:
    proxy = absent_database(private_db, absence)
    status = mariadb.status("Connections")
    try:
        started = time.monotonic()
        cmapi = await start_cmapi(
            proxy.port,
            ready=False,
            DB_CONNECTION_TIMEOUT=str(CONNECT_TIMEOUT),
            DB_CONNECT_RETRIES="2",
            DB_CONNECT_RETRY_DELAY="0.1",
        )
        assert await cmapi.wait_exit(SOON) == 1
        exited_s = time.monotonic() - started
        line = "".join(cmapi.stderr).strip().splitlines()[-1]
        where = f"MySQL at 127.0.0.1:{proxy.port}, database 'cmapi', user {account.user!r}"
        assert line.startswith(
            f"cm-api: start-up failed: cannot connect to {where} after 3 attempt(s): "
            + ABSENCES[absence]
        ), line
        assert [e["attempt"] for e in cmapi.events("database_connect_failed")] == [1, 2]
        assert len(cmapi.events("startup_failed")) == 1
        if absence == "blackhole":
            assert proxy.accepted_total() == 3  # one handshake per attempt, none answered
        assert mariadb.status("Connections") == status  # MariaDB never heard of it
        fault_report.record(
            f"start_gives_up_{absence}",
            exit_code=1,
            message=line,
            exited_after_s=round(exited_s, 3),
            clients={},
            recovery_s=None,
            leaked_connections=0,
        )
    finally:
        proxy.stop()
