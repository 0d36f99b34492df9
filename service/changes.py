"""Waiting for a cached answer to change (the long-poll behind `Prefer: wait=N`), at no extra
database cost: while anyone waits on a key, one background task reloads it once per TTL through
the cache (single-flight, so it shares a load with every other request for that key) and wakes
the waiters whose tag the new entry no longer matches.

Bounded: at most `max_held` requests wait at once (past that, they are refused and answered at
once); release() at shutdown wakes every waiter and refuses new ones. Knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Final

import structlog

from .cache import Entry, Loader, ReadThroughCache

log = structlog.get_logger(__name__)

# With CACHE_TTL_SECONDS=0 (or below this) the waiters' reloads still come no more often.
MIN_INTERVAL: Final = 1.0
# How often a waiter checks that its client is still connected (aiohttp does not cancel the
# handler of a client that left): a slot is freed at most this long after the client went.
CLIENT_CHECK: Final = 2.0


class Ended(enum.Enum):
    """How a wait ended (the label of cmapi_http_long_polls_total)."""

    CHANGED = "changed"  # the data changed (or can no longer be served as it was)
    TIMEOUT = "timeout"  # the requested seconds passed unchanged
    RELEASED = "released"  # shutdown began
    GONE = "gone"  # the client closed its connection
    REFUSED = "refused"  # not held: max_held reached, or shutting down


@dataclass(frozen=True, slots=True)
class HeldStats:
    held: int
    max_held: int
    ended: dict[str, int]


@dataclass(slots=True)
class _Watch:
    """One watched key: its latest entry, when to reload it, and the waiters' wake-up."""

    latest: Entry
    next_at: float
    waiters: int = 0
    ended: bool = False  # the data can no longer be served as it was (e.g. the row is gone)
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    refresher: asyncio.Task[None] | None = None

    def offer(self, entry: Entry) -> None:
        """An entry of the key, from a load or a waiter: kept when newer, and the waiters are
        woken when its tag differs (each compares it with its own)."""
        if entry.loaded_at < self.latest.loaded_at:
            return
        changed = entry.tag != self.latest.tag
        self.latest = entry
        if changed:
            self._wake()

    def end(self) -> None:
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        self.woken.set()
        self.woken = asyncio.Event()


class ChangeWaits:
    """Held requests by cache key. `wait()` returns once the entry's tag differs from the
    caller's, or the time is up, or shutdown began; the caller then answers as usual."""

    def __init__(self, cache: ReadThroughCache, *, max_held: int) -> None:
        self.cache = cache
        self.max_held = max_held
        self.interval = max(cache.ttl, MIN_INTERVAL)
        self._watches: dict[Hashable, _Watch] = {}
        self._held = 0
        self._released = False
        self._ended = {e.value: 0 for e in Ended}

    @property
    def accepting(self) -> bool:
        """Whether a wait asked for now would be held (else it is refused at once)."""
        return not self._released and self._held < self.max_held

    async def wait(
        self,
        key: Hashable,
        seen: Entry,
        seconds: float,
        load: Loader,
        gone: Callable[[], bool] = lambda: False,
    ) -> tuple[Ended, Entry | None]:
        """Hold until `key`'s entry has another tag than `seen` (then the new entry, or None
        when it can no longer be served as it was), `seconds` pass, shutdown begins or
        `gone()` says the client left. `load` reloads the key."""
        if not self.accepting:
            return self._count(Ended.REFUSED), None
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watch(key, seen, load)
        else:
            watch.offer(seen)
        watch.waiters += 1
        self._held += 1
        try:
            ended = await self._held_until(watch, seen.tag, seconds, gone)
        except asyncio.CancelledError:
            # The handler was cancelled: its client left (where aiohttp cancels on that).
            self._count(Ended.GONE)
            raise
        finally:
            self._held -= 1
            watch.waiters -= 1
            if watch.waiters == 0 and self._watches.get(key) is watch:
                self._unwatch(key, watch)
        changed = ended is Ended.CHANGED and not watch.ended
        return self._count(ended), watch.latest if changed else None

    async def _held_until(
        self, watch: _Watch, tag: str, seconds: float, gone: Callable[[], bool]
    ) -> Ended:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            if watch.ended or watch.latest.tag != tag:
                return Ended.CHANGED
            if self._released:
                return Ended.RELEASED
            left = deadline - loop.time()
            if left <= 0:
                return Ended.TIMEOUT
            if gone():
                return Ended.GONE
            try:
                async with asyncio.timeout(min(left, CLIENT_CHECK)):
                    await watch.woken.wait()
            except TimeoutError:
                pass

    def release(self) -> None:
        """Shutdown began: wake every waiter (answered, not cut) and hold no new request."""
        self._released = True
        for watch in self._watches.values():
            watch.woken.set()

    async def close(self) -> None:
        """Release the waiters and stop the reloads (before the cache closes)."""
        self.release()
        tasks = [w.refresher for w in self._watches.values() if w.refresher is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> HeldStats:
        return HeldStats(self._held, self.max_held, dict(self._ended))

    def _count(self, ended: Ended) -> Ended:
        self._ended[ended.value] += 1
        return ended

    def _watch(self, key: Hashable, seen: Entry, load: Loader) -> _Watch:
        watch = _Watch(seen, next_at=seen.loaded_at + self.interval)
        self._watches[key] = watch
        # A context of its own: the reloads must not carry the first waiter's request id.
        watch.refresher = asyncio.create_task(
            self._refresh(key, watch, load), context=contextvars.Context()
        )
        return watch

    def _unwatch(self, key: Hashable, watch: _Watch) -> None:
        del self._watches[key]
        if watch.refresher is not None:
            watch.refresher.cancel()

    async def _refresh(self, key: Hashable, watch: _Watch, load: Loader) -> None:
        """Reload `key` once per interval while it is watched, and publish what changed."""
        cache, clock = self.cache, self.cache.clock
        while not watch.ended:
            await asyncio.sleep(max(0.0, watch.next_at - clock()))
            current = cache.fresh(key)
            if current is not None and current.entry.loaded_at > watch.latest.loaded_at:
                # Another request's load got there first: no query of our own.
                entry = current.entry
            else:
                try:
                    entry = await cache.refresh(key, load)
                except cache.failure_types as exc:
                    # The database cannot answer now: the waiters keep what they have.
                    log.debug("long_poll_reload_failed", key=repr(key), error=repr(exc))
                    watch.next_at = clock() + self.interval
                    continue
                except Exception:
                    # An answer about the data (not found, too large): the waiters go and get it.
                    watch.end()
                    return
            watch.next_at = entry.loaded_at + self.interval
            watch.offer(entry)
