"""no-cache: the connection pool alone (CACHE_TTL_SECONDS=0) next to the cached service, under
the same wrk load: what the cache saves, and that the pool reuses its connections instead of
opening new ones.

TTL 0 stores nothing, but single-flight stays on (the service's documented behaviour): requests
that arrive while a query for the same list runs share its answer (COALESCED) instead of
sending their own. So under 50 concurrent connections there are fewer SELECTs than requests;
the claims are that no answer came from storage and that every load was exactly one SELECT.

Two services run side by side on the server CPU; their plain runs of the same path alternate.
"""

from __future__ import annotations

import asyncio
from typing import Final

from .client import get, scrape, session
from .context import Context, Scenario
from .report import Claim, Outcome, heading, say
from .rounds import Rounds, Size, Variant, run_rounds, warm_up

NAME: Final = "no-cache"
CACHED: Final = "cached identity"
UNCACHED: Final = "no-cache identity"

# Longer than a /user/ query: the SELECTs of requests in flight when wrk stops finish before
# the counters are read, and count in their own run rather than the next one.
SETTLE: Final = 0.5


RESULT: Final = "cmapi_cache_requests_total"


async def _results(url: str) -> dict[str, float]:
    """The TTL-0 service's cache results so far, by result (hit, miss, coalesced, stale)."""
    async with session(limit=1) as client:
        found = await scrape(client, url)
    return {r: found.total(RESULT, result=r) for r in ("hit", "miss", "coalesced", "stale")}


def _claims(found: Rounds, paths: tuple[str, ...], results: dict[str, float]) -> list[Claim]:
    selects = sum(found[path, UNCACHED].selects for path in paths)
    requests = sum(found[path, UNCACHED].requests for path in paths)
    errors = sum(found[path, UNCACHED].errors for path in paths)
    stored = results["hit"] + results["stale"]
    return [
        Claim(
            NAME,
            "answers from storage with TTL 0 (HIT or STALE)",
            f"{stored:.0f} of {sum(results.values()):.0f} answers",
            "== 0",
            stored == 0 and errors == 0,
        ),
        Claim(
            NAME,
            "SELECTs per load with TTL 0 (loads = MISS answers)",
            f"{selects} SELECTs for {results['miss']:.0f} MISS + {results['coalesced']:.0f} "
            f"COALESCED answers ({requests} requests counted by wrk)",
            "SELECTs == MISS",
            selects == results["miss"],
        ),
    ]


async def run(ctx: Context) -> Outcome:
    size = Size.of(ctx.smoke)
    heading(f"{NAME}: CACHE_TTL_SECONDS=0 (the pool alone) vs cached (TTL 3600 s), plain bodies")
    cached = await ctx.start_service(f"{NAME}-cached", CACHE_TTL_SECONDS="3600")
    uncached = await ctx.start_service(f"{NAME}-ttl0", CACHE_TTL_SECONDS="0")
    async with session(limit=1) as client:
        for path in size.paths:
            await get(client, cached.url, path, gzip_ok=False)  # fills the cache
    groups = [
        [Variant(CACHED, cached, path), Variant(UNCACHED, uncached, path)] for path in size.paths
    ]
    # The cache results are read around the measured rounds only, after the warm-up.
    if size.warmup > 0:
        say(f"  warm-up: {size.warmup:g} s per variant, not recorded")
        await warm_up(groups, size.warmup)
        await asyncio.sleep(SETTLE)
    before = await _results(uncached.url)
    found = await run_rounds(ctx, groups, size.rounds, size.seconds, 0.0, SETTLE)
    after = await _results(uncached.url)
    results = {r: after[r] - before[r] for r in after}
    ctx.processes.stop(uncached)
    ctx.processes.stop(cached)

    outcome = Outcome()
    for path in size.paths:
        plain, bare = found[path, CACHED], found[path, UNCACHED]
        outcome.rows += [plain.row(NAME), bare.row(NAME, plain, CACHED)]
        say(
            f"  {path:7} no-cache/cached req/s {bare.rate / plain.rate:.3f}; CPU per request "
            f"{bare.cpu_per_request * 1e6:.1f} us vs {plain.cpu_per_request * 1e6:.1f} us"
        )
    outcome.claims += _claims(found, size.paths, results)
    total = found.total
    say(f"  database over the measured rounds: {total.describe()}")
    outcome.claims.append(
        Claim(
            NAME,
            "connections opened after the warm-up",
            str(total.connections),
            "== 0",
            total.connections == 0,
        )
    )
    return outcome


def _seconds(smoke: bool) -> float:
    return Size.of(smoke).estimate(2, SETTLE)


SCENARIO: Final = Scenario(NAME, run, _seconds, needs_wrk=True)
