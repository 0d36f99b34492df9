"""Long-poll against the real process (`python -m service`) and a MariaDB of the test's own
whose general log shows every SELECT: 500 clients wait on /acc/, a row changes, and every one
gets the new body within TTL + 1 s while the database saw at most one SELECT of `acc` per TTL.
Then what only a real process shows: SIGTERM answers held requests at once (not cut), and a
client that leaves frees its place (aiohttp does not cancel the handler)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Final

import aiohttp
import pytest

from .statement_log import LoggedMariaDB, Service, logged_mariadb, logged_service, scrape

TTL: Final = 2.0
CLIENTS: Final = 500
WAIT: Final = 30


@pytest.fixture(scope="module")
def logged() -> Iterator[LoggedMariaDB]:
    with logged_mariadb() as db:
        yield db


@dataclass
class Running:
    service: Service
    session: aiohttp.ClientSession  # without a connection limit: 500 requests at once

    @property
    def base(self) -> str:
        return self.service.url

    @property
    def process(self) -> subprocess.Popen[str]:
        return self.service.process

    async def metric(self, name: str, **labels: str) -> float:
        value = (await scrape(self.base)).get((name, frozenset(labels.items())))
        assert value is not None, f"{name} {labels} not in the scrape"
        return value

    async def held(self) -> int:
        return int(await self.metric("cmapi_http_held_requests"))

    async def until_held(self, count: int, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while (held := await self.held()) != count:
            assert time.monotonic() < deadline, f"{held} held, not {count}"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(logged: LoggedMariaDB, **env: str) -> AsyncIterator[Running]:
    async with (
        logged_service(logged, CACHE_TTL_SECONDS=str(TTL), **env) as service,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=90)
        ) as session,
    ):
        yield Running(service, session)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    at: float  # time.monotonic() when the whole answer had arrived
    applied: str | None


async def long_poll(service: Running, tag: str, path: str = "/acc/") -> Answer:
    headers = {"If-None-Match": tag, "Prefer": f"wait={WAIT}"}
    async with service.session.get(service.base + path, headers=headers) as response:
        body = await response.read()
        return Answer(
            response.status, body, time.monotonic(), response.headers.get("Preference-Applied")
        )


async def test_500_waiting_clients_get_a_change_within_a_ttl_for_one_select_per_ttl(
    logged: LoggedMariaDB,
) -> None:
    async with running(logged) as service:
        async with service.session.get(f"{service.base}/acc/") as first:
            tag = first.headers["ETag"]
        since = logged.now()
        began = time.monotonic()
        waits = [asyncio.create_task(long_poll(service, tag)) for _ in range(CLIENTS)]
        await service.until_held(CLIENTS)
        await asyncio.sleep(2 * TTL)  # reloads of unchanged data: no one is answered
        assert not any(w.done() for w in waits)
        logged.execute("UPDATE acc SET name = 'Acme Logistics (renamed)' WHERE id = 1")
        changed = time.monotonic()
        answers = await asyncio.gather(*waits)
        ended = time.monotonic()
        selects = logged.selects("acc", since)
    assert {a.status for a in answers} == {200}
    assert all(b"Acme Logistics (renamed)" in a.body for a in answers)
    assert {a.applied for a in answers} == {f"wait={WAIT}"}
    slowest = max(a.at for a in answers) - changed
    print(
        f"\n{CLIENTS} held clients: the slowest got the change {slowest:.2f} s after it "
        f"(TTL {TTL:g} s); {len(selects)} SELECTs of acc in {ended - began:.1f} s"
    )
    assert slowest <= TTL + 1, slowest
    # At most one per TTL (+1: one may start at either end of the window).
    assert 1 <= len(selects) <= (ended - began) / TTL + 1, [s.at for s in selects]


async def test_sigterm_answers_held_requests_at_once(logged: LoggedMariaDB) -> None:
    async with running(logged, SHUTDOWN_DELAY_SECONDS="3") as service:
        async with service.session.get(f"{service.base}/user/") as first:
            tag = first.headers["ETag"]
        waits = [asyncio.create_task(long_poll(service, tag, "/user/")) for _ in range(50)]
        await service.until_held(50)
        service.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        answers = await asyncio.gather(*waits)
        # Still within SHUTDOWN_DELAY_SECONDS: a new wait is answered at once, not held.
        again = await long_poll(service, tag, "/user/")
        assert again.at - signalled < 2
        assert again.status == 304
        assert again.applied is None
        loop = asyncio.get_running_loop()
        status = await loop.run_in_executor(None, service.process.wait, 30)
    assert {a.status for a in answers} == {304}
    assert max(a.at for a in answers) - signalled < 1
    assert status == 0


async def test_a_client_that_leaves_frees_its_place(logged: LoggedMariaDB) -> None:
    async with running(logged) as service:
        async with service.session.get(f"{service.base}/acc/") as first:
            tag = first.headers["ETag"]
        async with aiohttp.ClientSession() as leaving:
            waits = [
                asyncio.create_task(
                    leaving.get(
                        f"{service.base}/acc/", headers={"If-None-Match": tag, "Prefer": "wait=30"}
                    )
                )
                for _ in range(5)
            ]
            await service.until_held(5)
            for w in waits:
                w.cancel()
        left = time.monotonic()
        await service.until_held(0, within=10)
        freed = time.monotonic() - left
        assert freed < 4, freed
        assert await service.metric("cmapi_http_long_polls_total", ended="gone") == 5
