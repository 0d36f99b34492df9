"""The fault proxy itself, against an echo server: the other fault tests are only as good as
the faults it really makes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from .conftest import eventually
from .proxy import FaultProxy, Mode

# How long "nothing arrives" is watched for: the black hole's promise is a negative one.
QUIET_WINDOW = 0.3


class Echo:
    """An upstream that sends back what it gets and remembers how its connections ended."""

    def __init__(self) -> None:
        self.accepted = 0
        self.endings: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        ending = "eof"
        try:
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        except ConnectionResetError:
            ending = "reset"
        finally:
            self.endings.append(ending)
            writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[tuple[Echo, int]]:
    upstream = Echo()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    async with server:
        yield upstream, int(server.sockets[0].getsockname()[1])


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), 5.0)


async def test_modes(echo: tuple[Echo, int]) -> None:
    upstream, port = echo
    with FaultProxy("127.0.0.1", port) as proxy:
        r1, w1 = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(r1, w1, b"ping") == b"ping"
        assert proxy.open_connections() == 1

        proxy.set_mode(Mode.DELAY, delay_ms=100)
        started = time.monotonic()
        assert await roundtrip(r1, w1, b"slow") == b"slow"
        assert time.monotonic() - started >= 0.2  # one delay each way

        proxy.set_mode(Mode.BLACKHOLE)
        w1.write(b"held")
        r2, w2 = await asyncio.open_connection("127.0.0.1", proxy.port)  # accepted, held
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(r1.readexactly(4), QUIET_WINDOW)
        assert proxy.open_connections() == 2
        assert upstream.accepted == 1  # the new one was not passed on

        proxy.set_mode(Mode.PASS)  # what was held arrives, nothing was lost
        assert await asyncio.wait_for(r1.readexactly(4), 5.0) == b"held"
        assert await roundtrip(r2, w2, b"late") == b"late"
        assert upstream.accepted == 2

        assert proxy.set_mode(Mode.RESET) == 2
        for reader in (r1, r2):
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(1), 5.0)
        await eventually(lambda: upstream.endings == ["reset", "reset"], 5.0, "upstream reset")
        await eventually(lambda: proxy.open_connections() == 0, 5.0, "links forgotten")

        r3, w3 = await asyncio.open_connection("127.0.0.1", proxy.port)  # passes again
        assert await roundtrip(r3, w3, b"again") == b"again"
        assert proxy.accepted_total() == 3
        for writer in (w1, w2, w3):
            writer.close()
        await eventually(lambda: proxy.open_connections() == 0, 5.0, "closed links forgotten")


async def first_byte(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(reader.read(1), 5.0)
    finally:
        writer.close()


async def test_upstream_down_resets_the_client() -> None:
    # Nothing listens on port 1. The RST may come before the client's connect has completed.
    with FaultProxy("127.0.0.1", 1) as proxy, pytest.raises(ConnectionResetError):
        await first_byte(proxy.port)
