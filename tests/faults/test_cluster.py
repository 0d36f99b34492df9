"""cm-api as the example overlay deploys it, in a cluster simulated from the rendered manifests
(cluster.py: real cm-api processes, a kubelet that probes them as specified, a Service that
routes to Ready endpoints only and learns of changes 1-2 s late), with dashboard tabs polling
through the Service while the database disappears, restarts, a rollout replaces every pod,
and one replica loses its own path to the database.

What must hold: a database outage is every replica's, so none leaves the Service for it; tabs
get the cached answers (stale-if-error) or the 503 envelope, never a connection error; a
rollout costs no poll at all. Each scenario's figures are printed at the end of the run and
written to $FAULTS_REPORT.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import signal
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest

from devtools.mariadb import PrivateMariaDB

from ..conftest import required_tool
from .cluster import PROXY_LAG, Cluster, Deployment, Pod, Service, Workload
from .conftest import (
    DATABASE,
    LOAD_USER_IDS,
    Account,
    FaultReport,
    Scrape,
    Transcript,
    eventually,
)
from .proxy import Mode

TOKEN: Final = "cluster-simulation-token-0123456789"
# The dashboard: tabs polling both lists and one page nobody asked for before (its own cache
# key: what a route never cached gets). Faster than a real dashboard's 30 s, for more samples.
TABS: Final = 6
POLL_PERIOD: Final = 1.0
# A browser waits for an answer; this only bounds the test.
POLL_TIMEOUT: Final = 30.0
OUTAGE: Final = 60.0  # the "database blackholed for 60 s"
# Longer than TTL + stale-while-revalidate (15 s by default): answers past it are
# stale-if-error, not stale-while-revalidate.
SHORT_OUTAGE: Final = 20.0
# The private database's users (config/demo-data.sql's and the fault suite's LOAD_USER_IDS).
USERS: Final = 5 + len(LOAD_USER_IDS)


@dataclass(frozen=True)
class Poll:
    kind: str  # "acc", "user" (the dashboard's lists) or "uncached"
    status: int | None  # None: no answer (connection error or time-out)
    x_cache: str | None
    cache_status: str
    sent: float
    seconds: float
    problem: str | None  # what is wrong with the answer, None when it is right

    @property
    def cached_route(self) -> bool:
        return self.kind != "uncached"

    @property
    def served(self) -> bool:
        """The tab has the data: a right 200, or a 304 for what it holds."""
        return self.problem is None and self.status in (200, 304)

    @property
    def unavailable(self) -> bool:
        """An honest 503: the JSON envelope with Retry-After."""
        return self.problem is None and self.status == 503

    @property
    def stale_if_error(self) -> bool:
        return "detail=stale-if-error" in self.cache_status


class Dashboard:
    """Browser tabs polling through the Service: a new connection per poll (what kube-proxy
    balances), the bearer token, gzip, and If-None-Match with the last ETag, as fetch() with
    cache "no-cache" sends it."""

    def __init__(self, port: int, users: int) -> None:
        self._base = f"http://127.0.0.1:{port}"
        self._users = users
        self._afters = itertools.count(LOAD_USER_IDS[0])
        self.polls: list[Poll] = []

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._tab(n, stop) for n in range(TABS)))

    async def _tab(self, n: int, stop: asyncio.Event) -> None:
        tags: dict[str, str] = {}
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.sleep(POLL_PERIOD * n / TABS)  # tabs opened at different moments
            while not stop.is_set():
                started = time.monotonic()
                after = next(self._afters)
                await asyncio.gather(
                    self._get(http, "acc", "/acc/", tags),
                    self._get(http, "user", "/user/", tags),
                    self._get(http, "uncached", f"/user/?limit=3&after={after}", tags),
                )
                await asyncio.sleep(max(0.0, POLL_PERIOD - (time.monotonic() - started)))

    async def _get(
        self, http: aiohttp.ClientSession, kind: str, path: str, tags: dict[str, str]
    ) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if path in tags:
            headers["If-None-Match"] = tags[path]
        sent = time.monotonic()
        try:
            async with http.get(
                self._base + path,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=POLL_TIMEOUT),
            ) as response:
                body = await response.read()
                status, got = response.status, response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.polls.append(Poll(kind, None, None, "", sent, time.monotonic() - sent, repr(exc)))
            return
        if status == 200 and "ETag" in got:
            tags[path] = got["ETag"]
        problem = self._check(kind, path, status, got, body)
        self.polls.append(
            Poll(kind, status, got.get("X-Cache"), got.get("Cache-Status", ""), sent,
                 time.monotonic() - sent, problem)
        )  # fmt: skip

    def _check(self, kind: str, path: str, status: int, headers: Any, body: bytes) -> str | None:
        if status == 304:
            return None
        if status == 503:
            error = json.loads(body).get("error", {})
            if (
                error.get("code") != "database_unavailable"
                or not headers.get("Retry-After", "").isdigit()
            ):
                return f"503 without the envelope: {body[:200]!r}"
            return None
        if status != 200:
            return f"{status}: {body[:200]!r}"
        rows = json.loads(body)
        if kind == "acc":
            expected = 5
        elif kind == "user":
            expected = self._users
        else:
            after = int(path.rpartition("=")[2])
            ids = [row["id"] for row in rows]
            return None if ids == [after + 1, after + 2, after + 3] else f"wrong page {ids}"
        return None if len(rows) == expected else f"{len(rows)} rows, expected {expected}"


def summary(polls: Iterable[Poll]) -> dict[str, Any]:
    """Counts by outcome and X-Cache, and latencies: what the report and README quote."""
    polls = list(polls)
    seconds = sorted(p.seconds for p in polls)
    return {
        "polls": len(polls),
        "status": dict(Counter(str(p.status) for p in polls)),
        "x_cache": dict(Counter(p.x_cache or "-" for p in polls)),
        "stale_if_error": sum(p.stale_if_error for p in polls),
        "wrong": sum(p.problem is not None for p in polls),
        "p50_s": round(statistics.median(seconds), 3) if seconds else None,
        "max_s": round(seconds[-1], 3) if seconds else None,
    }


def between(polls: Iterable[Poll], start: float, end: float, *kinds: str) -> list[Poll]:
    return [p for p in polls if start <= p.sent < end and (not kinds or p.kind in kinds)]


# -- the cluster ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workload() -> Workload:
    return Workload.render(required_tool("kubectl", "kubectl >= 1.27 (kustomize v5)"))


Run = Callable[[Workload], contextlib.AbstractAsyncContextManager[Deployment]]


@pytest.fixture
def run_cluster(
    private_db: PrivateMariaDB, account: Account, transcript: Transcript, tmp_path: Path
) -> Run:
    """run_cluster(workload): a context in which its `replicas` pods are Ready and known to
    kube-proxy; every pod is deleted (SIGTERM, grace) at its end."""
    (tmp_path / "password").write_text(account.password + "\n")
    (tmp_path / "tokens").write_text(f"# the simulated dashboard\n{TOKEN}\n")

    @contextlib.asynccontextmanager
    async def run(workload: Workload) -> AsyncIterator[Deployment]:
        service = Service(seed=17)
        service.start()
        prober = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        cluster = Cluster(
            workload, private_db.address, DATABASE, (account.user, account.password),
            tmp_path, service, transcript, http=prober,
        )  # fmt: skip
        deployment = Deployment(cluster)
        try:
            await asyncio.wait_for(deployment.scale_up(), 60)
            await asyncio.sleep(PROXY_LAG[1])  # kube-proxy has learnt of every endpoint
            yield deployment
        finally:
            await deployment.delete_all()
            service.stop()
            await prober.close()

    return run


@pytest.fixture
async def deployment(workload: Workload, run_cluster: Run) -> AsyncIterator[Deployment]:
    """The example overlay's workload, running."""
    async with run_cluster(workload) as running:
        yield running


