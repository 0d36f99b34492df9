"""A TCP proxy that misbehaves on request, put between cm-api and MariaDB by the fault tests.

Modes:
  PASS       forward bytes both ways as they come
  DELAY      forward every chunk `delay_ms` later (each direction, one chunk after the other),
             so a query's round trip costs at least twice the delay
  BLACKHOLE  accept connections and hold them: nothing is forwarded in either direction, not
             even the end of a stream, for new and existing connections alike (a network that
             silently drops everything). What arrived meanwhile is forwarded once the mode
             changes, as TCP retransmission would deliver it after a real outage
  RESET      close every open connection on both sides with a TCP RST (SO_LINGER 0), then
             behave like PASS for new connections

The proxy runs its own event loop in a thread: the test's loop is busy with hundreds of clients
and with blocking calls (stopping a server), and a proxy stalled by them would add delays that
no test asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

T = TypeVar("T")

CHUNK_BYTES: Final = 64 * 1024
# Bounds every call into the proxy's thread: a proxy that does not answer is a test failure,
# not a hang.
CALL_TIMEOUT: Final = 10.0
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


class Mode(enum.Enum):
    PASS = "pass"
    DELAY = "delay"
    BLACKHOLE = "blackhole"
    RESET = "reset"


@dataclass(eq=False)
class _Link:
    """One client connection and, once the proxy got through, its upstream twin."""

    client: asyncio.StreamWriter
    task: asyncio.Task[None] | None
    upstream: asyncio.StreamWriter | None = None
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Close with an RST instead of a FIN: the peer's next read fails with ECONNRESET."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


class FaultProxy:
    """Listens on 127.0.0.1:`port` (0: any free port) and forwards to `upstream_host`:
    `upstream_port` according to its mode. Not started until `start()`, so a test can reserve
    a port on which nothing listens yet (a database that is not there)."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, port: int = 0, mode: Mode = Mode.PASS
    ) -> None:
        if mode not in (Mode.PASS, Mode.BLACKHOLE):
            raise ValueError("start in PASS or BLACKHOLE; switch with set_mode afterwards")
        self._upstream = (upstream_host, upstream_port)
        self._requested_port = port
        self._initial_mode = mode
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Touched only from the proxy's own thread.
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._delay = 0.0
        self._mode: Mode = mode
        self._accepted = 0

    # -- control (from the test's thread) ---------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            if self._requested_port:
                return self._requested_port
            raise RuntimeError("the proxy has not been started")
        return self._port

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self._run(self._listen())

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._run(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CALL_TIMEOUT)
            loop.close()
            self._loop = self._thread = None

    def set_mode(self, mode: Mode, *, delay_ms: float = 0.0) -> int:
        """Switch modes; for RESET, the number of connections reset."""
        if mode is Mode.DELAY and delay_ms <= 0:
            raise ValueError("DELAY needs a positive delay_ms")
        return self._run(self._apply(mode, delay_ms / 1000))

    def open_connections(self) -> int:
        """Client connections open now (held ones in a black hole included)."""
        return self._call(lambda: len(self._links))

    def accepted_total(self) -> int:
        """Client connections accepted since the start."""
        return self._call(lambda: self._accepted)

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the proxy has not been started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT)

    def _call(self, read: Callable[[], T]) -> T:
        async def in_loop() -> T:
            return read()

        return self._run(in_loop())

    # -- the proxy's own thread -------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self._requested_port, reuse_address=True
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        await self._apply(self._initial_mode, self._delay)

    async def _apply(self, mode: Mode, delay: float) -> int:
        reset = 0
        if mode is Mode.RESET:
            for link in list(self._links):
                for writer in link.writers():
                    reset_connection(writer)
                reset += 1
        self._mode = mode
        self._delay = delay if mode is Mode.DELAY else 0.0
        if mode is Mode.BLACKHOLE:
            self._flowing.clear()
        else:
            self._flowing.set()
        return reset

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [link.task for link in self._links if link.task is not None]
        for link in list(self._links):
            for writer in link.writers():
                writer.transport.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer, asyncio.current_task())
        self._links.add(link)
        self._accepted += 1
        try:
            await self._flowing.wait()  # a black hole does not even dial the other side
            upstream = self._dial()
            try:
                if upstream is None:
                    raise ConnectionRefusedError("nowhere to forward this connection")
                up_reader, up_writer = await asyncio.open_connection(*upstream)
            except OSError:
                reset_connection(writer)  # as a refused connection would: the client learns at once
                return
            link.upstream = up_writer
            link.pumps = [
                asyncio.create_task(self._pump(reader, up_writer)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            # MySQL never half-closes: one side ending ends the connection.
            await asyncio.wait(link.pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in link.pumps:
                pump.cancel()
            await asyncio.gather(*link.pumps, return_exceptions=True)
            self._links.discard(link)
            for w in link.writers():
                w.close()

    def _dial(self) -> tuple[str, int] | None:
        """Where a new connection is forwarded (None: nowhere; it is reset at once). Runs in
        the proxy's thread; a subclass may choose per connection."""
        return self._upstream

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await reader.read(CHUNK_BYTES)
                await self._flowing.wait()  # held, the end of the stream included
                if self._delay:
                    await asyncio.sleep(self._delay)
                    await self._flowing.wait()  # the hole may have opened during the delay
                if not data:
                    return
                writer.write(data)
                await writer.drain()
