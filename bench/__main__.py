"""Entry point: `python -m bench [--smoke] [--only NAME] [--acc-rows N] [--user-rows N]
[--json PATH]`.

Creates the run's database, runs the scenarios in order, prints the results and claims tables,
writes them as JSON and Markdown, and drops the database and stops every process it started,
also on failure, SIGTERM or Ctrl-C. Exit status 0 when every scenario ran (whatever the
verdicts), 1 when one or the setup could not run, 130 when interrupted.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Final

import uvloop

from devtools.mariadb import DevDBError, ServerAddress, can_install_packages, database_server

from . import results
from .context import Context, Scenario
from .database import BenchDatabase, server_address
from .dbstatus import StatusReader
from .environment import describe
from .options import Options, parse
from .processes import Processes, pin_self_to_client_cpu, raise_open_files_limit
from .report import Claim, Row, heading, print_tables, say
from .scenarios import SCENARIOS
from .wrk import ensure_wrk, wrk_version

DATA_SEED: Final = 20240601
SETUP_SECONDS: Final = 5.0
EXIT_FAILED: Final = 1
EXIT_INTERRUPTED: Final = 130


async def _run_all(
    ctx: Context, scenarios: Sequence[Scenario]
) -> tuple[list[Row], list[Claim], bool]:
    rows: list[Row] = []
    claims: list[Claim] = []
    all_ran = True
    for scenario in scenarios:
        started = time.perf_counter()
        try:
            outcome = await scenario.run(ctx)
            rows += outcome.rows
            claims += outcome.claims
        except Exception as exc:
            all_ran = False
            say(f"  ERROR: {scenario.name} could not run: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            claims.append(
                Claim(scenario.name, "scenario ran", type(exc).__name__, "no error", None)
            )
        finally:
            ctx.processes.stop_servers()  # whatever the scenario left running
        say(f"  ({scenario.name}: {time.perf_counter() - started:.0f} s)")
    return rows, claims, all_ran


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _setup(options: Options, scenarios: Sequence[Scenario], db: BenchDatabase) -> None:
    heading("setup")
    if options.smoke:
        say("  smoke: figures are not measurements")
    estimate = SETUP_SECONDS + sum(s.seconds(options.smoke) for s in scenarios)
    say(f"  scenarios: {', '.join(s.name for s in scenarios)}; about {_duration(estimate)}")
    say(f"  open files limit: {raise_open_files_limit()}")
    if any(s.needs_wrk for s in scenarios):
        say(f"  wrk: {ensure_wrk()}")
    started = time.perf_counter()
    db.create(DATA_SEED)
    say(
        f"  database {db.name} on {db.addr.host}:{db.addr.port}: {db.acc_rows} acc rows, "
        f"{db.user_rows} user rows ({time.perf_counter() - started:.1f} s)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    pin_self_to_client_cpu()
    try:
        # As the tests do: the server DB_* name (default 127.0.0.1:3306 as root) when it answers,
        # else a private MariaDB for this run (installed first when running as root on Debian).
        with database_server(
            prefer=server_address(), allow_install=can_install_packages()
        ) as address:
            return _run(options, address)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except DevDBError as exc:
        sys.stderr.write(f"bench could not run: no database server: {exc}\n")
        return EXIT_FAILED


def _run(options: Options, address: ServerAddress) -> int:
    scenarios = [s for s in SCENARIOS if s.name in options.scenarios]
    db = BenchDatabase(address, options.acc_rows, options.user_rows)
    status: StatusReader | None = None
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cmapi-bench-") as workdir:
        processes = Processes(Path(workdir))
        try:
            _setup(options, scenarios, db)
            # Opened before any service and closed after the last: it never counts itself.
            status = StatusReader(db.addr)
            header = describe(status.server_version(), wrk_version())
            for name, value in header.items():
                say(f"  {name}: {value}")
            ctx = Context(options.smoke, db, status, processes, Path(workdir))
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                rows, claims, all_ran = runner.run(_run_all(ctx, scenarios))
            print_tables(rows, claims, options.smoke)
            markdown = results.write(options.json, header, options.as_json(), rows, claims)
            say()
            say(f"wrote {options.json} and {markdown} ({_duration(time.perf_counter() - began)})")
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
            if status is not None:
                status.close()
            db.drop()


if __name__ == "__main__":
    sys.exit(main())