async def direct(pod: Pod, path: str) -> tuple[int, dict[str, str], bytes]:
    """A request straight to one pod (an operator's port-forward), not through the Service."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{pod.port}{path}", headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.read()


async def scrape(pod: Pod) -> Scrape:
    status, _, body = await direct(pod, "/metrics")
    assert status == 200
    return Scrape.parse(body.decode())


async def warm(deployment: Deployment) -> None:
    """Both lists cached on every replica before anything goes wrong."""
    for pod in deployment.pods:
        for path in ("/acc/", "/user/"):
            status, _, _ = await direct(pod, path)
            assert status == 200, (pod.name, path)


async def hit_again(deployment: Deployment, since: float) -> float:
    """Seconds from `since` until every replica answers both lists from a fresh entry."""

    async def fresh() -> bool:
        for pod in deployment.pods:
            for path in ("/acc/", "/user/"):
                _, headers, _ = await direct(pod, path)
                if headers.get("X-Cache") not in ("HIT", "MISS", "COALESCED"):
                    return False
        return True

    await eventually(fresh, 30.0, "every replica serving fresh answers")
    return time.monotonic() - since


def cluster_facts(deployment: Deployment) -> dict[str, Any]:
    events = deployment.cluster.events
    return {
        "no_ready_endpoint": deployment.cluster.service.refused,
        "liveness_restarts": sum(k.pod.restarts for k in deployment.kubelets),
        "unready_transitions": events.count("unready"),
        "probes": dict(sum((k.probes for k in deployment.kubelets), Counter())),
    }


def assert_cluster_held(deployment: Deployment, facts: dict[str, Any]) -> None:
    assert facts["no_ready_endpoint"] == 0, facts
    assert facts["liveness_restarts"] == 0, facts
    assert facts["unready_transitions"] == 0, facts
    assert all(not k.pod.terminating for k in deployment.kubelets)


@dataclass
class Outage:
    dashboard: Dashboard
    down: float  # monotonic time the outage began
    up: float  # ... and ended
    recovery: float  # seconds from `up` until every replica served fresh answers again
    seen: dict[str, Any]  # what each replica said of itself just before the end
    errors: list[dict[str, Any]]  # the replicas' error log lines (for a failure's message)


async def outage_under_polling(
    deployment: Deployment,
    begin: Callable[[], object],
    end: Callable[[], object],
    hold: float,
) -> Outage:
    """Tabs poll; `begin()` starts the outage, `hold` seconds later each replica is asked what
    it sees (/readyz?verbose, cmapi_db_up) and `end()` ends it; polling goes on until every
    replica serves fresh answers again."""
    await warm(deployment)
    dashboard = Dashboard(deployment.cluster.service.port, USERS)
    stop = asyncio.Event()
    polling = asyncio.create_task(dashboard.run(stop))
    try:
        await asyncio.sleep(3 * POLL_PERIOD)
        await asyncio.to_thread(begin)
        down = time.monotonic()
        await asyncio.sleep(hold)
        seen = {pod.name: await self_report(pod) for pod in deployment.pods}
        up = time.monotonic()
        await asyncio.to_thread(end)
        recovery = await hit_again(deployment, up)
        await asyncio.sleep(3 * POLL_PERIOD)
    finally:
        stop.set()
        await polling
    errors = [
        e
        for pod in deployment.pods
        for container in pod.containers
        for e in container.events("unhandled_error")
    ]
    return Outage(dashboard, down, up, recovery, seen, errors)


async def self_report(pod: Pod) -> dict[str, Any]:
    """/readyz's status and database check, and cmapi_db_up, of one replica."""
    status, _, body = await direct(pod, "/readyz?verbose")
    database = next(c for c in json.loads(body)["checks"] if c["name"] == "database")
    return {
        "readyz": status,
        "database_check": f"{database['status']}: {database['message']}",
        "cmapi_db_up": (await scrape(pod)).value("cmapi_db_up"),
    }


