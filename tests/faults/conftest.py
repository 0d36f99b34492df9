"""The fault suite's fixtures: one private MariaDB for the session (ours, so it can be stopped
and restarted), cm-api's own account with a known password, the real `python -m service`
process (optionally behind a FaultProxy), MariaDB's own view of it (PROCESSLIST, SHOW GLOBAL
STATUS), the secret check over everything the suite received, and the JSON summary written to
$FAULTS_REPORT.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import pymysql
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.mariadb import (
    PrivateMariaDB,
    ServerAddress,
    can_install_packages,
    connect,
    create_database,
)

from ..conftest import DEMO_DATA, SCHEMA, drain, free_port, listening_env, spawn_service
from .proxy import FaultProxy

DATABASE: Final = "cmapi"
# Extra users, so that any `/user/?limit=L&after=N` of UncachedPaths is a full page: an empty
# list can then only be a wrong answer.
LOAD_USER_IDS: Final = range(1001, 4001)
# A generous bound for anything that must happen "soon" on a noisy 2-core machine.
SOON: Final = 15.0
# No answer may take longer than this; well above every configured time-out.
ANSWER_LIMIT: Final = 10.0
# Time-outs kept short so that a fault is noticed (and the suite ends) quickly.
FAST_ENV: Final = {
    "DB_CONNECTION_TIMEOUT": "1",
    "DB_CONNECT_RETRIES": "0",
    "DB_ACQUIRE_TIMEOUT": "1",
    "DB_QUERY_TIMEOUT": "2",
    "SHUTDOWN_DELAY_SECONDS": "0",
    "SHUTDOWN_GRACE_SECONDS": "2",
    "LOG_LEVEL": "info",
    "LOG_FORMAT": "json",
    # Each fault counts connections, queries and aborts exactly: the background check's pings
    # would add their own. The cluster simulation runs it as deployed.
    "DB_CHECK_INTERVAL": "0",
}


# -- what clients got ---------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One HTTP exchange as the client saw it; `status` None: no answer (error or time-out)."""

    path: str
    status: int | None
    headers: dict[str, str]
    body: bytes
    sent: float  # time.monotonic() when the request was sent
    seconds: float
    error: str | None = None

    @property
    def x_cache(self) -> str | None:
        return self.headers.get("X-Cache")

    def json(self) -> Any:
        return json.loads(self.body)

    def describe(self) -> str:
        return f"{self.path}: {self.status} {self.x_cache} {self.body[:200]!r} {self.error or ''}"


def assert_unavailable(answer: Answer) -> None:
    """A 503 the way DESIGN.md promises it: the JSON error envelope and a Retry-After."""
    assert answer.status == 503, answer.describe()
    assert answer.headers.get("Retry-After", "").isdigit(), answer.describe()
    assert answer.headers.get("Content-Type", "").startswith("application/json")
    error = answer.json()["error"]
    assert error["code"] == "database_unavailable", answer.describe()
    assert isinstance(error["message"], str)
    assert error["message"], answer.describe()


def tally(answers: Iterable[Answer]) -> dict[str, dict[str, int]]:
    """Counts of statuses and X-Cache values, for assertions' messages and the report."""
    answers = list(answers)
    statuses = Counter(str(a.status) if a.status is not None else "none" for a in answers)
    caches = Counter(a.x_cache or "-" for a in answers)
    return {"status": dict(sorted(statuses.items())), "x_cache": dict(sorted(caches.items()))}


class UncachedPaths:
    """Distinct keyset pages of /user/, so that every request is its own cache key (its own
    query) and every page is full (LOAD_USER_IDS)."""

    def __init__(self) -> None:
        self._numbers = itertools.count()

    def next(self) -> tuple[str, int, int]:
        """(path, after, limit)."""
        n = next(self._numbers)
        span = len(LOAD_USER_IDS) - 100
        after, limit = LOAD_USER_IDS[0] + n % span, 7 + n // span
        return f"/user/?limit={limit}&after={after}", after, limit


def assert_page(answer: Answer, after: int, limit: int) -> None:
    """A 200 holding exactly the expected rows: never `[]`, never a short or empty body."""
    assert answer.status == 200, answer.describe()
    rows = answer.json()
    assert [row["id"] for row in rows] == list(range(after + 1, after + 1 + limit))


