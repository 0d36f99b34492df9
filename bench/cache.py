"""Entry point: `python -m bench.cache [--quick] [--only SCENARIO]`.

Creates the run's database, runs the scenarios in order, prints a summary of every claim, and
drops the database and stops every process it started, also on failure, SIGTERM or Ctrl-C.
Exit status 0 when every scenario ran (whatever the verdicts), 1 when one could not run, 130
when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Final

import uvloop

from . import cold_burst, hit_cost, memory, polling
from .context import Context
from .database import BenchDatabase, server_address
from .processes import Processes, pin_self_to_client_cpu
from .report import Claim, heading, print_summary, say

Scenario = Callable[[Context], Awaitable[list[Claim]]]
SCENARIOS: Final[dict[str, Scenario]] = {
    hit_cost.NAME: hit_cost.run,
    cold_burst.NAME: cold_burst.run,
    polling.NAME: polling.run,
    memory.NAME: memory.run,
}
DATA_SEED: Final = 20240601
EXIT_FAILED: Final = 1
EXIT_INTERRUPTED: Final = 130


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cache", description="Benchmarks of cm-api's response cache."
    )
    parser.add_argument(
        "--quick", action="store_true", help="shorter runs (a smoke test, not a measurement)"
    )
    parser.add_argument("--only", choices=list(SCENARIOS), help="run just this scenario")
    return parser.parse_args(argv)


async def _run_all(
    quick: bool, db: BenchDatabase, processes: Processes, workdir: Path, names: list[str]
) -> tuple[list[Claim], bool]:
    relay = processes.relay(db.addr)
    await relay.wait_ready()
    ctx = Context(quick=quick, db=db, relay=relay, processes=processes, workdir=workdir)
    claims: list[Claim] = []
    all_ran = True
    for name in names:
        try:
            claims += await SCENARIOS[name](ctx)
        except Exception as exc:
            all_ran = False
            say(f"  ERROR: {name} could not run: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            claims.append(Claim(name, "scenario ran", type(exc).__name__, "no error", None))
        finally:
            processes.stop_servers()  # whatever the scenario left running
    return claims, all_ran


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    names = [args.only] if args.only else list(SCENARIOS)
    signal.signal(signal.SIGTERM, _interrupt)
    pin_self_to_client_cpu()
    db = BenchDatabase(server_address())
    with tempfile.TemporaryDirectory(prefix="cmapi-bench-") as workdir:
        processes = Processes(Path(workdir))
        try:
            heading("setup")
            started = time.perf_counter()
            db.create(DATA_SEED)
            say(
                f"  database {db.name} on {db.addr.host}:{db.addr.port}: 500 acc rows, "
                f"5000 user rows ({time.perf_counter() - started:.1f} s)"
            )
            say(f"  scenarios: {', '.join(names)}{' (--quick)' if args.quick else ''}")
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                claims, all_ran = runner.run(
                    _run_all(args.quick, db, processes, Path(workdir), names)
                )
            print_summary(claims)
            return 0 if all_ran else EXIT_FAILED
        except KeyboardInterrupt:
            sys.stderr.write("interrupted; cleaning up\n")
            return EXIT_INTERRUPTED
        except Exception as exc:
            sys.stderr.write(f"bench could not run: {type(exc).__name__}: {exc}\n")
            traceback.print_exc()
            return EXIT_FAILED
        finally:
            # A second Ctrl-C during clean-up must not leave a process or the database behind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            processes.stop_all()
            db.drop()


if __name__ == "__main__":
    sys.exit(main())