def assert_outage_answers(outage: Outage, ttl: float) -> None:
    """Cached lists: data every time (STALE once their TTL passed); never-cached pages: the
    503 envelope; no poll without an answer; fresh again within one TTL."""
    polls, down, up, recovery = outage.dashboard.polls, outage.down, outage.up, outage.recovery
    assert all(p.status is not None for p in polls), [p for p in polls if p.status is None][:5]
    assert all(p.problem is None for p in polls), (
        [p for p in polls if p.problem][:5],
        outage.errors,
    )
    cached = between(polls, down, up, "acc", "user")
    assert cached
    assert all(p.served for p in cached), Counter((p.status, p.x_cache) for p in cached)
    # Answered within the outage once every entry's TTL had passed (a poll sent just before
    # its end may be answered by a load that succeeded after it).
    late = [p.x_cache for p in cached if p.sent >= down + ttl and p.sent + p.seconds < up]
    assert set(late) == {"STALE"}, Counter(late)
    assert any(p.stale_if_error for p in cached)
    # A page asked for while the database is away cannot be answered: the envelope.
    uncached = between(polls, down + 1.0, up - 6.0, "uncached")
    assert uncached
    assert all(p.unavailable for p in uncached), Counter(p.status for p in uncached)
    assert recovery < ttl, recovery
    # Once fresh answers are back, nothing is served stale for an error any more.
    assert not [p for p in polls if p.sent >= up + recovery and p.stale_if_error]
    # Every replica stayed ready, knew the database was away, and said why.
    for pod, seen in outage.seen.items():
        assert seen["readyz"] == 200, (pod, seen)
        assert seen["cmapi_db_up"] == 0, (pod, seen)
        assert seen["database_check"].startswith("degraded: down for "), (pod, seen)