# -- what the service says about itself -------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Scrape:
    """One /metrics scrape: sample name and labels -> value."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def __repr__(self) -> str:  # assertion messages stay readable
        return f"<Scrape of {len(self.samples)} samples>"

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples = {
            (s.name, frozenset(s.labels.items())): float(s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        return cls(samples)

    def value(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name}{labels} in the scrape"
        return self.samples[key]

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def total(self, name: str, **labels: str) -> float:
        """Sum over every series of `name` carrying at least `labels`."""
        wanted = set(labels.items())
        found = [v for (n, ls), v in self.samples.items() if n == name and wanted <= ls]
        assert found, f"no sample {name}{labels} in the scrape"
        return sum(found)

    @property
    def in_use(self) -> int:
        return int(self.value("cmapi_db_pool_connections", state="in_use"))

    @property
    def idle(self) -> int:
        return int(self.value("cmapi_db_pool_connections", state="idle"))

    @property
    def pool_total(self) -> int:
        return self.in_use + self.idle

    @property
    def pending(self) -> int:
        return int(self.value("cmapi_db_pool_pending_acquires"))

    def closed(self, reason: str) -> int:
        return int(self.value("cmapi_db_connections_closed_total", reason=reason))

    @property
    def opened(self) -> int:
        return int(self.value("cmapi_db_connections_opened_total"))

    def queries(self, resource: str) -> int:
        """Statements that succeeded."""
        return int(self.value("cmapi_db_query_seconds_count", resource=resource))

    def query_errors(self, resource: str, kind: str | None = None) -> int:
        if kind is None:
            return int(self.total("cmapi_db_query_errors_total", resource=resource))
        return int(self.value("cmapi_db_query_errors_total", resource=resource, kind=kind))

    def retries(self, resource: str, outcome: str) -> int:
        """Statements run once more on a new connection, by outcome (succeeded, failed)."""
        return int(self.value("cmapi_db_query_retries_total", resource=resource, outcome=outcome))

    def http(self, route: str, status: int) -> int:
        return int(
            self.value("cmapi_http_requests_total", route=route, method="GET", status=str(status))
        )


# -- what MariaDB says ----------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    id: int
    command: str
    state: str
    info: str | None


class MariaDBView:
    """MariaDB's own account of cm-api's sessions and of its global counters, through a root
    connection of the test's (directly, never through the proxy)."""

    def __init__(self, address: ServerAddress) -> None:
        self._address = address
        self._conn: pymysql.Connection[Any] | None = None
        # SELECTs this view sent: MariaDB counts them in Com_select along with cm-api's.
        self.selects = 0

    def _query(self, statement: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = connect(self._address, timeout=5.0)
            try:
                with self._conn.cursor() as cursor:
                    cursor.execute(statement, args or None)
                    return list(cursor.fetchall())
            except (pymysql.err.OperationalError, pymysql.err.InterfaceError):
                # The server was restarted under this connection: once more on a new one.
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def leaked(self, user: str, scrape: Scrape) -> int:
        """Sessions of `user` that MariaDB holds beyond the pool's own connections in `scrape`:
        the report's "connections leaked"."""
        return len(self.sessions(user)) - scrape.pool_total

    def sessions(self, user: str) -> list[Session]:
        rows = self._query(
            "SELECT ID, COMMAND, COALESCE(STATE, ''), INFO FROM information_schema.PROCESSLIST"
            " WHERE USER = %s",
            (user,),
        )
        self.selects += 1
        return [
            Session(int(i), str(c), str(s), None if q is None else str(q)) for i, c, s, q in rows
        ]

    def status(self, *names: str) -> dict[str, int]:
        """SHOW GLOBAL STATUS (not a SELECT: it does not move Com_select)."""
        rows = self._query("SHOW GLOBAL STATUS")
        wanted = set(names)
        return {str(k): int(v) for k, v in rows if k in wanted}

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(pymysql.err.Error):
                conn.close()


# -- the real process -----------------------------------------------------------------------


class Transcript:
    """Everything the suite received from cm-api: process output, answers, scrapes."""

    def __init__(self) -> None:
        self._texts: list[tuple[str, str]] = []

    def add(self, what: str, text: str) -> None:
        self._texts.append((what, text))

    def answer(self, answer: Answer) -> None:
        headers = "\n".join(f"{k}: {v}" for k, v in answer.headers.items())
        self.add(f"answer {answer.path}", headers + "\n\n" + answer.body.decode("utf-8", "replace"))

    def containing(self, secret: str) -> list[str]:
        return [what for what, text in self._texts if secret in text]

    def kinds(self) -> dict[str, int]:
        return dict(Counter(what.split(" ")[0] for what, _ in self._texts))


class CmApi:
    """One running `python -m service`, its output, and an HTTP client for it."""

    def __init__(
        self, process: subprocess.Popen[str], port: int, user: str, transcript: Transcript
    ) -> None:
        self.process = process
        self.port = port
        self.user = user
        self._transcript = transcript
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._drains = [drain(process.stdout, self.stdout), drain(process.stderr, self.stderr)]
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._code: int | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def get(self, path: str, *, within: float = ANSWER_LIMIT) -> Answer:
        """GET `path`; no answer within `within` seconds is recorded as none (status None)."""
        sent = time.monotonic()
        try:
            async with self._http.get(
                self.url(path), timeout=aiohttp.ClientTimeout(total=within)
            ) as response:
                body = await response.read()
                answer = Answer(
                    path, response.status, dict(response.headers), body, sent,
                    time.monotonic() - sent,
                )  # fmt: skip
        except (aiohttp.ClientError, TimeoutError) as exc:
            answer = Answer(path, None, {}, b"", sent, time.monotonic() - sent, repr(exc))
        self._transcript.answer(answer)
        return answer

    async def scrape(self) -> Scrape:
        answer = await self.get("/metrics")
        assert answer.status == 200, answer.describe()
        return Scrape.parse(answer.body.decode())

    async def wait_ready(self, within: float = SOON) -> float:
        """Poll /readyz until it answers 200; the seconds it took."""

        async def ready() -> bool:
            if self.process.poll() is not None:
                await self.stop()
                raise AssertionError(f"cm-api exited early: {''.join(self.stderr)[-2000:]}")
            return (await self.get("/readyz", within=5.0)).status == 200

        return await eventually(ready, within, "cm-api ready")

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in list(self.stdout):
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    found.append(event)
        return found

    async def wait_exit(self, within: float) -> int:
        code = await asyncio.to_thread(self.process.wait, within)
        await self.stop()
        return code

    async def stop(self) -> int:
        """SIGTERM (if still running), wait, collect the output; the exit status."""
        if self._code is not None:
            return self._code
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.process.wait, 20.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = await asyncio.to_thread(self.process.wait)
        for thread in self._drains:
            await asyncio.to_thread(thread.join, 10.0)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        self._transcript.add("stdout", "".join(self.stdout))
        self._transcript.add("stderr", "".join(self.stderr))
        await self._http.close()
        self._code = code
        return code


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    within: float,
    what: str,
    explain: Callable[[], object] | None = None,
) -> float:
    """Poll `check` until it holds; the seconds it took. A bound, not a pause. `explain` gives
    the last state seen, for the failure's message."""
    started = time.monotonic()
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            last = "" if explain is None else f"; last seen: {explain()}"
            raise AssertionError(f"{what}: not within {within:g} s{last}")
        await asyncio.sleep(0.05)


