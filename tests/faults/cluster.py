"""A Kubernetes cluster simulated from the rendered manifests, for tests/faults/test_cluster.py.

No cluster runs here, so its parts that matter to cm-api are modelled from what
`kubectl kustomize deploy/k8s/overlays/example` renders, and everything else is real:
  - `Workload`: replicas, the three probes, terminationGracePeriodSeconds, the rolling update
    strategy and the ConfigMap's environment, read from the rendered Deployment;
  - `Pod`: real `python -m service` processes (a container restarted is a new process on the
    same port, as a pod keeps its IP), each reaching the database through a FaultProxy of its
    own (its network path);
  - `Kubelet`: probes each container exactly as its spec says (startup first, then liveness
    and readiness every period, with their timeouts and thresholds), restarts a container whose
    liveness fails, and terminates a deleted pod with SIGTERM, then SIGKILL after the grace;
  - `Service`: kube-proxy's view of the Service, a TCP proxy that sends each new connection to
    the next Ready endpoint (round robin) and refuses it when there is none; it learns of
    endpoint changes 1-2 s late, as kube-proxy does;
  - `Deployment`: a rolling update at the pace the strategy allows (maxSurge, maxUnavailable).
The fakes are the cluster's parts, never cm-api: it answers every request itself.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml

from devtools.mariadb import ServerAddress
from service.settings import VARIABLES

from ..conftest import ROOT, free_port, spawn_service
from .conftest import CmApi, Transcript, eventually
from .proxy import FaultProxy, Mode

OVERLAY: Final = ROOT / "deploy" / "k8s" / "overlays" / "example"
# kube-proxy applies an endpoint change this much later (seconds, uniformly drawn).
PROXY_LAG: Final = (1.0, 2.0)


# -- the manifests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    path: str
    port: int  # the container port the probe names
    period: float
    timeout: float
    failure_threshold: int
    success_threshold: int
    initial_delay: float

    @classmethod
    def parse(cls, spec: Mapping[str, Any], ports: Mapping[str, int]) -> Probe:
        get = spec["httpGet"]
        port = get["port"]
        return cls(
            path=get["path"],
            port=ports[port] if isinstance(port, str) else int(port),
            # Kubernetes' defaults where the manifest says nothing.
            period=float(spec.get("periodSeconds", 10)),
            timeout=float(spec.get("timeoutSeconds", 1)),
            failure_threshold=int(spec.get("failureThreshold", 3)),
            success_threshold=int(spec.get("successThreshold", 1)),
            initial_delay=float(spec.get("initialDelaySeconds", 0)),
        )


@dataclass(frozen=True)
class Workload:
    """What the rendered Deployment (and the ConfigMap its container reads) say."""

    replicas: int
    startup: Probe
    liveness: Probe
    readiness: Probe
    termination_grace: float
    max_surge: int
    max_unavailable: int
    min_ready_seconds: float
    http_port: int  # the container port named "http"
    env: dict[str, str]  # the ConfigMap's data, as envFrom gives it

    @classmethod
    def render(cls, kubectl: str, overlay: Path = OVERLAY) -> Workload:
        out = subprocess.run(
            [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=True
        ).stdout
        return cls.parse([d for d in yaml.safe_load_all(out) if d])

    @classmethod
    def parse(cls, docs: list[dict[str, Any]]) -> Workload:
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == "cm-api"]
        ports = {p["name"]: int(p["containerPort"]) for p in container["ports"]}
        maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(maps[source["configMapRef"]["name"]])
        for item in container.get("env", []):
            env[item["name"]] = item["value"]
        replicas = int(spec.get("replicas", 1))
        rolling = spec.get("strategy", {}).get("rollingUpdate", {})
        return cls(
            replicas=replicas,
            startup=Probe.parse(container["startupProbe"], ports),
            liveness=Probe.parse(container["livenessProbe"], ports),
            readiness=Probe.parse(container["readinessProbe"], ports),
            termination_grace=float(pod.get("terminationGracePeriodSeconds", 30)),
            # Kubernetes rounds a percentage of surge up and of unavailability down.
            max_surge=_count(rolling.get("maxSurge", "25%"), replicas, math.ceil),
            max_unavailable=_count(rolling.get("maxUnavailable", "25%"), replicas, math.floor),
            min_ready_seconds=float(spec.get("minReadySeconds", 0)),
            http_port=ports["http"],
            env={k: str(v) for k, v in env.items()},
        )

    @property
    def cache_ttl(self) -> float:
        """CACHE_TTL_SECONDS as the pods get it: the ConfigMap's, else the setting's default."""
        (declared,) = [v for v in VARIABLES if v.name == "CACHE_TTL_SECONDS"]
        return float(self.env.get(declared.name, declared.default or ""))

    def describe(self) -> dict[str, Any]:
        def probe(p: Probe) -> str:
            return (
                f"{p.path} every {p.period:g} s, timeout {p.timeout:g} s, "
                f"failure {p.failure_threshold}, success {p.success_threshold}"
            )

        return {
            "replicas": self.replicas,
            "startup": probe(self.startup),
            "liveness": probe(self.liveness),
            "readiness": probe(self.readiness),
            "termination_grace_s": self.termination_grace,
            "max_surge": self.max_surge,
            "max_unavailable": self.max_unavailable,
        }


def _count(value: int | str, total: int, rounding: Callable[[float], int]) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return int(rounding(total * int(value[:-1]) / 100))
    return int(value)


# -- the Service, as kube-proxy routes it ----------------------------------------------------


class Service(FaultProxy):
    """Round robin over the Ready endpoints kube-proxy knows of; a connection that finds none
    is refused (the client sees a connection error: "no ready endpoint")."""

    def __init__(self, seed: int) -> None:
        super().__init__("127.0.0.1", 0)
        self._random = random.Random(seed)
        self._ready: dict[int, bool] = {}  # the endpoints controller's view: port -> ready
        self._known: tuple[int, ...] = ()  # kube-proxy's view, read by the proxy's thread
        self._next = 0
        self._applied_at = 0.0
        self._versions = itertools.count(1)
        self._learnt = 0  # the version of `_known`
        self.refused = 0  # connections that found no ready endpoint

    def set_ready(self, port: int, ready: bool) -> None:
        """An endpoint's readiness (or its removal, ready=False) as the API server records it;
        kube-proxy applies it after PROXY_LAG. Call from the test's event loop."""
        if self._ready.get(port) == ready:
            return
        self._ready[port] = ready
        snapshot = tuple(p for p, r in self._ready.items() if r)
        loop = asyncio.get_running_loop()
        # Later changes never overtake earlier ones: kube-proxy syncs whole snapshots in order.
        # Timers due at the same moment run in no set order, hence the version as well.
        self._applied_at = max(loop.time() + self._random.uniform(*PROXY_LAG), self._applied_at)
        loop.call_at(self._applied_at, self._learn, next(self._versions), snapshot)

    def _learn(self, version: int, snapshot: tuple[int, ...]) -> None:
        if version > self._learnt:
            self._learnt, self._known = version, snapshot

    def _dial(self) -> tuple[str, int] | None:
        known = self._known
        if not known:
            self.refused += 1
            return None
        self._next = (self._next + 1) % len(known)
        return ("127.0.0.1", known[self._next])


