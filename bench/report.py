"""Claims (one measured number against one target) and the summary table printed at the end."""

from __future__ import annotations

import sys
from dataclasses import dataclass


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


def print_summary(claims: list[Claim]) -> None:
    heading("summary")
    if not claims:
        say("(no claims measured)")
        return
    rows = [("verdict", "scenario", "claim", "measured", "target")]
    rows += [(c.verdict, c.scenario, c.what, c.measured, c.target) for c in claims]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    failed = sum(1 for c in claims if c.passed is False)
    errors = sum(1 for c in claims if c.passed is None)
    say()
    say(f"{len(claims) - failed - errors} PASS, {failed} FAIL, {errors} ERROR")
