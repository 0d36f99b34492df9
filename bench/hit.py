"""hit: what a cache HIT costs next to the limit of this machine, the limit reference writing
the same bytes from memory, and next to a bare handler inside the service (same server, wrapper,
access logger and metrics, no cache); and what gzip and a 304 revalidation give.

The service runs with a TTL of an hour, so after the first request every request is a HIT. Per
path six variants take turns under the same wrk load: service and reference, each plain and
gzip, the service answering 304 to If-None-Match, and the bare handler in the service.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from typing import Final

from .bare_route import PREFIX
from .client import get, session
from .context import Context, Scenario
from .processes import Server
from .report import Claim, Outcome, heading, say
from .rounds import Rounds, Series, Size, Variant, run_rounds

NAME: Final = "hit"
TARGET_RATIO: Final = 0.9  # service/reference req/s, plain
TARGET_GZIP: Final = 1.0  # gzip req/s over plain req/s, service
TARGET_SHRINK: Final = 5.0  # plain bytes per response over gzip bytes per response
TARGET_304: Final = 1.0  # 304 req/s over plain req/s, service
GZIP: Final = {"Accept-Encoding": "gzip"}
REFERENCE: Final = "limit reference"
BARE: Final = "in-service bare handler"

VARIANTS: Final = 6


@dataclass(frozen=True, slots=True)
class _Bodies:
    plain: bytes
    gzip: bytes
    etag: str  # the service's ETag for the plain body


async def _bodies(url: str, path: str) -> _Bodies:
    """Fill the cache, then read the plain and gzip answers and check a 304, as wrk will ask."""
    async with session(limit=1) as client:
        await get(client, url, path, gzip_ok=False)  # the MISS that fills the cache
        plain = await get(client, url, path, gzip_ok=False)
        packed = await get(client, url, path)
        if plain.status != 200 or plain.x_cache != "HIT" or plain.etag is None:
            raise RuntimeError(
                f"second GET {path}: {plain.status}, X-Cache {plain.x_cache}, ETag {plain.etag}; "
                "expected 200, HIT and an ETag"
            )
        if packed.status != 200 or packed.encoding != "gzip":
            raise RuntimeError(f"GET {path} with gzip: {packed.status}, {packed.encoding}")
        if gzip.decompress(packed.body) != plain.body:
            raise RuntimeError(f"the gzip {path} does not decompress to the plain one")
        revalidated = await get(client, url, path, gzip_ok=False, if_none_match=plain.etag)
        if revalidated.status != 304:
            raise RuntimeError(f"GET {path} with If-None-Match {plain.etag}: not 304")
    return _Bodies(plain.body, packed.body, plain.etag)


async def _same_bytes(url: str, path: str, bodies: _Bodies) -> None:
    async with session(limit=1) as client:
        plain = await get(client, url, path, gzip_ok=False)
        packed = await get(client, url, path)
    if plain.body != bodies.plain or packed.body != bodies.gzip or packed.encoding != "gzip":
        raise RuntimeError(f"the limit reference's {path} differs from the service's")


def _variants(
    service: Server, reference: Server, bare: Server, path: str, etag: str
) -> list[Variant]:
    return [
        Variant("service identity", service, path),
        Variant(BARE, bare, PREFIX + path),
        Variant(f"{REFERENCE} identity", reference, path),
        Variant("service gzip", service, path, GZIP),
        Variant(f"{REFERENCE} gzip", reference, path, GZIP),
        Variant("service 304", service, path, {"If-None-Match": etag}),
    ]


def _claims(path: str, found: Rounds, bodies: _Bodies) -> list[Claim]:
    plain, ref_plain = found[path, "service identity"], found[path, f"{REFERENCE} identity"]
    packed, not_modified = found[path, "service gzip"], found[path, "service 304"]

    def errors(*errs: int) -> str:
        return f", {sum(errs)} wrk errors" if sum(errs) else ""

    def identity_versus(baseline: Series, name: str) -> Claim:
        """Service identity req/s over `baseline`'s; wrk errors on either side fail it."""
        ratio = plain.rate / baseline.rate
        return Claim(
            NAME,
            f"{path} identity req/s service/{name}",
            f"{ratio:.3f} ({plain.rate:.0f} vs {baseline.rate:.0f})"
            + errors(plain.errors, baseline.errors),
            f">= {TARGET_RATIO}",
            ratio >= TARGET_RATIO and plain.errors + baseline.errors == 0,
        )

    gzip_ratio = packed.rate / plain.rate
    shrink = len(bodies.plain) / len(bodies.gzip)
    ratio_304 = not_modified.rate / plain.rate
    return [
        identity_versus(ref_plain, "reference"),
        identity_versus(found[PREFIX + path, BARE], BARE),
        Claim(
            NAME,
            f"{path} gzip req/s vs identity (service)",
            f"{gzip_ratio:.3f} ({packed.rate:.0f} vs {plain.rate:.0f})" + errors(packed.errors),
            f">= {TARGET_GZIP:.1f} x identity",
            gzip_ratio >= TARGET_GZIP and packed.errors == 0,
        ),
        Claim(
            NAME,
            f"{path} identity/gzip bytes per response",
            f"{shrink:.2f} ({len(bodies.plain):,} / {len(bodies.gzip):,} B)",
            f">= {TARGET_SHRINK:g}",
            shrink >= TARGET_SHRINK,
        ),
        Claim(
            NAME,
            f"{path} 304 req/s vs identity (service)",
            f"{ratio_304:.3f} ({not_modified.rate:.0f} vs {plain.rate:.0f})"
            + errors(not_modified.errors),
            f">= {TARGET_304:.1f} x identity",
            ratio_304 >= TARGET_304 and not_modified.errors == 0,
        ),
    ]