# -- pods and the kubelet ------------------------------------------------------------------


@dataclass
class Events:
    """What the cluster did, in order: (monotonic time, pod, what)."""

    items: list[tuple[float, str, str]] = field(default_factory=list)

    def add(self, pod: str, what: str) -> None:
        self.items.append((time.monotonic(), pod, what))

    def count(self, what: str) -> int:
        return sum(1 for _, _, w in self.items if w == what)


@dataclass
class Cluster:
    """What every pod shares: the workload, the database, the Service, the event log."""

    workload: Workload
    database: ServerAddress  # the real database server (each pod reaches it through a proxy)
    database_name: str
    credentials: tuple[str, str]  # cm-api's own account
    secrets: Path  # where the Secrets' files are "mounted"
    service: Service
    transcript: Transcript
    http: aiohttp.ClientSession  # the kubelet's prober
    events: Events = field(default_factory=Events)

    def pod_env(self, db_port: int, http_port: int) -> dict[str, str]:
        """The ConfigMap's environment, with what a cluster would supply otherwise replaced:
        the database's address (the private MariaDB through this pod's network path), its
        name and account (the overlay names a real cluster's), the Secret files' paths (the
        same contents, mounted elsewhere), the address to listen on (every pod has an IP
        of its own in a cluster; here a port of its own on loopback), and TLS: the private
        MariaDB offers none (tests/test_tls.py runs every mode against servers that do)."""
        user, _ = self.credentials
        env = {k: v for k, v in self.workload.env.items() if not k.startswith("DB_SSL_")}
        return {
            **env,
            "DB_SSL_MODE": "preferred",
            "DB_HOST": self.database.host,
            "DB_PORT": str(db_port),
            "DB_NAME": self.database_name,
            "DB_USER": user,
            "DB_PASSWORD_FILE": str(self.secrets / "password"),
            "API_TOKENS_FILE": str(self.secrets / "tokens"),
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(http_port),
        }


