"""What a scenario is (name, how to run it, how long it takes) and what it is given: the run's
options, database, status reader, processes and work directory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .database import BenchDatabase
from .dbstatus import Status, StatusReader
from .processes import Processes, Server
from .report import Outcome


@dataclass(frozen=True, slots=True)
class Context:
    smoke: bool
    db: BenchDatabase
    status: StatusReader
    processes: Processes
    workdir: Path

    async def start_service(self, label: str, **settings: str) -> Server:
        """A fresh service process on the bench database, ready to answer; `settings` holds
        extra environment such as CACHE_TTL_SECONDS."""
        server = self.processes.service({**self.db.service_env(), **settings}, label)
        await server.wait_ready()
        return server

    async def start_reference(
        self, label: str, bodies: Mapping[str, bytes], gzip_bodies: Mapping[str, bytes]
    ) -> Server:
        """The limit reference serving these bytes (written to files for it), ready."""
        routes = self._files(label, bodies, "json")
        gzip_routes = self._files(label, gzip_bodies, "json.gz")
        server = self.processes.reference(routes, gzip_routes, label)
        await server.wait_ready()
        return server

    async def start_bare_routes(
        self, label: str, bodies: Mapping[str, bytes], **settings: str
    ) -> Server:
        """A fresh service like start_service's that also answers /bare<path> with these bytes
        through its own wrapper and logger, without the cache (bench/bare_route.py), ready."""
        routes = self._files(f"{label}-bare", bodies, "json")
        env = {**self.db.service_env(), **settings}
        server = self.processes.service(env, f"{label}-bare", bare_routes=routes)
        await server.wait_ready()
        return server

    def _files(self, label: str, bodies: Mapping[str, bytes], suffix: str) -> dict[str, Path]:
        """`bodies` by path written to files of the work directory, by path."""
        files = {}
        for path, body in bodies.items():
            file = files[path] = self.workdir / f"{label}{path.replace('/', '_')}{suffix}"
            file.write_bytes(body)
        return files

    async def read_status(self) -> Status:
        return await self.status.read()


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    run: Callable[[Context], Awaitable[Outcome]]
    seconds: Callable[[bool], float]  # estimated wall-clock time, given `smoke`
    needs_wrk: bool = False
