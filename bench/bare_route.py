"""The service itself with a bare handler beside each list, to tell what the cache's hit path
costs from what everything else the service does per request costs:

    python -m bench.bare_route --route /acc/=acc.json ...

serves all that `python -m service` serves (same settings from the environment, same server,
access logger, metrics and route wrapper) plus `GET /bare/acc/`, which answers the file's bytes
from memory through that same wrapper and logger, without the cache: no lookup, no validators,
none of the caching headers. `/acc/` (a HIT) over `/bare/acc/` in one process is the cost of the
cache's hit path alone; the limit reference (bench.bare) is what this machine can do at all.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Final

from aiohttp import web

from service.__main__ import main as serve
from service.app import create_app
from service.keys import METRICS
from service.request_id import RequestIds
from service.routing import Routing, add_read_only
from service.settings import Settings

from .bare import handler, route_files

PREFIX: Final = "/bare"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_route", description=__doc__)
    parser.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="PATH=FILE",
        help=f"serve FILE at {PREFIX}PATH",
    )
    routes = route_files(parser, "--route", parser.parse_args(argv).route)

    def build(settings: Settings) -> web.Application:
        app = create_app(settings)
        metrics = app[METRICS]
        # The wrapper's shared parts as create_app makes them (CORS is off in the bench).
        routing = Routing(RequestIds(), metrics.http)
        for path, body in routes.items():
            # A plain path outranks create_app's catch-all 404 route, added before it.
            add_read_only(app.router, PREFIX + path, handler(body, None), routing)
            metrics.add_route(PREFIX + path)
        return app

    return serve(build=build, argv=())  # the options above are not cm-api's


if __name__ == "__main__":
    sys.exit(main())