class Pod:
    """One pod: its network path to the database (a FaultProxy), its port, and the container
    the kubelet runs in it."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.network = FaultProxy(cluster.database.host, cluster.database.port)
        self.network.start()
        self.port = free_port()
        self.container: CmApi | None = None
        self.containers: list[CmApi] = []
        self.ready = False
        self.terminating = False
        self.restarts = 0

    @property
    def available(self) -> bool:
        return self.ready and not self.terminating

    def break_network(self, mode: Mode = Mode.BLACKHOLE) -> None:
        self.network.set_mode(mode)

    def run_container(self) -> None:
        env = self.cluster.pod_env(self.network.port, self.port)
        user, _ = self.cluster.credentials
        self.container = CmApi(spawn_service(env), self.port, user, self.cluster.transcript)
        self.containers.append(self.container)
        self.cluster.events.add(self.name, "container_started")

    def set_ready(self, ready: bool) -> None:
        if ready != self.ready:
            self.ready = ready
            self.cluster.events.add(self.name, "ready" if ready else "unready")
        self.cluster.service.set_ready(self.port, self.available)

    async def stop_container(self, grace: float) -> int:
        """SIGTERM, then SIGKILL once `grace` seconds have passed; the exit status."""
        container = self.container
        assert container is not None
        process = container.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, grace)
        except subprocess.TimeoutExpired:
            self.cluster.events.add(self.name, "killed")
            process.kill()
        code = await container.stop()
        self.cluster.events.add(self.name, f"exited {code}")
        return code

    def close(self) -> None:
        self.network.stop()


class Kubelet:
    """Runs one pod: its container, the probes exactly as specified, restarts on a failed
    liveness probe, and termination when the pod is deleted."""

    def __init__(self, pod: Pod) -> None:
        self.pod = pod
        self._run: asyncio.Task[None] | None = None
        self.probes: Counter[str] = Counter()  # "readiness ok", "liveness failed", ...

    def start(self) -> None:
        self._run = asyncio.create_task(self._lifecycle())

    async def delete(self) -> int:
        """The pod is deleted: out of the endpoints at once, then SIGTERM and the grace."""
        pod = self.pod
        pod.terminating = True
        pod.cluster.events.add(pod.name, "deleted")
        pod.cluster.service.set_ready(pod.port, False)
        if self._run is not None:
            self._run.cancel()
            await asyncio.gather(self._run, return_exceptions=True)
        code = await pod.stop_container(pod.cluster.workload.termination_grace)
        pod.set_ready(False)
        pod.close()
        return code

    async def _lifecycle(self) -> None:
        pod, workload = self.pod, self.pod.cluster.workload
        while not pod.terminating:
            pod.run_container()
            restart = await self._probe_until_restart(workload)
            if pod.terminating:
                return
            pod.set_ready(False)
            pod.restarts += 1
            pod.cluster.events.add(pod.name, f"restart ({restart})")
            await pod.stop_container(workload.termination_grace)

    async def _probe_until_restart(self, workload: Workload) -> str:
        """Probe the running container; return why it must be restarted."""
        if not await self._probing(workload.startup, "startup", until_success=True):
            return "startup probe failed"
        self.pod.cluster.events.add(self.pod.name, "started")
        done = asyncio.Event()
        readiness = asyncio.create_task(self._readiness(workload.readiness, done))
        try:
            await self._probing(workload.liveness, "liveness", until_success=False)
            return "liveness probe failed"
        finally:
            # Both: a cancel that lands as aiohttp's own time-out fires is taken for that
            # time-out (and lost), so the loop also looks at `done`.
            done.set()
            readiness.cancel()
            await asyncio.gather(readiness, return_exceptions=True)

    async def _probing(self, probe: Probe, kind: str, *, until_success: bool) -> bool:
        """Probe every period: with `until_success`, until one succeeds (True) or the failure
        threshold is reached (False); otherwise until the failure threshold is reached."""
        await asyncio.sleep(probe.initial_delay)
        failures = 0
        while not self.pod.terminating:
            ok = await self._probe(probe, kind)
            if ok and until_success:
                return True
            failures = 0 if ok else failures + 1
            if failures >= probe.failure_threshold:
                return False
            await asyncio.sleep(probe.period)
        return False

    async def _readiness(self, probe: Probe, done: asyncio.Event) -> None:
        await asyncio.sleep(probe.initial_delay)
        successes = failures = 0
        while not done.is_set():
            if await self._probe(probe, "readiness"):
                successes, failures = successes + 1, 0
                if successes >= probe.success_threshold:
                    self.pod.set_ready(True)
            else:
                successes, failures = 0, failures + 1
                if failures >= probe.failure_threshold:
                    self.pod.set_ready(False)
            await asyncio.sleep(probe.period)

    async def _probe(self, probe: Probe, kind: str) -> bool:
        """One HTTP probe: a status from 200 to 399 within the timeout is a success."""
        http = self.pod.cluster.http
        assert probe.port == self.pod.cluster.workload.http_port
        url = f"http://127.0.0.1:{self.pod.port}{probe.path}"
        try:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=probe.timeout)) as r:
                await r.read()
                ok = 200 <= r.status < 400
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        self.probes[f"{kind} {'ok' if ok else 'failed'}"] += 1
        return ok


# -- the Deployment controller ---------------------------------------------------------------


class Deployment:
    """The pods of the workload, and rolling updates at the pace its strategy allows."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.kubelets: list[Kubelet] = []
        self._names = (f"cm-api-{n}" for n in range(1000))
        self._terminations: list[asyncio.Task[int]] = []

    @property
    def pods(self) -> list[Pod]:
        return [k.pod for k in self.kubelets]

    def create_pod(self) -> Kubelet:
        kubelet = Kubelet(Pod(self.cluster, next(self._names)))
        self.kubelets.append(kubelet)
        kubelet.start()
        return kubelet

    async def scale_up(self) -> None:
        """The first rollout: `replicas` pods, waited for until every one is available."""
        for _ in range(self.cluster.workload.replicas):
            self.create_pod()
        await eventually(lambda: all(p.available for p in self.pods), 60.0, "every pod available")

    async def rolling_update(self) -> None:
        """Replace every pod, never more than replicas + maxSurge at once and never fewer
        than replicas - maxUnavailable available (minReadySeconds counted)."""
        w = self.cluster.workload
        old = list(self.kubelets)
        new: list[Kubelet] = []
        ready_since: dict[str, float] = {}
        while old or not all(self._available(k, ready_since) for k in new):
            for k in old + new:
                if k.pod.available:
                    ready_since.setdefault(k.pod.name, time.monotonic())
                else:
                    ready_since.pop(k.pod.name, None)
            while len(new) < w.replicas and len(old) + len(new) < w.replicas + w.max_surge:
                new.append(self.create_pod())
            available = sum(self._available(k, ready_since) for k in old + new)
            for k in list(old):
                counts = self._available(k, ready_since)
                if available - counts < w.replicas - w.max_unavailable:
                    break
                old.remove(k)
                available -= counts
                self._terminations.append(asyncio.create_task(self._delete(k)))
            await asyncio.sleep(0.1)

    def _available(self, kubelet: Kubelet, ready_since: Mapping[str, float]) -> bool:
        since = ready_since.get(kubelet.pod.name)
        minimum = self.cluster.workload.min_ready_seconds
        return since is not None and time.monotonic() - since >= minimum

    async def _delete(self, kubelet: Kubelet) -> int:
        code = await kubelet.delete()
        self.kubelets.remove(kubelet)
        return code

    async def terminated(self) -> list[int]:
        """Exit statuses of the pods deleted so far, once each has exited."""
        return list(await asyncio.gather(*self._terminations))

    async def delete_all(self) -> None:
        await asyncio.gather(*(self._delete(k) for k in list(self.kubelets)))
        await self.terminated()
