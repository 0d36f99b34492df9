"""Interleaved wrk rounds: several variants (a server, a path, request headers) loaded in turn
with `wrk -t1 -c50 --latency`, the order rotated each round so that drift on a noisy machine
hits every variant alike. Each run records wrk's report, the server's CPU time and the database
server's counters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .context import Context
from .dbstatus import Delta
from .processes import Server
from .report import Row, say
from .stats import median, ms
from .wrk import WrkResult, run_wrk

CONNECTIONS = 50
LIST_PATHS = ("/acc/", "/user/")


@dataclass(frozen=True, slots=True)
class Size:
    """How much a wrk-rounds scenario runs: which paths, how many rounds of how long, and the
    unrecorded warm-up per variant (which also lets the pool grow before connections count)."""

    paths: tuple[str, ...]
    rounds: int
    seconds: float
    warmup: float

    @staticmethod
    def of(smoke: bool) -> Size:
        return SMOKE if smoke else FULL

    def estimate(self, variants: int, settle: float = 0.0) -> float:
        """Seconds the rounds take with `variants` per path (wrk runs whole seconds)."""
        per_run = max(1, round(self.seconds)) + settle
        runs = len(self.paths) * variants
        return runs * (self.rounds * per_run + round(self.warmup)) + 4


FULL = Size(paths=LIST_PATHS, rounds=3, seconds=4.0, warmup=1.0)
# The smoke exercises the code, so one path is enough.
SMOKE = Size(paths=LIST_PATHS[:1], rounds=1, seconds=1.0, warmup=0.0)


@dataclass(frozen=True, slots=True, eq=False)
class Variant:
    name: str  # e.g. "service gzip"
    server: Server
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Run:
    wrk: WrkResult
    cpu: float  # the server's CPU seconds during the run
    seconds: float  # wall-clock length of the run
    status: Delta  # the database server's counters over the run

    @property
    def cpu_per_request(self) -> float:
        return self.cpu / self.wrk.requests if self.wrk.requests else float("nan")


@dataclass(slots=True)
class Series:
    """Every measured run of one variant."""

    variant: Variant
    runs: list[Run] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return median([r.wrk.requests_per_second for r in self.runs])

    @property
    def p50(self) -> float:
        return median([r.wrk.p50 for r in self.runs])

    @property
    def p99(self) -> float:
        return median([r.wrk.p99 for r in self.runs])

    @property
    def errors(self) -> int:
        return sum(r.wrk.errors for r in self.runs)

    @property
    def requests(self) -> int:
        return sum(r.wrk.requests for r in self.runs)

    @property
    def selects(self) -> int:
        return sum(r.status.selects for r in self.runs)

    @property
    def connections(self) -> int:
        return sum(r.status.connections for r in self.runs)

    @property
    def cpu_per_request(self) -> float:
        """Median server CPU seconds per request: unlike req/s it does not move when something
        else on the machine takes the server's CPU away."""
        return median([r.cpu_per_request for r in self.runs])

    @property
    def busy(self) -> float:
        """Median share of the wall-clock time the server was on the CPU."""
        return median([r.cpu / r.seconds for r in self.runs])

    def row(self, scenario: str, baseline: Series | None = None, name: str = "") -> Row:
        """The table row: medians over the rounds, sums of errors and counters, and the ratio
        of req/s to `baseline` (called `name`)."""
        return Row(
            scenario=scenario,
            variant=f"{self.variant.path} {self.variant.name}",
            rate=self.rate,
            p50=self.p50,
            p99=self.p99,
            errors=self.errors,
            selects=self.selects,
            connections=self.connections,
            ratio=None if baseline is None else self.rate / baseline.rate,
            ratio_to=name if baseline is not None else None,
            cpu=self.cpu_per_request,
            details={
                "path": self.variant.path,
                "headers": dict(self.variant.headers),
                "requests": self.requests,
                "cpu_busy": self.busy,
                "runs": [
                    {
                        "requests_per_second": r.wrk.requests_per_second,
                        "requests": r.wrk.requests,
                        "p50_seconds": r.wrk.p50,
                        "p99_seconds": r.wrk.p99,
                        "errors": r.wrk.errors,
                        "server_cpu_seconds": r.cpu,
                        "seconds": r.seconds,
                        **r.status.as_json(),
                    }
                    for r in self.runs
                ],
            },
        )


@dataclass(frozen=True, slots=True)
class Rounds:
    series: dict[str, Series]  # by "<path> <variant name>"
    total: Delta  # the database server's counters over all measured rounds

    def __getitem__(self, key: tuple[str, str]) -> Series:
        path, name = key
        return self.series[f"{path} {name}"]


async def _one(variant: Variant, seconds: float) -> tuple[WrkResult, float, float]:
    server = variant.server
    server.check_alive()
    cpu, start = server.cpu_seconds(), time.perf_counter()
    result = await run_wrk(server.url + variant.path, seconds, CONNECTIONS, variant.headers)
    return result, server.cpu_seconds() - cpu, time.perf_counter() - start


async def warm_up(groups: Sequence[Sequence[Variant]], seconds: float) -> None:
    """`seconds` of unrecorded load per variant (fills caches, lets the pool grow)."""
    for group in groups:
        for variant in group:
            await _one(variant, seconds)


async def run_rounds(
    ctx: Context,
    groups: Sequence[Sequence[Variant]],
    rounds: int,
    seconds: float,
    warmup: float,
    settle: float = 0.0,
) -> Rounds:
    """Each round runs every group (one per path) with its variants in rotated order, after an
    unrecorded warm-up pass of `warmup` s per variant (none if 0). Counters are read `settle` s
    after each run, so queries still running when wrk stopped count in the run that caused them."""
    say(
        f"  wrk -t1 -c{CONNECTIONS} --latency on CPU 1, servers on CPU 0: {rounds} round(s) x "
        f"{max(1, round(seconds))} s per variant, order rotated each round"
        + (f", after a {max(1, round(warmup))} s warm-up per variant" if warmup > 0 else "")
    )
    if warmup > 0:
        await warm_up(groups, warmup)
    series = {f"{v.path} {v.name}": Series(v) for group in groups for v in group}
    first = last = await ctx.read_status()
    for round_no in range(rounds):
        for group in groups:
            shift = round_no % len(group)
            for variant in [*group[shift:], *group[:shift]]:
                result, cpu, elapsed = await _one(variant, seconds)
                await asyncio.sleep(settle)
                now = await ctx.read_status()
                run = Run(result, cpu, elapsed, now - last)
                last = now
                series[f"{variant.path} {variant.name}"].runs.append(run)
                say(
                    f"  round {round_no + 1} {variant.path:7} {variant.name:24} "
                    f"{result.requests_per_second:9.1f} req/s  p50 {ms(result.p50):>9}  "
                    f"p99 {ms(result.p99):>9}  {run.cpu_per_request * 1e6:6.1f} us CPU/req  "
                    f"errors {result.errors}  SELECTs {run.status.selects}  "
                    f"connections {run.status.connections}"
                )
    return Rounds(series, last - first)