def outage_facts(outage: Outage) -> dict[str, Any]:
    during = between(outage.dashboard.polls, outage.down, outage.up)
    return {
        "outage_s": round(outage.up - outage.down, 1),
        "cached_lists": summary(p for p in during if p.cached_route),
        "never_cached": summary(p for p in during if not p.cached_route),
        "recovery_to_fresh_s": round(outage.recovery, 3),
        "replicas_said": outage.seen,
    }


async def test_database_blackholed_for_a_minute(
    deployment: Deployment, fault_report: FaultReport
) -> None:
    pods = list(deployment.pods)
    ttl = deployment.cluster.workload.cache_ttl

    def blackhole() -> None:
        for pod in pods:
            pod.break_network(Mode.BLACKHOLE)

    def restore() -> None:
        for pod in pods:
            pod.break_network(Mode.PASS)

    outage = await outage_under_polling(deployment, blackhole, restore, OUTAGE)
    facts = cluster_facts(deployment)
    fault_report.record(
        "cluster_blackhole_60s",
        workload=deployment.cluster.workload.describe(),
        **outage_facts(outage),
        **facts,
    )
    assert_outage_answers(outage, ttl)
    assert_cluster_held(deployment, facts)
    assert all([(await scrape(pod)).value("cmapi_db_up") == 1 for pod in pods])


async def test_database_restarted_under_polling(
    deployment: Deployment, private_db: PrivateMariaDB, fault_report: FaultReport
) -> None:
    ttl = deployment.cluster.workload.cache_ttl
    outage = await outage_under_polling(
        deployment, private_db.stop_server, private_db.start_server, SHORT_OUTAGE
    )
    facts = cluster_facts(deployment)
    fault_report.record("cluster_db_restart", **outage_facts(outage), **facts)
    assert_outage_answers(outage, ttl)
    assert_cluster_held(deployment, facts)


async def test_rolling_update_under_polling(
    deployment: Deployment, fault_report: FaultReport
) -> None:
    workload = deployment.cluster.workload
    old = [k.pod for k in deployment.kubelets]
    dashboard = Dashboard(deployment.cluster.service.port, USERS)
    stop = asyncio.Event()
    polling = asyncio.create_task(dashboard.run(stop))
    try:
        await asyncio.sleep(3 * POLL_PERIOD)
        started = time.monotonic()
        await asyncio.wait_for(deployment.rolling_update(), 120)
        codes = await deployment.terminated()
        finished = time.monotonic()
        await asyncio.sleep(3 * POLL_PERIOD)
    finally:
        stop.set()
        await polling
    events = deployment.cluster.events
    polls = dashboard.polls
    fault_report.record(
        "cluster_rolling_update",
        rollout_s=round(finished - started, 1),
        polls=summary(polls),
        connection_errors=sum(p.status is None for p in polls),
        exit_codes=codes,
        killed_after_grace=events.count("killed"),
        timeline=[
            f"{t - started:+.1f} s {pod} {what}"
            for t, pod, what in events.items
            if t >= started and what in ("container_started", "ready", "deleted", "exited 0")
        ],
        no_ready_endpoint=deployment.cluster.service.refused,
    )
    assert all(p.status is not None for p in polls), [p for p in polls if p.status is None][:5]
    assert all(p.served for p in polls), Counter((p.status, p.problem) for p in polls)
    assert deployment.cluster.service.refused == 0
    assert codes == [0] * len(old)
    assert events.count("killed") == 0
    assert all(pod not in deployment.pods for pod in old)
    assert len(deployment.pods) == workload.replicas
    # The strategy's pace: never fewer available pods than replicas - maxUnavailable.
    available: set[str] = set()
    for _, pod, what in events.items:
        if what == "ready":
            available.add(pod)
        elif what in ("deleted", "unready"):
            available.discard(pod)
            assert len(available) >= workload.replicas - workload.max_unavailable, (pod, what)