# -- fixtures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    user: str
    password: str = field(repr=False)


class FaultReport:
    """Per fault, for $FAULTS_REPORT: what clients saw (`clients`: counts of statuses and
    X-Cache values), `recovery_s` (from the end of the fault to the first good answer; null
    where there was nothing to recover from), `leaked_connections` (MariaDB's sessions of
    cm-api's user minus the pool's connections, once settled), and whatever else the fault
    has to say."""

    def __init__(self) -> None:
        self.faults: dict[str, dict[str, Any]] = {}

    def record(self, fault: str, **facts: Any) -> None:
        self.faults[fault] = facts


REPORT: Final = pytest.StashKey[FaultReport]()
# Faults whose figures the end of the run prints (the README quotes them).
PRINTED_PREFIX: Final = "cluster_"


@pytest.fixture(scope="session")
def fault_report(pytestconfig: pytest.Config) -> Iterator[FaultReport]:
    report = pytestconfig.stash.setdefault(REPORT, FaultReport())
    yield report
    path = os.environ.get("FAULTS_REPORT")
    if path:
        Path(path).write_text(json.dumps({"faults": report.faults}, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The cluster simulation's figures, in the output of every run that ran it."""
    report = config.stash.get(REPORT, None)
    printed = {} if report is None else report.faults
    scenarios = {k: v for k, v in printed.items() if k.startswith(PRINTED_PREFIX)}
    if not scenarios:
        return
    terminalreporter.section("cluster simulation (tests/faults/test_cluster.py)")
    for name, facts in scenarios.items():
        terminalreporter.write_line(name.removeprefix(PRINTED_PREFIX) + ":")
        for key, value in facts.items():
            terminalreporter.write_line(f"  {key}: {json.dumps(value, ensure_ascii=False)}")


@pytest.fixture(scope="session")
def private_db() -> Iterator[PrivateMariaDB]:
    """A MariaDB of the suite's own, holding the schema, the demo rows and LOAD_USER_IDS."""
    server = PrivateMariaDB(allow_install=can_install_packages())
    server.start()
    try:
        create_database(server.address, DATABASE, [SCHEMA, DEMO_DATA])
        conn = connect(server.address, timeout=10.0, database=DATABASE)
        try:
            with conn.cursor() as cursor:
                first, last = LOAD_USER_IDS[0], LOAD_USER_IDS[-1]
                cursor.execute(
                    "INSERT INTO user (id, acc_id, login, full_name, role)"
                    " SELECT seq, 1 + seq % 5, CONCAT('load', seq), CONCAT('Load User ', seq),"
                    f" 'viewer' FROM seq_{first}_to_{last}"
                )
        finally:
            conn.close()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def account(private_db: PrivateMariaDB) -> Account:
    """cm-api's own MariaDB account: its sessions are told apart in PROCESSLIST, and its
    password is what the secret check looks for."""
    user, password = "cmapi_faults", f"Fault-{secrets.token_hex(12)}"
    conn = connect(private_db.address, timeout=10.0)
    try:
        with conn.cursor() as cursor:
            for host in ("%", "localhost"):
                cursor.execute("CREATE USER %s@%s IDENTIFIED BY %s", (user, host, password))
                cursor.execute(f"GRANT SELECT ON `{DATABASE}`.* TO %s@%s", (user, host))
    finally:
        conn.close()
    return Account(user, password)


@pytest.fixture(scope="session")
def mariadb(private_db: PrivateMariaDB) -> Iterator[MariaDBView]:
    view = MariaDBView(private_db.address)
    yield view
    view.close()


@pytest.fixture(scope="session")
def transcript(account: Account, fault_report: FaultReport) -> Iterator[Transcript]:
    """The secret check: nothing cm-api wrote or answered holds its database password."""
    collected = Transcript()
    yield collected
    leaks = collected.containing(account.password)
    fault_report.record("secret_check", texts_checked=collected.kinds(), leaks=leaks)
    assert not leaks, f"the database password appeared in: {leaks}"


@pytest.fixture
def proxy(private_db: PrivateMariaDB) -> Iterator[FaultProxy]:
    """A FaultProxy in PASS mode in front of the private MariaDB."""
    address = private_db.address
    with FaultProxy(address.host, address.port) as started:
        yield started


StartCmApi = Callable[..., Awaitable[CmApi]]


@pytest.fixture
async def start_cmapi(
    private_db: PrivateMariaDB, account: Account, transcript: Transcript
) -> AsyncIterator[StartCmApi]:
    """start(db_port, ready=True, **variables): cm-api talking to 127.0.0.1:`db_port` (the
    private MariaDB's port, or a proxy's) as `account`, with FAST_ENV and `variables`."""
    started: list[CmApi] = []

    async def start(db_port: int, *, ready: bool = True, **variables: str) -> CmApi:
        address = ServerAddress(private_db.address.host, db_port, account.user)
        port = free_port()
        env = {
            **listening_env(address, DATABASE, (account.user, account.password), port),
            **FAST_ENV,
            **variables,
        }
        cmapi = CmApi(spawn_service(env), port, account.user, transcript)
        started.append(cmapi)
        if ready:
            await cmapi.wait_ready()
        return cmapi

    yield start
    for cmapi in started:
        await cmapi.stop()


async def settled(cmapi: CmApi, mariadb: MariaDBView, within: float = SOON) -> Scrape:
    """Wait until nothing is in flight and MariaDB holds exactly the pool's connections, all
    idle; the scrape that showed it. Fails (the leak) when that does not happen in time."""
    seen: list[Scrape] = []
    last: list[str] = []

    async def quiet() -> bool:
        scrape = await cmapi.scrape()
        sessions = mariadb.sessions(cmapi.user)
        busy = [s for s in sessions if s.command != "Sleep"]
        seen.append(scrape)
        last[:] = [
            f"in_use={scrape.in_use} idle={scrape.idle} pending={scrape.pending}"
            f" loads={scrape.value('cmapi_cache_loads_in_flight')} sessions={len(sessions)}"
            f" busy={busy}"
        ]
        return (
            scrape.in_use == 0
            and scrape.pending == 0
            and scrape.value("cmapi_cache_loads_in_flight") == 0
            and scrape.value("cmapi_db_pool_opening_connections") == 0
            and len(sessions) == scrape.pool_total
            and not busy
        )

    await eventually(quiet, within, "pool settled", lambda: last)
    return seen[-1]
