"""Read-through cache of ready response bodies.

One load per key at a time (single-flight), entries kept as encoded bytes with a strong ETag and
a gzip copy, stale-while-revalidate and stale-if-error. It knows nothing of HTTP: callers turn a
`Lookup` into a response. Storage and byte budget are cachetools' TTLCache; the clock is
injected.

Ages and windows, measured from the moment the load that produced an entry started:
  age < ttl                          fresh: served as HIT, no database work
  ttl <= age < ttl + swr             served as STALE at once while one background load refreshes it
  age >= ttl + swr                   the request waits for a load (MISS, or COALESCED if one runs)
  load failed, age < ttl + sie       the entry is served as STALE instead of the error
So with a healthy database no answer is older than ttl + swr (plus one query time); during an
outage answers may be up to ttl + sie old, and past that the error reaches the client.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import time
import zlib
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Final, NamedTuple

import structlog
from cachetools import TTLCache

log = structlog.get_logger(__name__)

# Smaller bodies gain too little from gzip to be worth a second copy.
GZIP_MIN_BYTES: Final = 1024
# Hashing and compressing more than this at once would stall the event loop for milliseconds.
IN_THREAD_BYTES: Final = 256 * 1024
# Level 5 is the knee between size and compression time for our JSON (bench/README.md).
GZIP_LEVEL: Final = 5
_GZIP_WBITS: Final = 31  # zlib's gzip wrapper with mtime 0
_SLICE: Final = 4 * 1024 * 1024
# Bookkeeping per entry (key, Entry object, cachetools links), charged against the byte budget so
# that many tiny entries cannot exceed it unseen.
ENTRY_OVERHEAD_BYTES: Final = 512


class Outcome(enum.Enum):
    HIT = "HIT"  # fresh entry, no load
    MISS = "MISS"  # this request started the load and waited for it
    COALESCED = "COALESCED"  # joined a load another request had started
    STALE = "STALE"  # older than the TTL: revalidating in the background, or a load failed


def entity_tag(body: bytes) -> str:
    """A strong ETag's value for `body` (without the quotes): 128 bits of BLAKE2b, URL-safe."""
    digest = hashlib.blake2b(body, digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Document:
    """What a loader returns: the encoded body and headers that belong to it (e.g. Link)."""

    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Entry:
    body: bytes
    gzip: bytes | None  # None when the body is small or does not compress
    tag: str  # strong entity tag of `body`, without quotes; the gzip copy's is tag + "-gzip"
    headers: tuple[tuple[str, str], ...]
    loaded_at: float  # clock time the load started: the data is at least this old

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzip or b"") + ENTRY_OVERHEAD_BYTES


class Lookup(NamedTuple):  # a tuple: built on every request, so cheap to make
    entry: Entry
    outcome: Outcome
    age: float  # seconds since the entry's load started
    freshness: float  # seconds of freshness left; negative once stale
    detail: str = ""  # for STALE: "revalidating" or "stale-if-error"; for MISS: "stored"


@dataclass(frozen=True, slots=True)
class CacheStats:
    """The cache's state and its own events. What each request got is counted per response
    (Lookup.outcome, by access.py), not here."""

    refreshes: int  # background loads: stale-while-revalidate, and refresh() for waiters
    load_errors: int
    evictions: int  # entries dropped to stay within the byte budget
    oversize: int  # loads served but not stored because they alone exceed the budget
    entries: int
    bytes: int
    max_bytes: int
    in_flight: int
    waiting: int  # requests waiting for a load now


@dataclass(slots=True)
class _Counters:
    refreshes: int = 0
    load_errors: int = 0
    oversize: int = 0


def _size(entry: Entry) -> int:
    return entry.size


class _Store(TTLCache[Hashable, Entry]):
    """TTLCache that counts the entries it evicts for room (expiry is not an eviction)."""

    def __init__(self, max_bytes: int, ttl: float, clock: Callable[[], float]) -> None:
        super().__init__(max_bytes, ttl, timer=clock, getsizeof=_size)
        self.evictions = 0

    def popitem(self) -> tuple[Hashable, Entry]:
        item = super().popitem()
        self.evictions += 1
        return item

    def use(self, key: Hashable) -> Entry | None:
        """The entry of `key`, now the most recently used; None if absent or expired."""
        try:
            return self[key]
        except KeyError:
            return None


Loader = Callable[[], Awaitable[Document]]


@dataclass(slots=True)
class _Failure:
    error: BaseException
    at: float
    hold: float  # seconds it is given to requests instead of a new load
    outage: bool  # a failure_types error: a stored entry may be served instead (stale-if-error)


