"""Starting, pinning, watching and stopping the processes of a run (the services and the limit
reference), so that every process a run starts is also stopped by it."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import aiohttp

REPO: Final = Path(__file__).resolve().parent.parent
# The CPU the servers under test run on; the load generators run on the other one.
SERVER_CPU: Final = 0
CLIENT_CPU: Final = 1
READY_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 15.0
# Both servers answer it 200 when they can serve; the service's touches neither the cache nor
# a SELECT (a ping at most), so waiting on it warms nothing.
READY_PATH: Final = "/readyz"


class ProcessError(RuntimeError):
    """A process of the run did not start, or died."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def taskset() -> str:
    found = shutil.which("taskset")
    if found is None:
        raise ProcessError("taskset is not installed (package util-linux)")
    return found


def pin_self_to_client_cpu() -> None:
    """Keep the benchmark's own client work off the servers' CPU."""
    if CLIENT_CPU in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {CLIENT_CPU})


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children inherit it: the
    service holds one socket per client connection too); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True, slots=True)
class Memory:
    rss: int  # bytes resident now (VmRSS)
    peak: int  # bytes resident at most since the process started (VmHWM)


class Child:
    """One process pinned to `cpu`, its output in a log file."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path, cpu: int
    ) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            # taskset execs the command, so the pid is the process's own (for /proc/<pid>).
            self.process = subprocess.Popen(
                [taskset(), "-c", str(cpu), *argv],
                cwd=REPO,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C reaches only the benchmark, which stops it in order.
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise ProcessError(f"{self.name} exited with status {code}" + self.log_tail())

    def memory(self) -> Memory:
        fields: dict[str, int] = {}
        status = Path(f"/proc/{self.pid}/status").read_text(encoding="ascii")
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024  # reported in kB
        return Memory(rss=fields["VmRSS"], peak=fields["VmHWM"])

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process (all its threads) has used so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text(encoding="ascii")
        fields = stat.rpartition(")")[2].split()  # fields[0] is field 3 of proc(5), the state
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        tail = "\n    ".join(text[-lines:])
        return f"; last lines of {self.log}:\n    {tail}" if tail else ""

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; the exit status (None if it was killed)."""
        process = self.process
        if process.poll() is not None:
            return process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None


class Server(Child):
    """An HTTP server under test on SERVER_CPU, listening on a free port of 127.0.0.1."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.port = free_port()
        env = {**env, "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(self.port)}
        super().__init__(name, argv, env, log, SERVER_CPU)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self) -> None:
        """Poll READY_PATH until it answers 200."""
        deadline = time.monotonic() + READY_TIMEOUT
        timeout = aiohttp.ClientTimeout(total=2)
        last = "no answer"
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                self.check_alive()
                try:
                    async with session.get(self.url + READY_PATH) as resp:
                        await resp.read()
                        if resp.status == 200:
                            return
                        last = f"status {resp.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = type(exc).__name__
                if time.monotonic() > deadline:
                    raise ProcessError(
                        f"{self.name}: GET {READY_PATH} was not 200 within {READY_TIMEOUT:g} s "
                        f"(last: {last})" + self.log_tail()
                    )
                await asyncio.sleep(0.05)


C = TypeVar("C", bound=Child)


class Processes:
    """Every process a run starts; `stop_all` in the run's `finally` stops what is left."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self._children: list[Child] = []

    def service(
        self,
        env: Mapping[str, str],
        label: str,
        bare_routes: Mapping[str, Path] | None = None,
    ) -> Server:
        """`python -m service`; with `bare_routes`, `python -m bench.bare_route`: the same
        service plus a bare handler per path (bench/bare_route.py)."""
        argv = [sys.executable, "-m", "service"]
        name = f"service ({label})"
        if bare_routes is not None:
            argv = [sys.executable, "-m", "bench.bare_route"]
            argv += [f"--route={path}={body}" for path, body in bare_routes.items()]
            name = f"service with bare routes ({label})"
        # No load balancer to drain: every stop would otherwise wait out the default delay.
        env = {"LOG_LEVEL": "warning", "LOG_FORMAT": "json", "SHUTDOWN_DELAY_SECONDS": "0", **env}
        return self._add(Server(name, argv, env, self.logdir / f"{label}.log"))

    def reference(
        self, routes: Mapping[str, Path], gzip_routes: Mapping[str, Path], label: str
    ) -> Server:
        """The limit reference (bench.bare): `routes` plain, `gzip_routes` to gzip askers."""
        argv = [sys.executable, "-m", "bench.bare"]
        for path, body in routes.items():
            argv += ["--route", f"{path}={body}"]
        for path, body in gzip_routes.items():
            argv += ["--gzip-route", f"{path}={body}"]
        log = self.logdir / f"reference-{label}.log"
        return self._add(Server(f"limit reference ({label})", argv, {}, log))

    def _add(self, child: C) -> C:
        self._children.append(child)
        return child

    def stop(self, child: Child) -> None:
        code = child.stop()
        if child in self._children:
            self._children.remove(child)
        if code not in (0, -signal.SIGTERM):
            sys.stderr.write(f"warning: {child.name} stopped with status {code}\n")

    def stop_servers(self) -> None:
        """Stop the HTTP servers still running (after each scenario)."""
        for child in [c for c in self._children if isinstance(c, Server)]:
            self.stop(child)

    def stop_all(self) -> None:
        while self._children:
            self.stop(self._children[-1])
