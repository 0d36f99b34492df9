"""ChangeWaits as a unit, over the real cache on a real event loop with test_cache's counting
loader playing the database (a stand-in DESIGN.md allows for this unit): what the HTTP tests
cannot time exactly. The real clock runs; waits are a few seconds at most."""

from __future__ import annotations

import asyncio
import time

from service.cache import ReadThroughCache
from service.changes import MIN_INTERVAL, ChangeWaits, Ended

from .conftest import wait_until
from .test_cache import Loader, Outage


def make(ttl: float = 60.0, max_held: int = 10) -> tuple[ReadThroughCache, ChangeWaits]:
    cache = ReadThroughCache(
        ttl=ttl, stale_while_revalidate=0, stale_if_error=300, max_bytes=1 << 20,
        failure_types=(Outage,),
    )  # fmt: skip
    return cache, ChangeWaits(cache, max_held=max_held)


async def test_a_waiter_that_saw_newer_data_wakes_those_holding_older() -> None:
    cache, changes = make()
    load = Loader(b"old")
    old = (await cache.get("k", load)).entry
    first = asyncio.create_task(changes.wait("k", old, 30, load))
    await wait_until(lambda: changes.stats().held == 1)
    load.body = b"new"
    new = await cache.refresh("k", load)  # another request's load, which the watch missed
    second = asyncio.create_task(changes.wait("k", new, 0.5, load))
    ended, entry = await first
    assert ended is Ended.CHANGED
    assert entry is new
    assert await second == (Ended.TIMEOUT, None)  # it already had the newest
    await changes.close()


async def test_a_waiter_never_gets_older_data_than_it_had() -> None:
    cache, changes = make()
    load = Loader(b"old")
    old = (await cache.get("k", load)).entry
    load.body = b"new"
    new = await cache.refresh("k", load)
    first = asyncio.create_task(changes.wait("k", new, 0.5, load))
    await wait_until(lambda: changes.stats().held == 1)
    # A request that still saw the old entry joins: it gets the newer at once, and the first
    # waiter is not woken by the older one.
    assert await changes.wait("k", old, 30, load) == (Ended.CHANGED, new)
    assert await first == (Ended.TIMEOUT, None)
    await changes.close()


async def test_an_outage_keeps_waiters_waiting_and_costs_one_attempt_per_interval() -> None:
    cache, changes = make(ttl=MIN_INTERVAL / 2)  # the interval is MIN_INTERVAL
    load = Loader()
    seen = (await cache.get("k", load)).entry
    load.error = Outage("down")
    began = time.monotonic()
    assert await changes.wait("k", seen, 2.5, load) == (Ended.TIMEOUT, None)
    waited = time.monotonic() - began
    assert load.calls - 1 <= waited / MIN_INTERVAL + 1, load.calls
    assert changes.stats().held == 0
    await changes.close()


async def test_the_bound_and_release() -> None:
    cache, changes = make(max_held=2)
    load = Loader()
    seen = (await cache.get("k", load)).entry
    held = [asyncio.create_task(changes.wait(k, seen, 30, load)) for k in ("k", "k")]
    await wait_until(lambda: changes.stats().held == 2)
    assert not changes.accepting
    assert await changes.wait("k", seen, 30, load) == (Ended.REFUSED, None)
    changes.release()
    assert [await t for t in held] == [(Ended.RELEASED, None)] * 2
    assert await changes.wait("k", seen, 30, load) == (Ended.REFUSED, None)
    assert changes.stats().ended == {
        "changed": 0, "timeout": 0, "released": 2, "gone": 0, "refused": 2,
    }  # fmt: skip
    await changes.close()


async def test_the_reloads_stop_when_the_last_waiter_leaves() -> None:
    cache, changes = make(ttl=MIN_INTERVAL / 2)
    load = Loader()
    seen = (await cache.get("k", load)).entry
    assert await changes.wait("k", seen, 1.5, load) == (Ended.TIMEOUT, None)
    calls = load.calls
    await asyncio.sleep(2 * MIN_INTERVAL)
    assert load.calls == calls
    await changes.close()
