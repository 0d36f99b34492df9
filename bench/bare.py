"""The limit reference: an aiohttp app (uvloop, like the service) that answers fixed routes with
fixed, pre-encoded bytes from memory and does nothing else, so it shows how fast this machine
can write the same answers at all.

    python -m bench.bare --route /acc/=acc.json --gzip-route /acc/=acc.json.gz ...

A path given with --gzip-route answers a request whose Accept-Encoding names gzip with that
file and `Content-Encoding: gzip`, and every other request with its --route file. `/livez` and
`/readyz` answer 200, as the service's do. Listens on HTTP_HOST:HTTP_PORT, like the service;
SIGTERM stops it.
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
JSON = "application/json"
PROBE_BODY = b'{"status": "ok"}'


def handler(body: bytes, gzip_body: bytes | None) -> Handler:
    if gzip_body is None:

        async def plain(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type=JSON)

        return plain

    async def negotiated(request: web.Request) -> web.Response:
        # A substring test, not the service's q-value parsing: the reference must cost no more
        # than the least any server could do; the bench's clients send plain "gzip".
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(
                body=gzip_body, content_type=JSON, headers={"Content-Encoding": "gzip"}
            )
        return web.Response(body=body, content_type=JSON)

    return negotiated


async def _probe(request: web.Request) -> web.Response:
    return web.Response(body=PROBE_BODY, content_type=JSON)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # noqa: PLC0415  (as in service/__main__.py)
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def route_files(
    parser: argparse.ArgumentParser, option: str, values: list[str]
) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for value in values:
        path, sep, file = value.partition("=")
        if not sep:
            parser.error(f"{option} expects PATH=FILE, got {value!r}")
        files[path] = Path(file).read_bytes()
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument(
        "--route", action="append", default=[], metavar="PATH=FILE", help="serve FILE at PATH"
    )
    parser.add_argument(
        "--gzip-route",
        action="append",
        default=[],
        metavar="PATH=FILE",
        help="serve FILE (gzip bytes) at PATH to requests that accept gzip",
    )
    args = parser.parse_args(argv)
    plain = route_files(parser, "--route", args.route)
    gzip = route_files(parser, "--gzip-route", args.gzip_route)
    if missing := sorted(set(gzip) - set(plain)):
        parser.error(f"--gzip-route without a --route for {', '.join(missing)}")
    app = web.Application()
    for path, body in plain.items():
        app.router.add_get(path, handler(body, gzip.get(path)))
    for path in ("/livez", "/readyz"):
        app.router.add_get(path, _probe)
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