class ReadThroughCache:
    """Serve `Document`s by key, loading each at most once at a time.

    `failure_types` are the loader errors that mean "the source cannot answer now": they are
    remembered for `retry_interval` seconds (later requests get them without a new load) and make
    a stored entry servable under stale-if-error. `refusal_types` are answers about the data
    itself (a list too large to serve): remembered for the TTL, like an entry, so that polling
    clients do not run the query again. Any other loader error (say, not found) is passed to
    the waiting requests of that load and forgotten. Both drop the stored entry: it no
    longer stands.
    """

    def __init__(
        self,
        *,
        ttl: float,
        stale_while_revalidate: float,
        stale_if_error: float,
        max_bytes: int,
        failure_types: tuple[type[Exception], ...] = (Exception,),
        refusal_types: tuple[type[Exception], ...] = (),
        retry_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_load: Callable[[Hashable, float], None] | None = None,
    ) -> None:
        self.ttl = ttl
        self.stale_while_revalidate = stale_while_revalidate
        self.stale_if_error = stale_if_error
        self.max_bytes = max_bytes
        self.failure_types = failure_types
        self.refusal_types = refusal_types
        self.retry_interval = retry_interval
        self.clock = clock
        self._on_load = on_load  # told the duration of every load that produced an entry
        keep = ttl + max(stale_while_revalidate, stale_if_error)
        self._store = _Store(max(max_bytes, 1), max(keep, 1e-9), clock)
        self._failures: dict[Hashable, _Failure] = {}
        self._inflight: dict[Hashable, asyncio.Task[Entry]] = {}
        self._counters = _Counters()
        self._waiting = 0

    @property
    def storing(self) -> bool:
        return self.ttl > 0 and self.max_bytes > 0

    def fresh(self, key: Hashable) -> Lookup | None:
        """The HIT for `key` if its entry is fresh, else None (then call get()). Synchronous:
        the common case costs no coroutine and no loader to build."""
        entry = self._store.use(key)
        return None if entry is None else self._hit(entry, self.clock())

    def hit(self, entry: Entry) -> Lookup:
        """`entry` served now from memory (one a waiter was handed), whatever its age."""
        age = self.clock() - entry.loaded_at
        return Lookup(entry, Outcome.HIT, age, self.ttl - age)

    def _hit(self, entry: Entry, now: float) -> Lookup | None:
        age = now - entry.loaded_at
        return Lookup(entry, Outcome.HIT, age, self.ttl - age) if age < self.ttl else None

    async def get(self, key: Hashable, load: Loader) -> Lookup:
        """The entry for `key`: stored, or loaded by `load` (once, however many ask at once).

        Raises the loader's error when there is nothing acceptable to serve instead."""
        now = self.clock()
        entry = self._store.use(key)
        if entry is not None:
            hit = self._hit(entry, now)
            if hit is not None:
                return hit
            age = now - entry.loaded_at
            if age < self.ttl + self.stale_while_revalidate:
                if key not in self._inflight and self._recent_failure(key, now) is None:
                    self._counters.refreshes += 1
                    self._start(key, load, now)
                return Lookup(entry, Outcome.STALE, age, self.ttl - age, "revalidating")
        task = self._inflight.get(key)
        outcome = Outcome.COALESCED
        if task is None:
            failure = self._recent_failure(key, now)
            if failure is not None:
                stale = self._stale_if_error(key, now) if failure.outage else None
                if stale is None:
                    raise failure.error.with_traceback(None)
                return stale
            outcome = Outcome.MISS
            task = self._start(key, load, now)
        self._waiting += 1
        try:
            # A waiter that is cancelled (client gone) leaves the load running for the others.
            fresh = await asyncio.shield(task)
        except self.failure_types:
            stale = self._stale_if_error(key, self.clock())
            if stale is None:
                raise
            return stale
        finally:
            self._waiting -= 1
        age = self.clock() - fresh.loaded_at
        stored = outcome is Outcome.MISS and self._store.use(key) is fresh
        return Lookup(fresh, outcome, age, self.ttl - age, "stored" if stored else "")

    async def refresh(self, key: Hashable, load: Loader) -> Entry:
        """A new entry for `key` whatever the stored one's age: for a background reader that
        waits for changes. Joins a load already running (single-flight); while a recent
        failure is remembered, raises it without a load."""
        task = self._inflight.get(key)
        if task is None:
            failure = self._recent_failure(key, self.clock())
            if failure is not None:
                raise failure.error.with_traceback(None)
            self._counters.refreshes += 1
            task = self._start(key, load, self.clock())
        return await asyncio.shield(task)

    def stats(self) -> CacheStats:
        c = self._counters
        return CacheStats(
            refreshes=c.refreshes,
            load_errors=c.load_errors,
            evictions=self._store.evictions,
            oversize=c.oversize,
            entries=len(self._store),
            bytes=int(self._store.currsize),
            max_bytes=self.max_bytes,
            in_flight=len(self._inflight),
            waiting=self._waiting,
        )

    async def close(self) -> None:
        """Cancel the loads still running (at shutdown, before the database closes)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _recent_failure(self, key: Hashable, now: float) -> _Failure | None:
        failure = self._failures.get(key)
        if failure is None:
            return None
        if now - failure.at < failure.hold:
            return failure
        del self._failures[key]
        return None

    def _stale_if_error(self, key: Hashable, now: float) -> Lookup | None:
        entry = self._store.use(key)
        if entry is None:
            return None
        age = now - entry.loaded_at
        if age >= self.ttl + self.stale_if_error:
            return None
        return Lookup(entry, Outcome.STALE, age, self.ttl - age, "stale-if-error")

    def _start(self, key: Hashable, load: Loader, now: float) -> asyncio.Task[Entry]:
        task = asyncio.create_task(self._load(key, load, now))
        self._inflight[key] = task

        def finished(done: asyncio.Task[Entry]) -> None:
            if self._inflight.get(key) is done:
                del self._inflight[key]
            # Marks the error as retrieved even when every waiter has gone away.
            if not done.cancelled() and done.exception() is not None:
                log.debug("cache_load_failed", key=repr(key), error=repr(done.exception()))

        task.add_done_callback(finished)
        return task

    async def _load(self, key: Hashable, load: Loader, started: float) -> Entry:
        try:
            document = await load()
        except self.failure_types as exc:
            self._counters.load_errors += 1
            self._remember(key, _Failure(exc, self.clock(), self.retry_interval, outage=True))
            raise
        except self.refusal_types as exc:
            self._remember(key, _Failure(exc, self.clock(), self.ttl, outage=False))
            self._store.pop(key, None)
            raise
        except Exception:
            # An answer about the data (the row is gone): what was stored no longer stands.
            self._store.pop(key, None)
            raise
        self._failures.pop(key, None)
        entry = await self._entry(document, started, self._store.use(key))
        if self._on_load is not None:
            self._on_load(key, self.clock() - started)
        if self.storing:
            try:
                self._store[key] = entry
            except ValueError:  # cachetools: the entry alone is bigger than the whole budget
                self._counters.oversize += 1
                # Every request for it runs the query again (concurrent ones still share one).
                log.warning(
                    "cache_entry_too_large",
                    key=repr(key),
                    bytes=entry.size,
                    max_bytes=self.max_bytes,
                    hint="raise CACHE_MAX_BYTES, or have clients ask for pages",
                )
        return entry

    def _remember(self, key: Hashable, failure: _Failure) -> None:
        self._failures[key] = failure
        self._forget_old_failures()

    def _forget_old_failures(self) -> None:
        # Bounded without a timer: past a few hundred keys, drop those whose interval is over.
        if len(self._failures) > 256:
            now = self.clock()
            for key in [k for k, f in self._failures.items() if now - f.at >= f.hold]:
                del self._failures[key]

    @staticmethod
    async def _entry(document: Document, started: float, previous: Entry | None) -> Entry:
        body = document.body
        if len(body) >= IN_THREAD_BYTES:
            # hashlib and zlib release the GIL: the loop keeps serving meanwhile.
            tag, compressed = await asyncio.to_thread(_encodings, body, previous)
        else:
            tag, compressed = _encodings(body, previous)
        return Entry(body, compressed, tag, document.headers, started)


def _encodings(body: bytes, previous: Entry | None) -> tuple[str, bytes | None]:
    """The entity tag and gzip copy of `body`. Unchanged data keeps its gzip copy (its ETag is
    the same), so polling clients keep getting 304 at no compression cost."""
    tag = entity_tag(body)
    if previous is not None and previous.tag == tag:
        return tag, previous.gzip
    return tag, _gzip(body)


def _gzip(body: bytes) -> bytes | None:
    """The gzip copy of `body` (as gzip.compress with mtime 0), or None when it is small or does
    not shrink."""
    if len(body) < GZIP_MIN_BYTES:
        return None
    # In slices: zlib assembles each result holding the GIL, which for one big body stalled
    # the event loop although the compression itself runs in a worker thread.
    deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    view = memoryview(body)
    pieces = [deflate.compress(view[at : at + _SLICE]) for at in range(0, len(body), _SLICE)]
    pieces.append(deflate.flush())
    compressed = b"".join(pieces)
    return compressed if len(compressed) < len(body) else None
