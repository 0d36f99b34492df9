"""Process edge: environment -> settings -> logging -> HTTP server. `cm-api` and
`python -m service` both land here."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Mapping

import prometheus_client
import structlog
from aiohttp import web

from . import __version__
from .app import create_app
from .errors import StartupError
from .logs import configure_logging
from .server import serve
from .settings import Settings, SettingsError, load_settings


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # noqa: PLC0415  (optional: not on every platform)
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(
    env: Mapping[str, str] | None = None,
    *,
    build: Callable[[Settings], web.Application] = create_app,
) -> int:
    """Run the service until SIGTERM/SIGINT and a graceful drain (server.py); return the
    process exit code. `build` makes the app from the settings (bench/ adds routes to it)."""
    try:
        settings = load_settings(os.environ if env is None else env)
    except SettingsError as exc:
        sys.stderr.write(f"cm-api: invalid configuration: {exc}\n")
        return 2
    access_lines = configure_logging(settings.log_level, settings.log_format)
    # Process-wide switch of prometheus-client: no `_created` twin of every counter and
    # histogram series (a third of the scrape; Prometheus' own `resets()` covers restarts).
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    log = structlog.get_logger("service")
    log.info("starting", version=__version__, settings=settings.public())
    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(serve(build(settings), settings, access_lines))
    except asyncio.CancelledError:
        log.info("stopped", during="start-up")
        return 0
    except StartupError as exc:
        log.error("startup_failed", error=str(exc))
        sys.stderr.write(f"cm-api: start-up failed: {exc}\n")
        return 1
    except OSError as exc:
        where = f"{settings.http_host}:{settings.http_port}"
        log.error("listen_failed", address=where, error=str(exc))
        sys.stderr.write(f"cm-api: cannot listen on {where}: {exc.strerror or exc}\n")
        return 1
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