async def run(ctx: Context) -> Outcome:
    size = Size.of(ctx.smoke)
    heading(f"{NAME}: cache HITs (TTL 3600 s) vs the {REFERENCE} writing the same bytes")
    service = await ctx.start_service(NAME, CACHE_TTL_SECONDS="3600")
    bodies = {path: await _bodies(service.url, path) for path in size.paths}
    reference = await ctx.start_reference(
        NAME,
        {p: b.plain for p, b in bodies.items()},
        {p: b.gzip for p, b in bodies.items()},
    )
    bare = await ctx.start_bare_routes(
        NAME, {p: b.plain for p, b in bodies.items()}, CACHE_TTL_SECONDS="3600"
    )
    for path, body in bodies.items():
        await _same_bytes(reference.url, path, body)
        async with session(limit=1) as client:
            if (await get(client, bare.url, PREFIX + path, gzip_ok=False)).body != body.plain:
                raise RuntimeError(f"the bare handler's {PREFIX}{path} differs from {path}")
        say(
            f"  {path}: {len(body.plain):,} B identity, {len(body.gzip):,} B gzip per response "
            "(bodies measured with aiohttp)"
        )
    groups = [_variants(service, reference, bare, path, bodies[path].etag) for path in size.paths]
    found = await run_rounds(ctx, groups, size.rounds, size.seconds, size.warmup)
    async with session(limit=1) as client:
        for path in size.paths:
            after = await get(client, service.url, path, gzip_ok=False)
            if after.x_cache != "HIT":
                say(f"  WARNING: after the rounds GET {path} was X-Cache {after.x_cache}, not HIT")
    ctx.processes.stop(reference)
    ctx.processes.stop(bare)
    ctx.processes.stop(service)

    outcome = Outcome()
    say()
    say("  server CPU time per request (/proc/<pid>/stat, user + system; steadier than req/s):")
    for path in size.paths:
        plain, ref_plain = found[path, "service identity"], found[path, f"{REFERENCE} identity"]
        packed, ref_packed = found[path, "service gzip"], found[path, f"{REFERENCE} gzip"]
        not_modified = found[path, "service 304"]
        bare_plain = found[PREFIX + path, BARE]
        outcome.rows += [
            plain.row(NAME, ref_plain, REFERENCE),
            ref_plain.row(NAME),
            bare_plain.row(NAME, ref_plain, REFERENCE),
            packed.row(NAME, ref_packed, REFERENCE),
            ref_packed.row(NAME),
            not_modified.row(NAME, plain, "service identity"),
        ]
        for series in (plain, ref_plain, bare_plain, packed, ref_packed, not_modified):
            say(
                f"  {path:7} {series.variant.name:26} {series.cpu_per_request * 1e6:7.1f} us "
                f"(CPU busy {series.busy:.0%})"
            )
        say(
            f"  {path:7} reference/service CPU per request: identity "
            f"{ref_plain.cpu_per_request / plain.cpu_per_request:.3f}, gzip "
            f"{ref_packed.cpu_per_request / packed.cpu_per_request:.3f}; bare handler/service "
            f"identity {bare_plain.cpu_per_request / plain.cpu_per_request:.3f}"
        )
        outcome.claims += _claims(path, found, bodies[path])
    total = found.total
    say(f"  database over the measured rounds: {total.describe()}")
    outcome.claims.append(
        Claim(
            NAME,
            "steady state: SELECTs, connections opened",
            f"{total.selects}, {total.connections}",
            "0, 0",
            total.selects == 0 and total.connections == 0,
        )
    )
    return outcome


def _seconds(smoke: bool) -> float:
    return Size.of(smoke).estimate(VARIANTS)


SCENARIO: Final = Scenario(NAME, run, _seconds, needs_wrk=True)
