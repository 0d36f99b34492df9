"""Serve one app until SIGTERM or SIGINT, then leave the way a Kubernetes rollout needs:

1. `/readyz` answers 503 at once, so the endpoint is taken out of the Service;
2. everything is still served for SHUTDOWN_DELAY_SECONDS, while that removal reaches every node
   (traffic routed to this pod in the meantime is answered, not refused);
3. the listener closes, idle keep-alive connections are closed, and requests in flight get
   SHUTDOWN_GRACE_SECONDS to finish (aiohttp cancels what is left after that);
4. the app's cleanup contexts run: cache loads are cancelled, the pool waits for its
   connections to come back and closes them (QUIT), and the process exits 0.

A second signal ends the process at once, with status 128 + the signal number.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import os
import signal
import sys
from typing import Final

import structlog
from aiohttp import web

from .access import server_options
from .keys import CHANGES, READINESS
from .logs import AccessLines
from .settings import Settings

log = structlog.get_logger(__name__)

SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (a name other than localhost may resolve to
    anything, so it counts as reachable)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Signals:
    """The first signal asks for a graceful stop (or, before the listener opens, cancels the
    start-up); a second one exits at once."""

    def __init__(self, main: asyncio.Task[None]) -> None:
        self._main = main
        self.received: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.serving = False

    def handle(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.received.done():
            log.error("shutdown_forced", signal=name)
            sys.stdout.flush()
            sys.stdout.buffer.flush()
            os._exit(128 + signum)
        self.received.set_result(signum)
        if not self.serving:
            log.info("startup_cancelled", signal=name)
            self._main.cancel()


async def serve(app: web.Application, settings: Settings, access_lines: AccessLines) -> None:
    """Run `app` on settings' host and port until a signal, then drain as described above;
    access lines go to `access_lines`. Start-up errors (StartupError, OSError from listening)
    propagate after cleanup; a signal during start-up raises CancelledError."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    signals = _Signals(main)
    for signum in SIGNALS:
        loop.add_signal_handler(signum, signals.handle, signum)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        # aiohttp's name for how long requests in flight may run once the listener is closed.
        shutdown_timeout=settings.shutdown_grace_seconds,
        **server_options(app, access_lines),
    )
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        await site.start()
        signals.serving = True
        # What start-up built lives until exit: out of the collector's way, so that the
        # collections requests trigger do not walk it again and again.
        gc.freeze()
        log.info("listening", address=f"{settings.http_host}:{settings.http_port}")
        if not settings.api_tokens and not is_loopback(settings.http_host):
            log.warning(
                "data_routes_open",
                address=settings.http_host,
                hint="anyone who can reach this address reads every resource, /user/ included; "
                "set API_TOKENS_FILE to require bearer tokens",
            )
        received = await signals.received
        app[READINESS].start_draining()
        # Held long-polls are answered now, not cut when the listener closes.
        app[CHANGES].release()
        log.info(
            "shutdown_started",
            signal=signal.Signals(received).name,
            delay_s=settings.shutdown_delay_seconds,
            grace_s=settings.shutdown_grace_seconds,
        )
        await asyncio.sleep(settings.shutdown_delay_seconds)
        log.info("listener_closing")
    finally:
        # Signal handlers stay installed: a second signal during the drain still exits at once.
        await runner.cleanup()