async def test_one_replica_loses_its_path_to_the_database(
    deployment: Deployment, fault_report: FaultReport
) -> None:
    """The trade-off: that replica stays in the Service, serving its cached answers and 503s,
    while the others serve fresh data. Taking it out on database trouble would also empty the
    Service in a real outage, which no replica can tell apart from its own broken path."""
    cut, *others = deployment.pods
    outage = await outage_under_polling(
        deployment,
        lambda: cut.break_network(Mode.BLACKHOLE),
        lambda: cut.break_network(Mode.PASS),
        SHORT_OUTAGE,
    )
    facts = cluster_facts(deployment)
    polls = outage.dashboard.polls
    uncached = between(polls, outage.down + 1.0, outage.up - 6.0, "uncached")
    fault_report.record(
        "cluster_one_replica_cut_off",
        replicas=len(deployment.pods),
        **outage_facts(outage),
        never_cached_503_share=round(sum(p.unavailable for p in uncached) / len(uncached), 2),
        **facts,
    )
    assert all(p.status is not None and p.problem is None for p in polls)
    assert all(p.served for p in between(polls, outage.down, outage.up, "acc", "user"))
    # Pages nobody cached: the cut-off replica's share is 503, the others' is data.
    assert any(p.unavailable for p in uncached)
    assert any(p.served for p in uncached)
    assert_cluster_held(deployment, facts)
    # Its trouble shows where an operator looks (readiness's details, cmapi_db_up and so the
    # alert CmApiReplicaCannotReachDatabase), while it stays ready.
    seen = outage.seen[cut.name]
    assert seen["readyz"] == 200
    assert seen["cmapi_db_up"] == 0
    assert seen["database_check"].startswith("degraded: down for ")
    for pod in others:
        assert outage.seen[pod.name]["cmapi_db_up"] == 1


async def test_the_kubelet_model_restarts_a_replica_whose_liveness_fails(
    workload: Workload, run_cluster: Run
) -> None:
    """The model's own check, so that "0 liveness restarts" above is a count that can move: a
    frozen process (SIGSTOP) fails its liveness probes, leaves the Service, and is replaced by
    a new container on the same pod. Probes and grace shortened for the test's sake."""
    quick = dataclasses.replace(
        workload,
        startup=dataclasses.replace(workload.startup, period=0.5),
        liveness=dataclasses.replace(workload.liveness, period=0.5, timeout=0.5),
        readiness=dataclasses.replace(workload.readiness, period=0.5, timeout=0.5),
        termination_grace=1.0,
    )
    async with run_cluster(quick) as deployment:
        frozen, *_ = deployment.pods
        first = frozen.container
        assert first is not None
        os.kill(first.process.pid, signal.SIGSTOP)
        await eventually(
            lambda: frozen.restarts == 1 and frozen.available,
            30.0,
            "restarted",
            lambda: (deployment.cluster.events.items, [k.probes for k in deployment.kubelets]),
        )
        assert frozen.container is not first
        assert first.process.returncode == -signal.SIGKILL  # frozen past the grace: killed
        events = [what for _, pod, what in deployment.cluster.events.items if pod == frozen.name]
        assert events == [
            "container_started", "started", "ready",
            # Frozen: out of the endpoints (readiness) and replaced (liveness).
            "unready", "restart (liveness probe failed)", "killed", f"exited {-signal.SIGKILL}",
            "container_started", "started", "ready",
        ]  # fmt: skip
        kubelet = next(k for k in deployment.kubelets if k.pod is frozen)
        assert kubelet.probes["liveness failed"] >= quick.liveness.failure_threshold
