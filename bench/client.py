"""HTTP client pieces shared by the scenarios that drive the service from Python."""

from __future__ import annotations

import gc
import gzip
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True, slots=True)
class Answer:
    path: str
    status: int
    x_cache: str
    etag: str | None
    encoding: str | None
    body: bytes  # as received (still gzip-compressed when `encoding` is gzip)
    started: float  # perf_counter at send
    finished: float  # perf_counter once the whole body was read

    @property
    def latency(self) -> float:
        return self.finished - self.started

    def json(self) -> Any:
        """The decoded body; raises ValueError when it is not JSON."""
        raw = gzip.decompress(self.body) if self.encoding == "gzip" else self.body
        return orjson.loads(raw)

    def rows(self) -> int | None:
        """Rows in a JSON array body, or None when the body is not one."""
        try:
            value = self.json()
        except ValueError:
            return None
        return len(value) if isinstance(value, list) else None


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection in this (client) process while timing: a collection of the
    client's own objects stalls its event loop, which would show up as server latency.
    Reference counting still frees everything acyclic."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def session(limit: int, timeout: float = 60.0) -> aiohttp.ClientSession:
    """A session that hands bodies over as received (no decompression while timing), opens at
    most `limit` connections and gives up on a request after `timeout` seconds."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, force_close=False),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


async def get(
    client: aiohttp.ClientSession,
    url: str,
    path: str,
    *,
    gzip_ok: bool = True,
    if_none_match: str | None = None,
) -> Answer:
    headers = {"Accept-Encoding": "gzip" if gzip_ok else "identity"}
    if if_none_match is not None:
        headers["If-None-Match"] = if_none_match
    started = time.perf_counter()
    async with client.get(url + path, headers=headers) as resp:
        body = await resp.read()
        finished = time.perf_counter()
        return Answer(
            path=path,
            status=resp.status,
            x_cache=resp.headers.get("X-Cache", "-"),
            etag=resp.headers.get("ETag"),
            encoding=resp.headers.get("Content-Encoding"),
            body=body,
            started=started,
            finished=finished,
        )


@dataclass(frozen=True, slots=True)
class Scrape:
    """One `GET /metrics`."""

    status: int
    size: int  # body bytes as received
    latency: float  # seconds to the last byte
    text: str  # decompressed

    def value(self, name: str) -> float:
        """The value of an unlabelled sample, e.g. a gauge; KeyError when there is none."""
        for family in text_string_to_metric_families(self.text):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return float(sample.value)
        raise KeyError(f"no sample {name} in the /metrics answer")

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels` (0 when none)."""
        return sum(
            float(sample.value)
            for family in text_string_to_metric_families(self.text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )


async def scrape(client: aiohttp.ClientSession, url: str) -> Scrape:
    """`GET /metrics` with gzip accepted, as Prometheus asks; parsed only when read."""
    answer = await get(client, url, "/metrics")
    raw = gzip.decompress(answer.body) if answer.encoding == "gzip" else answer.body
    return Scrape(answer.status, len(answer.body), answer.latency, raw.decode("utf-8"))
