"""Entity tags and gzip copies of response bodies: for a whole body, or for one given in parts
and made in a worker thread while the parts arrive (a load that requests wait for)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import zlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

# Smaller bodies gain too little from gzip to be worth a second copy.
GZIP_MIN_BYTES: Final = 1024
# Level 5 is the knee between size and compression time for our JSON (bench/README.md).
GZIP_LEVEL: Final = 5
_GZIP_WBITS: Final = 31  # zlib's gzip wrapper, with mtime 0: the same bytes as gzip.compress


def entity_tag(body: bytes) -> str:
    """A strong ETag's value for `body` (without the quotes): 128 bits of BLAKE2b, URL-safe."""
    return _tag(hashlib.blake2b(body, digest_size=16))


def _tag(digest: hashlib.blake2b) -> str:
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")


def gzip_copy(body: bytes) -> bytes | None:
    """The gzip copy of `body`, or None when it is small or does not shrink."""
    if len(body) < GZIP_MIN_BYTES:
        return None
    return _smaller(body, zlib.compress(body, GZIP_LEVEL, _GZIP_WBITS))


def _smaller(body: bytes, compressed: bytes) -> bytes | None:
    keep = len(body) >= GZIP_MIN_BYTES and len(compressed) < len(body)
    return compressed if keep else None


@dataclass(frozen=True, slots=True)
class Encodings:
    tag: str  # entity_tag of the body
    gzip: bytes | None  # gzip_copy of the body


class GzipStream:
    """The entity tag and gzip copy of a body fed in parts, made in one worker thread as the
    parts arrive: ready soon after the last one instead of a compression time later. `close`
    (or `finish`) ends the thread."""

    def __init__(self) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cm-api-gzip")
        self._deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
        self._digest = hashlib.blake2b(digest_size=16)
        self._compressed: list[bytes] = []  # written by the worker only
        self._fed: list[Future[None]] = []
        self._size = 0

    def feed(self, parts: Sequence[bytes]) -> None:
        """The next parts of the body, in order."""
        self._size += sum(map(len, parts))
        self._fed.append(self._worker.submit(self._compress, parts))

    def _compress(self, parts: Sequence[bytes]) -> None:
        for part in parts:
            self._digest.update(part)  # both release the GIL for big parts
            self._compressed.append(self._deflate.compress(part))

    def _end(self) -> bytes:
        self._compressed.append(self._deflate.flush())
        return b"".join(self._compressed)

    async def finish(self, body: bytes) -> Encodings:
        """The encodings of `body`, which must be what was fed."""
        if len(body) != self._size:
            raise ValueError(f"fed {self._size} bytes, finished with {len(body)}")
        try:
            compressed = await asyncio.wrap_future(self._worker.submit(self._end))
        finally:
            self.close()
        for fed in self._fed:  # all done (one worker, in order): raises what one raised
            fed.result()
        return Encodings(_tag(self._digest), _smaller(body, compressed))

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
