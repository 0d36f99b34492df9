"""What a scenario reports (table rows and claims) and how the two tables are laid out, as
aligned text for the terminal and as Markdown."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ROW_HEADER = (
    "scenario",
    "variant",
    "requests/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "SELECTs",
    "connections opened",
    "ratio",
    "ratio to",
    "server CPU us/req",
)
CLAIM_HEADER = ("verdict", "scenario", "claim", "measured", "target")


def say(text: str = "") -> None:
    """Progress and results go to stdout as they happen."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def heading(text: str) -> None:
    say()
    say(f"== {text}")


@dataclass(frozen=True, slots=True)
class Claim:
    scenario: str
    what: str
    measured: str
    target: str
    passed: bool | None  # None: the scenario failed before it could measure this

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "ERROR"
        return "PASS" if self.passed else "FAIL"

    def cells(self) -> tuple[str, ...]:
        return (self.verdict, self.scenario, self.what, self.measured, self.target)


@dataclass(frozen=True, slots=True)
class Row:
    """One measured run or variant (medians over its rounds when it had several)."""

    scenario: str
    variant: str
    rate: float | None = None  # requests per second
    p50: float | None = None  # seconds
    p99: float | None = None
    errors: int | None = None
    selects: int | None = None  # Com_select delta
    connections: int | None = None  # Connections delta: connections the server accepted
    ratio: float | None = None  # rate / the rate of `ratio_to`
    ratio_to: str | None = None
    cpu: float | None = None  # server CPU seconds per request
    details: Mapping[str, object] = field(default_factory=dict)  # JSON only

    def cells(self) -> tuple[str, ...]:
        return (
            self.scenario,
            self.variant,
            _number(self.rate, 1 if self.rate is not None and self.rate < 100 else 0),
            _number(None if self.p50 is None else self.p50 * 1000, 2),
            _number(None if self.p99 is None else self.p99 * 1000, 2),
            _number(self.errors, 0),
            _number(self.selects, 0),
            _number(self.connections, 0),
            _number(self.ratio, 3),
            self.ratio_to or "",
            _number(None if self.cpu is None else self.cpu * 1e6, 1),
        )


@dataclass(slots=True)
class Outcome:
    """What one scenario reports."""

    rows: list[Row] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)


def _number(value: float | None, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:,.{decimals}f}"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    everything = [tuple(header), *map(tuple, rows)]
    widths = [max(len(row[i]) for row in everything) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in everything
    ]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(r) for r in rows)]


def tally(claims: Sequence[Claim]) -> str:
    failed = sum(1 for c in claims if c.passed is False)
    errors = sum(1 for c in claims if c.passed is None)
    return f"{len(claims) - failed - errors} PASS, {failed} FAIL, {errors} ERROR"


def print_tables(rows: Sequence[Row], claims: Sequence[Claim], smoke: bool) -> None:
    note = " (smoke: figures are not measurements)" if smoke else ""
    heading("results" + note)
    if rows:
        for line in text_table(ROW_HEADER, [r.cells() for r in rows]):
            say(line)
    else:
        say("(no rows measured)")
    heading("claims" + note)
    if not claims:
        say("(no claims measured)")
        return
    for line in text_table(CLAIM_HEADER, [c.cells() for c in claims]):
        say(line)
    say()
    say(tally(claims))
