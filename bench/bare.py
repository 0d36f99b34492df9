"""The baseline: an aiohttp app (uvloop, like the service) that answers fixed routes with fixed,
pre-encoded JSON bytes and does nothing else.

    python -m bench.bare --route /acc/=acc.json --route /user/=user.json

Listens on HTTP_HOST:HTTP_PORT, like the service; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.Response]]


def _handler(body: bytes) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return handle


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # noqa: PLC0415  (as in service/__main__.py)
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument(
        "--route", action="append", default=[], metavar="PATH=FILE", help="serve FILE at PATH"
    )
    args = parser.parse_args(argv)
    app = web.Application()
    for route in args.route:
        path, sep, file = route.partition("=")
        if not sep:
            parser.error(f"--route expects PATH=FILE, got {route!r}")
        app.router.add_get(path, _handler(Path(file).read_bytes()))
    web.run_app(
        app,
        host=os.environ.get("HTTP_HOST", "127.0.0.1"),
        port=int(os.environ.get("HTTP_PORT", "8080")),
        print=None,
        access_log=None,
        loop=_new_loop(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
