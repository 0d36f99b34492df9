"""What every scenario gets: the run's options, database, SQL counter, processes and work
directory."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from .database import BenchDatabase
from .processes import Processes, Relay, Server


@dataclass(frozen=True, slots=True)
class SelectCount:
    """SELECTs over one interval, counted two ways."""

    service: int  # sent by the service, counted on its own connections (bench.sqlcount)
    server: int  # Com_select delta: every client of the database server, ours included


@dataclass(frozen=True, slots=True)
class Context:
    quick: bool
    db: BenchDatabase
    relay: Relay
    processes: Processes
    workdir: Path

    async def start_service(self, label: str, **cache: str) -> Server:
        """A fresh service process on the bench database (through the counting relay), ready
        to answer; `cache` holds extra settings such as CACHE_TTL_SECONDS."""
        env = {**self.db.service_env(via=self.relay.address), **cache}
        server = self.processes.service(env, label)
        await server.wait_ready()
        return server

    async def counters(self) -> tuple[int, int]:
        """(service SELECTs, server Com_select) now; subtract two readings with `selects`."""
        return await self.relay.selects(), await asyncio.to_thread(self.db.com_select)

    @staticmethod
    def selects(before: tuple[int, int], after: tuple[int, int]) -> SelectCount:
        return SelectCount(service=after[0] - before[0], server=after[1] - before[1])
