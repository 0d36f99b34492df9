"""Process-wide runtime tuning, applied once at the process edge: the event loop, the C
allocator, the garbage collector. Each is a measured fix (see bench/), not a guess."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import platform
from typing import Final

# glibc mallopt() parameters (malloc.h).
_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8
# Cached bodies are large (often 10 KiB to 1 MiB) and replaced every TTL. glibc's default
# raises its mmap threshold after each free of a large block, so later bodies land in the heap
# and leave holes it never returns: RSS grew ~30 MB past the cache's own bytes in bench/.
# A fixed threshold gives each large body its own mapping, returned to the system when freed.
MMAP_THRESHOLD_BYTES: Final = 64 * 1024
# One arena per thread (gzip runs in worker threads) multiplies that fragmentation.
ARENA_MAX: Final = 2


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # noqa: PLC0415  (optional: not on every platform)
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def tune_malloc() -> None:
    """Set glibc's allocator for a cache of large bodies, unless the operator already chose
    through the MALLOC_*_ environment variables. Elsewhere (musl, macOS) nothing happens."""
    if platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    if "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(_M_ARENA_MAX, ARENA_MAX)


def freeze_gc() -> None:
    """Everything alive at start-up lives as long as the process: moving it out of the
    collector's generations makes the full collections that the many rows of a load trigger
    scan only new objects, instead of stalling every request for milliseconds."""
    gc.collect()
    gc.freeze()
