"""The command line: `python -m bench [--smoke] [--only NAME] [--acc-rows N] [--user-rows N]
[--json PATH]`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from . import data
from .processes import REPO
from .scenarios import NAMES

DEFAULT_JSON: Final = REPO / "bench" / "results" / "latest.json"


@dataclass(frozen=True, slots=True)
class Options:
    smoke: bool
    scenarios: tuple[str, ...]  # in run order: those named with --only, else every one
    acc_rows: int
    user_rows: int
    json: Path

    def as_json(self) -> dict[str, object]:
        return {
            "smoke": self.smoke,
            "scenarios": list(self.scenarios),
            "acc_rows": self.acc_rows,
            "user_rows": self.user_rows,
        }


def _rows(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of cm-api against the limit of the machine (see bench/README.md).",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="every scenario at its smallest size: checks the bench works, measures nothing",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=NAMES,
        default=[],
        metavar="NAME",
        help=f"run this scenario (repeatable): {', '.join(NAMES)}",
    )
    parser.add_argument(
        "--acc-rows", type=_rows, default=data.ACC_ROWS, metavar="N", help="rows in acc"
    )
    parser.add_argument(
        "--user-rows", type=_rows, default=data.USER_ROWS, metavar="N", help="rows in user"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help="results as JSON; the Markdown goes beside it as .md "
        f"(default {DEFAULT_JSON.relative_to(REPO)})",
    )
    args = parser.parse_args(argv)
    chosen = set(args.only)
    return Options(
        smoke=args.smoke,
        scenarios=tuple(n for n in NAMES if n in chosen) if chosen else NAMES,
        acc_rows=args.acc_rows,
        user_rows=args.user_rows,
        json=args.json,
    )
