"""A counting TCP relay between the service and MySQL/MariaDB: the SELECTs the service itself
sends, exactly, whatever else runs on the same server.

`SHOW GLOBAL STATUS LIKE 'Com_select'` counts every client's SELECTs, so any other user of the
server (a test suite, a monitor) inflates it. This relay forwards bytes both ways untouched and
reads only the client's command packets: a COM_QUERY (0x03) starting a command (sequence id 0)
whose text begins with SELECT is counted. Connecting to the control port returns one line,
"<selects> <queries>\\n", the totals so far.

    python -m bench.sqlcount --port P --control-port C --target HOST:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import uvloop

_COM_QUERY: Final = 0x03
_CHUNK: Final = 256 * 1024


@dataclass(slots=True)
class _Totals:
    selects: int = 0
    queries: int = 0


class _Relay:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.totals = _Totals()

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        tasks = [
            asyncio.create_task(self._commands(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        # Either side closing ends the pair.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            w.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()

    async def _commands(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = bytearray()
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)  # forwarded first; counting never delays the query
            pending += chunk
            while len(pending) >= 4:
                length = int.from_bytes(pending[:3], "little")
                if len(pending) < 4 + length:
                    break
                if pending[3] == 0 and length > 0 and pending[4] == _COM_QUERY:
                    self.totals.queries += 1
                    text = bytes(pending[5 : 4 + length]).lstrip()
                    if text[:6].upper() == b"SELECT":
                        self.totals.selects += 1
                del pending[: 4 + length]
            await writer.drain()

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{self.totals.selects} {self.totals.queries}\n".encode())
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()


async def read_totals(port: int) -> tuple[int, int]:
    """(selects, queries) relayed so far, from the control port of a running relay."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        line = await reader.readline()
    finally:
        writer.close()
    selects, queries = line.split()
    return int(selects), int(queries)


async def _serve(port: int, control_port: int, target_host: str, target_port: int) -> None:
    relay = _Relay(target_host, target_port)
    data = await asyncio.start_server(relay.client, "127.0.0.1", port)
    control = await asyncio.start_server(relay.control, "127.0.0.1", control_port)
    async with data, control:
        await asyncio.gather(data.serve_forever(), control.serve_forever())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sqlcount", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--target", required=True, metavar="HOST:PORT")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve(args.port, args.control_port, host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
