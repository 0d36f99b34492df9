"""structlog configuration, done once at the process edge: JSON lines on stdout (or a readable
console format), and the standard library's loggers (aiohttp, asyncio) through the same
renderer, so that every line of the process has one shape.

The access line, the one line written per request, has its own writer (`AccessLines`): it
renders the fields directly instead of through structlog's processor chain (bench/README.md,
"Figures behind design choices"), with the same keys and shape as every other line.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO, Final

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer

from .request_id import add_request_id

# The event loop runs in the main thread; records from other threads are written at once.
_MAIN_THREAD: Final = threading.main_thread().ident


def _dumps(value: Any, **_: Any) -> bytes:
    return orjson.dumps(value, default=str)


def _dumps_text(value: Any, **_: Any) -> str:
    return _dumps(value).decode()


class LoopFlushedLogger:
    """A structlog logger that collects lines and writes them with one write() per event loop
    turn: under load one turn answers many requests, and each write() is a system call when
    stdout is unbuffered (PYTHONUNBUFFERED, as containers set it). Warnings and errors, lines
    written outside a running loop and those of other threads go out at once, with whatever is
    pending before them; what is pending at exit is written by an atexit hook."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._pending: list[bytes] = []
        # The loop a write is scheduled on: a loop that stopped before running it (tests run
        # many) must not keep later lines waiting.
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def msg(self, message: bytes | str) -> None:
        self._pending.append(message if isinstance(message, bytes) else message.encode())
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._scheduled_on is not loop:
            self._scheduled_on = loop
            loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._scheduled_on = None
        self.flush()

    def urgent(self, message: bytes | str) -> None:
        self.msg(message)
        self.flush()

    def flush(self) -> None:
        # Swapped, not cleared: a line added meanwhile (another thread) goes to the next write.
        lines, self._pending = self._pending, []
        if lines:
            lines.append(b"")
            self._file.write(b"\n".join(lines))
            self._file.flush()

    log = debug = info = msg
    warn = warning = error = err = critical = exception = failure = fatal = urgent


class LoopFlushedLoggerFactory:
    def __init__(self, file: BinaryIO) -> None:
        self.logger = LoopFlushedLogger(file)

    def __call__(self, *args: Any) -> LoopFlushedLogger:
        return self.logger  # one writer for the process, so one write per loop turn


class _StdlibHandler(logging.Handler):
    """Writes the standard library's records (formatted by structlog) through our writer, in
    order with our own lines."""

    def __init__(self, out: LoopFlushedLogger) -> None:
        super().__init__()
        self._out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING or threading.get_ident() != _MAIN_THREAD:
            self._out.urgent(line)
        else:
            self._out.msg(line)


class ParserRejections(logging.Filter):
    """aiohttp logs every request its parser rejects (garbage from a scanner, a header over
    the limits) at error level with a traceback, although it answered it with a 400 that the
    access line records. Those become one debug line without the traceback, or nothing
    unless we debug; the server's other errors pass unchanged."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self._debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        if not self._debug:
            return False
        record.msg = f"{record.getMessage()}: {exc.message}"
        record.args = None
        record.levelno, record.levelname, record.exc_info = logging.DEBUG, "DEBUG", None
        return True


ACCESS_EVENT: Final = "request"
_LEVEL_NAMES: Final = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


class UtcStamper:
    """structlog processor: an ISO 8601 UTC `timestamp` with microseconds, like
    TimeStamper(fmt="iso", utc=True), with the date and time of day formatted once per second
    rather than through a datetime per line."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # (second, its formatted prefix) replaced as one object: standard library records may
        # be stamped from other threads.
        self._cached = (-1, "")

    def now(self) -> str:
        t = self._clock()
        second = int(t)
        micros = round((t - second) * 1_000_000)  # rounded as datetime.fromtimestamp does
        if micros == 1_000_000:
            second, micros = second + 1, 0
        cached = self._cached
        if cached[0] != second:
            utc = datetime.datetime.fromtimestamp(second, datetime.UTC)
            cached = self._cached = (second, utc.strftime("%Y-%m-%dT%H:%M:%S."))
        return f"{cached[1]}{micros:06d}Z"

    def __call__(self, _: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict["timestamp"] = self.now()
        return event_dict


class AccessLines:
    """The writer of access lines: `write` completes a line's fields (event, level, timestamp,
    in structlog's key order) and hands them to `emit`; lines below `level` are not written,
    and `enabled_for` lets the caller skip gathering their fields."""

    def __init__(
        self,
        level: int,
        emit: Callable[[dict[str, Any]], None],
        stamper: UtcStamper | None = None,
    ) -> None:
        self.level = level
        self._emit = emit
        self._stamper = stamper or UtcStamper()

    def enabled_for(self, level: int) -> bool:
        return level >= self.level

    def write(self, level: int, fields: dict[str, Any]) -> None:
        fields["event"] = ACCESS_EVENT
        fields["level"] = _LEVEL_NAMES.get(level, "info")
        fields["timestamp"] = self._stamper.now()
        self._emit(fields)


def configure_logging(level: str, fmt: str) -> AccessLines:
    """JSON lines on stdout, or a readable console format (`fmt` "console", or "auto" on a TTY).

    Returns the writer of access lines, in the same format (hand it to the server)."""
    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if console
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    stamper = UtcStamper()
    shared: list[Any] = [add_request_id, structlog.processors.add_log_level, stamper]
    # Without frame locals (dict_tracebacks has them): a frame may hold a request's raw bytes,
    # an Authorization header or a connection's password.
    tracebacks: list[Any] = (
        [] if console else [ExceptionRenderer(ExceptionDictTransformer(show_locals=False))]
    )
    sys.stdout.flush()  # what was written as text so far goes first
    factory = LoopFlushedLoggerFactory(sys.stdout.buffer)
    structlog.configure(
        processors=[*shared, *tracebacks, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    atexit.register(factory.logger.flush)
    # Records of the standard library's loggers get the logger's name and the same rendering.
    handler = _StdlibHandler(factory.logger)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tracebacks,
                renderer if console else structlog.processors.JSONRenderer(serializer=_dumps_text),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    server = logging.getLogger("aiohttp.server")
    for old in [f for f in server.filters if isinstance(f, ParserRejections)]:
        server.removeFilter(old)
    server.addFilter(ParserRejections(numeric <= logging.DEBUG))
    # Libraries are chatty at debug and info: keep their warnings unless we debug.
    root.setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    out = factory.logger
    if console:
        return AccessLines(numeric, lambda fields: out.msg(renderer(None, "", fields)), stamper)
    return AccessLines(numeric, lambda fields: out.msg(_dumps(fields)), stamper)
