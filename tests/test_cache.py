"""ReadThroughCache as a unit: single-flight, expiry, stale-while-revalidate, stale-if-error,
the retry interval after a failure, the byte budget, ETags and gzip copies.

Two stand-ins, as DESIGN.md allows for this unit: a fake clock (time is moved, never slept) and a
counting loader (the cache's collaborator, playing the database; it can be held open with an
event or made to fail). Everything else is the real cache on a real event loop.
"""

from __future__ import annotations

import asyncio
import gzip
import os
from collections.abc import Callable

import pytest

from service.cache import (
    ENTRY_OVERHEAD_BYTES,
    IN_THREAD_BYTES,
    Document,
    Lookup,
    Outcome,
    ReadThroughCache,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Outage(Exception):
    """The loader's "cannot answer now" error (a failure type of the cache under test)."""


class Missing(Exception):
    """A loader error that is an answer, not an outage (like a 404)."""


class Refused(Exception):
    """A loader error about the data itself (like a list too large): a refusal type."""


class Loader:
    """Counts its calls; returns `body`, or raises `error`; waits for `gate` when one is set."""

    def __init__(self, body: bytes = b'[{"id": 1}]') -> None:
        self.body = body
        self.calls = 0
        self.error: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def __call__(self) -> Document:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return Document(self.body, (("Link", "<next>"),))

    def hold(self) -> asyncio.Event:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        return self.gate


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_cache(clock: FakeClock) -> Callable[..., ReadThroughCache]:
    def make(**overrides: float) -> ReadThroughCache:
        options: dict[str, float] = {
            "ttl": 5,
            "stale_while_revalidate": 0,
            "stale_if_error": 300,
            "max_bytes": 1 << 20,
        }
        options.update(overrides)
        return ReadThroughCache(
            ttl=options["ttl"],
            stale_while_revalidate=options["stale_while_revalidate"],
            stale_if_error=options["stale_if_error"],
            max_bytes=int(options["max_bytes"]),
            failure_types=(Outage,),
            refusal_types=(Refused,),
            clock=clock,
        )

    return make


async def together(cache: ReadThroughCache, load: Loader, count: int) -> list[Lookup]:
    """`count` gets of one key, all made while the load is held open (so they share it); the
    loader's error, if any, is raised."""
    results = await together_or_errors(cache, load, count)
    lookups = [r for r in results if isinstance(r, Lookup)]
    assert len(lookups) == count, results
    return lookups


async def together_or_errors(
    cache: ReadThroughCache, load: Loader, count: int
) -> list[Lookup | BaseException]:
    gate = load.hold()
    tasks = [asyncio.create_task(cache.get("k", load)) for _ in range(count)]
    await load.started.wait()
    gate.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def settle() -> None:
    """Let every ready task run (loads finishing, done callbacks)."""
    for _ in range(5):
        await asyncio.sleep(0)


# -- single-flight ----------------------------------------------------------------------------


async def test_a_thousand_concurrent_gets_run_one_load(
    make_cache: Callable[..., ReadThroughCache],
) -> None:
    cache, load = make_cache(), Loader()
    results = await together(cache, load, 1000)
    assert load.calls == 1
    assert {id(r.entry) for r in results} == {id(results[0].entry)}
    outcomes = [r.outcome for r in results]
    assert outcomes.count(Outcome.MISS) == 1
    assert outcomes.count(Outcome.COALESCED) == 999
    stats = cache.stats()
    assert (stats.in_flight, stats.waiting, stats.entries) == (0, 0, 1)


async def test_requests_waiting_for_a_load_are_counted_until_it_ends(
    make_cache: Callable[..., ReadThroughCache],
) -> None:
    cache, load = make_cache(), Loader()
    gate = load.hold()
    tasks = [asyncio.create_task(cache.get("k", load)) for _ in range(3)]
    await load.started.wait()
    await settle()
    assert (cache.stats().waiting, cache.stats().in_flight) == (3, 1)
    gate.set()
    await asyncio.gather(*tasks)
    assert (cache.stats().waiting, cache.stats().in_flight) == (0, 0)


async def test_a_cancelled_waiter_does_not_cancel_the_load_for_the_others(
    make_cache: Callable[..., ReadThroughCache],
) -> None:
    cache, load = make_cache(), Loader()
    gate = load.hold()
    first = asyncio.create_task(cache.get("k", load))
    await load.started.wait()
    others = [asyncio.create_task(cache.get("k", load)) for _ in range(10)]
    await settle()
    first.cancel()
    await settle()
    gate.set()
    results = await asyncio.gather(*others)
    assert first.cancelled()
    assert all(r.entry.body == load.body for r in results)
    assert load.calls == 1


async def test_a_load_whose_waiters_all_left_still_fills_the_cache(
    make_cache: Callable[..., ReadThroughCache],
) -> None:
    cache, load = make_cache(), Loader()
    gate = load.hold()
    waiter = asyncio.create_task(cache.get("k", load))
    await load.started.wait()
    waiter.cancel()
    gate.set()
    await settle()
    assert (await cache.get("k", load)).outcome is Outcome.HIT
    assert load.calls == 1


async def test_a_failed_load_reaches_every_waiter_once_and_is_not_cached(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    cache, load = make_cache(), Loader()
    load.error = Outage("database down")
    results = await together_or_errors(cache, load, 10)
    assert all(isinstance(r, Outage) for r in results)
    assert load.calls == 1
    assert cache.stats().load_errors == 1

    # Within the retry interval the error is answered without asking the source again...
    clock.advance(0.5)
    with pytest.raises(Outage):
        await cache.get("k", load)
    assert load.calls == 1
    # ...after it, the next get loads again, and success is stored as usual.
    clock.advance(0.5)
    load.error = None
    lookup = await cache.get("k", load)
    assert (lookup.outcome, load.calls) == (Outcome.MISS, 2)
    assert (await cache.get("k", load)).outcome is Outcome.HIT


async def test_an_answer_error_is_passed_on_and_not_remembered(
    make_cache: Callable[..., ReadThroughCache],
) -> None:
    cache, load = make_cache(), Loader()
    load.error = Missing("no such row")
    with pytest.raises(Missing):
        await cache.get("k", load)
    with pytest.raises(Missing):
        await cache.get("k", load)
    assert load.calls == 2  # no retry interval for answers, and nothing stored
    assert cache.stats().load_errors == 0


async def test_loads_of_different_keys_run_side_by_side(
    make_cache: Callable[..., ReadThroughCache],
) -> None:
    cache, slow, fast = make_cache(), Loader(b"slow"), Loader(b"fast")
    gate = slow.hold()
    pending = asyncio.create_task(cache.get("slow", slow))
    await slow.started.wait()
    assert (await cache.get("fast", fast)).entry.body == b"fast"  # not blocked by "slow"
    gate.set()
    assert (await pending).entry.body == b"slow"


# -- freshness and stale-while-revalidate -----------------------------------------------------


async def test_fresh_until_the_ttl_then_loaded_again(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    cache, load = make_cache(ttl=5), Loader()
    miss = await cache.get("k", load)
    assert (miss.outcome, miss.detail, miss.age, miss.freshness) == (Outcome.MISS, "stored", 0, 5)
    clock.advance(4.999)
    hit = await cache.get("k", load)
    assert (hit.outcome, load.calls) == (Outcome.HIT, 1)
    assert hit.age == pytest.approx(4.999)
    assert hit.freshness == pytest.approx(0.001)
    clock.advance(0.001)
    assert (await cache.get("k", load)).outcome is Outcome.MISS
    assert load.calls == 2


async def test_fresh_answers_only_a_fresh_entry_and_never_loads(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    # fresh() is the handlers' synchronous fast path: a HIT or None, the rest is get()'s.
    cache, load = make_cache(ttl=5, stale_while_revalidate=10, stale_if_error=300), Loader()
    assert cache.fresh("k") is None  # nothing stored
    await cache.get("k", load)
    clock.advance(4.5)
    hit = cache.fresh("k")
    assert hit is not None
    assert (hit.outcome, hit.detail, hit.entry.body) == (Outcome.HIT, "", load.body)
    assert (hit.age, hit.freshness) == (pytest.approx(4.5), pytest.approx(0.5))
    clock.advance(0.5)
    # Stale: within both windows, yet not fresh() to serve; no refresh started by asking.
    assert cache.fresh("k") is None
    clock.advance(10_000)  # past every window and past cachetools' own expiry
    assert cache.fresh("k") is None
    assert (load.calls, cache.stats().refreshes) == (1, 0)
    assert (await cache.get("k", load)).outcome is Outcome.MISS


async def test_stale_while_revalidate_answers_at_once_with_one_background_refresh(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    cache, load = make_cache(ttl=5, stale_while_revalidate=10), Loader(b"old")
    await cache.get("k", load)
    clock.advance(6)
    load.body = b"new"
    gate = load.hold()
    # The load is held open, yet every request is answered: none of them waits for it.
    lookups = [await cache.get("k", load) for _ in range(100)]
    assert all(r.outcome is Outcome.STALE and r.detail == "revalidating" for r in lookups)
    assert all(r.entry.body == b"old" for r in lookups)
    assert lookups[0].freshness == -1
    await load.started.wait()  # the refresh runs in the background...
    assert load.calls == 2  # ...once
    assert cache.stats().refreshes == 1
    gate.set()
    await settle()
    after = await cache.get("k", load)
    assert (after.outcome, after.entry.body, after.age) == (Outcome.HIT, b"new", 0)


async def test_a_refresh_that_finds_the_row_gone_drops_the_stale_entry(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    cache, load = make_cache(ttl=5, stale_while_revalidate=10), Loader()
    await cache.get("k", load)
    clock.advance(6)
    load.error = Missing("no such row")
    assert (await cache.get("k", load)).outcome is Outcome.STALE  # the refresh starts
    await settle()
    assert load.calls == 2
    with pytest.raises(Missing):  # not the stale entry again for the rest of the window
        await cache.get("k", load)
    assert cache.stats().entries == 0


async def test_refresh_loads_whatever_the_age_and_joins_a_running_load(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    cache, load = make_cache(ttl=5), Loader(b"old")
    await cache.get("k", load)
    load.body = b"new"
    gate = load.hold()
    refreshes = [asyncio.create_task(cache.refresh("k", load)) for _ in range(3)]
    await load.started.wait()
    assert (await cache.get("k", load)).outcome is Outcome.HIT  # still the old, fresh entry
    gate.set()
    entries = await asyncio.gather(*refreshes)
    assert {e.body for e in entries} == {b"new"}
    assert load.calls == 2
    assert cache.stats().refreshes == 1
    load.error = Outage("down")
    with pytest.raises(Outage):
        await cache.refresh("k", load)
    with pytest.raises(Outage):  # within the retry interval: no load
        await cache.refresh("k", load)
    assert load.calls == 3


async def test_past_the_revalidate_window_a_request_waits_for_the_load(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    cache, load = make_cache(ttl=5, stale_while_revalidate=10), Loader()
    await cache.get("k", load)
    clock.advance(15)
    lookup = await cache.get("k", load)
    assert (lookup.outcome, load.calls) == (Outcome.MISS, 2)


async def test_a_failed_background_refresh_keeps_the_stale_entry_and_waits_a_second(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    cache, load = make_cache(ttl=5, stale_while_revalidate=10), Loader()
    await cache.get("k", load)
    clock.advance(6)
    load.error = Outage("down")
    assert (await cache.get("k", load)).outcome is Outcome.STALE
    await settle()
    assert (load.calls, cache.stats().load_errors) == (2, 1)
    clock.advance(0.5)
    assert (await cache.get("k", load)).outcome is Outcome.STALE
    await settle()
    assert load.calls == 2  # within the retry interval: no new refresh
    clock.advance(0.5)
    await cache.get("k", load)
    await settle()
    assert load.calls == 3


# -- stale-if-error ---------------------------------------------------------------------------


async def test_stale_if_error_serves_the_last_entry_until_the_window_ends(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    cache, load = make_cache(ttl=5, stale_if_error=10), Loader()
    good = await cache.get("k", load)
    load.error = Outage("down")
    clock.advance(14.999)  # ttl + stale_if_error - 1 ms
    stale = await cache.get("k", load)
    assert (stale.outcome, stale.detail) == (Outcome.STALE, "stale-if-error")
    assert stale.entry is good.entry
    assert stale.age == pytest.approx(14.999)
    assert load.calls == 2
    clock.advance(0.001)  # the window is over: the error itself is the answer
    with pytest.raises(Outage):
        await cache.get("k", load)


async def test_stale_if_error_within_the_retry_interval_does_not_ask_again(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    cache, load = make_cache(ttl=5), Loader()
    await cache.get("k", load)
    clock.advance(6)
    load.error = Outage("down")
    for _ in range(50):
        assert (await cache.get("k", load)).outcome is Outcome.STALE
    assert load.calls == 2
    clock.advance(1)
    load.error = None
    assert (await cache.get("k", load)).outcome is Outcome.MISS  # back: fresh data again
    assert load.calls == 3


async def test_a_refusal_is_remembered_for_the_ttl_and_never_replaced_by_a_stale_entry(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    cache, load = make_cache(ttl=5), Loader()
    await cache.get("k", load)
    clock.advance(6)  # the stored entry is stale; stale-if-error would allow it for an outage
    load.error = Refused("too large")
    for _ in range(3):
        with pytest.raises(Refused):
            await cache.get("k", load)
    assert load.calls == 2  # one load refused; the TTL long, requests get that answer
    clock.advance(4.999)
    with pytest.raises(Refused):
        await cache.get("k", load)
    clock.advance(0.001)
    load.error = None
    assert (await cache.get("k", load)).outcome is Outcome.MISS
    assert load.calls == 3
    assert cache.stats().load_errors == 0  # not a failure of the source


async def test_stale_if_error_zero_means_the_error_is_the_answer(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    cache, load = make_cache(ttl=5, stale_if_error=0), Loader()
    await cache.get("k", load)
    clock.advance(5)
    load.error = Outage("down")
    with pytest.raises(Outage):
        await cache.get("k", load)


async def test_waiters_of_a_failed_load_all_get_the_stale_entry(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    cache, load = make_cache(ttl=5), Loader()
    await cache.get("k", load)
    clock.advance(5)
    load.error = Outage("down")
    results = await together(cache, load, 20)
    assert all(r.outcome is Outcome.STALE for r in results)
    assert load.calls == 2


# -- storage: TTL 0, byte budget, oversize ----------------------------------------------------


async def test_ttl_zero_stores_nothing_but_still_coalesces(
    make_cache: Callable[..., ReadThroughCache],
) -> None:
    cache, load = make_cache(ttl=0), Loader()
    for _ in range(3):
        lookup = await cache.get("k", load)
        assert (lookup.outcome, lookup.detail) == (Outcome.MISS, "")
    assert load.calls == 3
    await together(cache, load, 50)
    assert load.calls == 4
    assert cache.stats().entries == 0


async def test_the_byte_budget_evicts_the_oldest_entries(
    make_cache: Callable[..., ReadThroughCache],
) -> None:
    body = b"x" * 100  # below the gzip threshold: one copy per entry
    size = len(body) + ENTRY_OVERHEAD_BYTES
    cache = make_cache(max_bytes=3 * size)
    loads = {key: Loader(body) for key in "abcd"}
    for key, load in loads.items():
        await cache.get(key, load)
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.evictions) == (3, 3 * size, 1)
    assert (await cache.get("d", loads["d"])).outcome is Outcome.HIT
    assert (await cache.get("a", loads["a"])).outcome is Outcome.MISS  # the one evicted
    assert loads["a"].calls == 2


async def test_the_byte_budget_evicts_the_least_recently_used_entry(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    # A hot entry read within its TTL survives; entries loaded later and never read go first.
    body = b"x" * 100
    cache = make_cache(max_bytes=3 * (len(body) + ENTRY_OVERHEAD_BYTES))
    loads = {key: Loader(body) for key in "hcde"}
    await cache.get("h", loads["h"])
    await cache.get("c", loads["c"])
    await cache.get("d", loads["d"])
    clock.advance(1)
    assert cache.fresh("h") is not None  # the dashboard's poll: a hit, no load
    await cache.get("e", loads["e"])  # over budget: one entry must go
    assert cache.fresh("h") is not None, "the entry read last was evicted"
    assert cache.fresh("c") is None
    assert cache.fresh("d") is not None
    assert cache.stats().evictions == 1


async def test_serving_a_stale_entry_also_counts_as_a_use(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    # stale-if-error: the entry served during an outage is the one to keep.
    body = b"x" * 100
    cache = make_cache(ttl=5, max_bytes=3 * (len(body) + ENTRY_OVERHEAD_BYTES))
    loads = {key: Loader(body) for key in "hcde"}
    for key in "hcd":
        await cache.get(key, loads[key])
    clock.advance(6)
    loads["h"].error = Outage()
    assert (await cache.get("h", loads["h"])).detail == "stale-if-error"
    await cache.get("e", loads["e"])
    assert (await cache.get("h", loads["h"])).detail == "stale-if-error"
    assert cache.fresh("c") is None
    assert loads["c"].calls == 1
    assert (await cache.get("c", loads["c"])).outcome is Outcome.MISS


async def test_an_entry_bigger_than_the_budget_is_served_but_not_stored(
    make_cache: Callable[..., ReadThroughCache],
) -> None:
    cache, load = make_cache(max_bytes=1000), Loader(b"y" * 600)
    first = await cache.get("k", load)
    assert first.entry.body == load.body
    assert first.detail == ""  # not "stored"
    assert (await cache.get("k", load)).outcome is Outcome.MISS
    stats = cache.stats()
    assert (stats.oversize, stats.entries, stats.bytes, load.calls) == (2, 0, 0, 2)


async def test_keys_are_compared_by_value(make_cache: Callable[..., ReadThroughCache]) -> None:
    cache, load = make_cache(), Loader()
    await cache.get(("acc", "list", (("after", "5"), ("limit", "10"))), load)
    same = await cache.get(("acc", "list", (("after", "5"), ("limit", "10"))), load)
    other = await cache.get(("acc", "list", (("limit", "10"),)), load)
    assert (same.outcome, other.outcome, load.calls) == (Outcome.HIT, Outcome.MISS, 2)


# -- the stored bytes -------------------------------------------------------------------------


async def test_entries_hold_a_strong_tag_headers_and_a_gzip_copy_of_large_bodies(
    make_cache: Callable[..., ReadThroughCache],
) -> None:
    cache = make_cache()
    large = b'[{"name": "Acme Logistics", "balance": "15234.5000"}, ' * 100
    big = (await cache.get("big", Loader(large))).entry
    assert big.gzip is not None
    assert len(big.gzip) < len(large)
    assert gzip.decompress(big.gzip) == large
    assert big.headers == (("Link", "<next>"),)
    small = (await cache.get("small", Loader(b"[]"))).entry
    assert small.gzip is None
    noise = (await cache.get("noise", Loader(os.urandom(4096)))).entry
    assert noise.gzip is None  # gzip would not be smaller
    tags = {big.tag, small.tag, noise.tag}
    assert len(tags) == 3
    assert all(t.isascii() and '"' not in t and len(t) >= 20 for t in tags)


async def test_a_big_body_is_hashed_and_compressed_in_a_thread_and_reused_unchanged(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    body = b'{"id": 123456, "login": "someone"}, ' * 20_000  # ~700 KB: past IN_THREAD_BYTES
    assert len(body) >= IN_THREAD_BYTES
    cache, load = make_cache(ttl=5, max_bytes=4 << 20), Loader(body)
    first = (await cache.get("k", load)).entry
    assert first.gzip is not None
    assert gzip.decompress(first.gzip) == body
    clock.advance(5)
    again = (await cache.get("k", load)).entry
    assert again is not first
    assert (again.tag, again.gzip) == (first.tag, first.gzip)  # the same copy: not made again


async def test_an_unchanged_body_keeps_its_tag_and_gzip_copy_across_a_refresh(
    make_cache: Callable[..., ReadThroughCache], clock: FakeClock
) -> None:
    cache, load = make_cache(ttl=5), Loader(b"[1, 2, 3]" * 200)
    before = (await cache.get("k", load)).entry
    clock.advance(5)
    after = (await cache.get("k", load)).entry
    assert load.calls == 2
    assert after is not before
    assert after.loaded_at == before.loaded_at + 5
    assert after.tag == before.tag
    assert after.gzip is before.gzip  # reused, not compressed again
    clock.advance(5)
    load.body = b"[1, 2, 4]" * 200
    changed = (await cache.get("k", load)).entry
    assert changed.tag != before.tag


async def test_close_cancels_loads_in_flight(make_cache: Callable[..., ReadThroughCache]) -> None:
    cache, load = make_cache(), Loader()
    load.hold()
    waiter = asyncio.create_task(cache.get("k", load))
    await load.started.wait()
    await cache.close()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await settle()
    assert cache.stats().in_flight == 0
