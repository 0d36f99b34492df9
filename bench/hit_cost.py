"""hit-cost: what a cache HIT costs over simply writing the same bytes.

The service (TTL 3600 s, so every request after the first is a HIT) and the bare app (same body
bytes, no cache, no headers beyond aiohttp's own) take turns under the same wrk load, pinned to
the same CPU; the ratio of their median throughputs is the service's efficiency on the hit path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from .context import Context
from .processes import Server
from .report import Claim, heading, say
from .stats import median, ms
from .wrk import WrkResult, run_wrk

NAME: Final = "hit-cost"
PATHS: Final = ("/acc/", "/user/")
TARGET_RATIO: Final = 0.9
CONNECTIONS: Final = 50


@dataclass(frozen=True, slots=True)
class _Run:
    wrk: WrkResult
    cpu: float  # the server's CPU seconds during the run
    seconds: float  # wall-clock length of the run


@dataclass(slots=True)
class _Series:
    runs: list[_Run] = field(default_factory=list)

    @property
    def results(self) -> list[WrkResult]:
        return [r.wrk for r in self.runs]

    @property
    def cpu_per_request(self) -> float:
        """Median server CPU seconds per request (independent of other load on the CPU)."""
        return median([r.cpu / r.wrk.requests for r in self.runs])

    @property
    def busy(self) -> float:
        """Median share of the wall-clock time the server was on the CPU."""
        return median([r.cpu / r.seconds for r in self.runs])

    @property
    def rate(self) -> float:
        return median([r.requests_per_second for r in self.results])

    @property
    def p50(self) -> float:
        return median([r.p50 for r in self.results])

    @property
    def p99(self) -> float:
        return median([r.p99 for r in self.results])

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.results)


async def _fetch(session: aiohttp.ClientSession, url: str) -> tuple[bytes, str]:
    # No Accept-Encoding, as wrk sends none: the plain body is what both servers write.
    async with session.get(url, skip_auto_headers=["Accept-Encoding"]) as resp:
        body = await resp.read()
        if resp.status != 200 or "Content-Encoding" in resp.headers:
            raise RuntimeError(f"GET {url}: {resp.status} {resp.headers.get('Content-Encoding')}")
        return body, resp.headers.get("X-Cache", "")


async def run(ctx: Context) -> list[Claim]:
    heading(f"{NAME}: service with every request a cache HIT vs bare aiohttp app, same bytes")
    rounds, seconds = (3, 2.0) if ctx.quick else (5, 5.0)
    service = await ctx.start_service("hit-cost", CACHE_TTL_SECONDS="3600")
    bodies: dict[str, bytes] = {}
    async with aiohttp.ClientSession() as session:
        for path in PATHS:
            await _fetch(session, service.url + path)  # the MISS that fills the cache
            body, outcome = await _fetch(session, service.url + path)
            if outcome != "HIT":
                raise RuntimeError(f"second GET {path} was X-Cache {outcome!r}, expected HIT")
            bodies[path] = body
        files = {}
        for path, body in bodies.items():
            files[path] = ctx.workdir / f"body{path.replace('/', '_')}json"
            files[path].write_bytes(body)
        bare = ctx.processes.bare(files)
        await bare.wait_ready()
        for path in PATHS:
            body, _ = await _fetch(session, bare.url + path)
            if body != bodies[path]:
                raise RuntimeError(f"the bare app's {path} differs from the service's")
    for path in PATHS:
        say(f"  {path}: {len(bodies[path]):,} bytes per response")
    say(
        f"  wrk -t1 -c{CONNECTIONS} --latency, {rounds} rounds x {seconds:g} s per server and "
        "path, servers alternating (order swapped each round); server on CPU 0, wrk on CPU 1"
    )

    targets: dict[str, Server] = {"service": service, "bare": bare}
    series = {(name, path): _Series() for name in targets for path in PATHS}
    for path in PATHS:  # warm-up, not counted
        for server in targets.values():
            await run_wrk(server.url + path, 1, CONNECTIONS)
    for round_no in range(rounds):
        for path in PATHS:
            order = list(targets) if round_no % 2 == 0 else list(reversed(targets))
            line = []
            for name in order:
                server = targets[name]
                server.check_alive()
                cpu, start = server.cpu_seconds(), time.perf_counter()
                result = await run_wrk(server.url + path, seconds, CONNECTIONS)
                run = _Run(result, server.cpu_seconds() - cpu, time.perf_counter() - start)
                series[name, path].runs.append(run)
                line.append(
                    f"{name} {result.requests_per_second:8.1f} req/s "
                    f"({run.cpu / result.requests * 1e6:5.1f} us CPU/req)"
                )
            say(f"  round {round_no + 1} {path:7} " + "  ".join(line))
    async with aiohttp.ClientSession() as session:
        for path in PATHS:
            _, outcome = await _fetch(session, service.url + path)
            if outcome != "HIT":
                say(f"  WARNING: after the rounds GET {path} was X-Cache {outcome}, not HIT")
    ctx.processes.stop(bare)
    ctx.processes.stop(service)

    say()
    say(
        f"  {'path':7} {'service req/s':>13} {'bare req/s':>11} {'ratio':>6}   "
        f"{'service p50/p99':>21}   {'bare p50/p99':>21}   errors"
    )
    claims = []
    for path in PATHS:
        svc, base = series["service", path], series["bare", path]
        ratio = svc.rate / base.rate
        say(
            f"  {path:7} {svc.rate:13.1f} {base.rate:11.1f} {ratio:6.3f}   "
            f"{ms(svc.p50):>10}/{ms(svc.p99):>10}   {ms(base.p50):>10}/{ms(base.p99):>10}   "
            f"{svc.errors}/{base.errors}"
        )
        errors = svc.errors + base.errors
        measured = f"{ratio:.3f} ({svc.rate:.0f} vs {base.rate:.0f} req/s)"
        if errors:
            measured += f", {errors} wrk errors"
        claims.append(
            Claim(
                NAME,
                f"{path} req/s service/bare",
                measured,
                f">= {TARGET_RATIO}",
                ratio >= TARGET_RATIO and errors == 0,
            )
        )
    say("  (medians over the rounds; latency columns are the medians of wrk's per-run p50/p99)")
    say()
    say("  server CPU time per request (from /proc/<pid>/stat; not skewed by other load on CPU 0):")
    for path in PATHS:
        svc, base = series["service", path], series["bare", path]
        say(
            f"  {path:7} service {svc.cpu_per_request * 1e6:6.1f} us, "
            f"bare {base.cpu_per_request * 1e6:6.1f} us, "
            f"bare/service {base.cpu_per_request / svc.cpu_per_request:.3f}; "
            f"CPU busy during the runs: service {svc.busy:.0%}, bare {base.busy:.0%}"
        )
    return claims
