"""The command line: `cm-api [serve]`, `cm-api check-config [--database]`, `--help` (every
setting with its default, from the declarations in settings.py) and `--version`. Settings come
from the environment only; the command line chooses what to do with them."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import structlog

from . import __version__
from .app import open_database
from .errors import StartupError
from .logs import configure_logging
from .settings import VARIABLES, Settings, Variable, unknown_variables

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # the database check or start-up failed
EXIT_USAGE: Final = 2  # invalid configuration or command line

SERVE: Final = "serve"
CHECK_CONFIG: Final = "check-config"

EXIT_CODES: Final = f"""\
exit status:
  {EXIT_OK}  served until SIGTERM/SIGINT and drained; check-config: the configuration is valid
  {EXIT_FAILED}  start-up failed (database unreachable, access denied, a table missing ...), or
     check-config --database found such a problem
  {EXIT_USAGE}  invalid configuration (the message names the variable) or command line"""


@dataclass(frozen=True)
class Command:
    name: str  # SERVE or CHECK_CONFIG
    database: bool = False  # check-config --database


def parse_command(argv: Sequence[str]) -> Command | int:
    """The command `argv` asks for, or the exit code when argparse has answered by itself:
    `--help` and `--version` (0), a usage error (2, with the usage on stderr)."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return Command(args.command or SERVE, database=getattr(args, "database", False))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cm-api",
        description="The operations dashboard's JSON API, served from MySQL/MariaDB.\n"
        "Every setting comes from the environment (listed below); with no command, cm-api "
        "serves.",
        epilog=f"{settings_help()}\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cm-api {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands")
    commands.add_parser(SERVE, help="serve HTTP until SIGTERM/SIGINT (the default)")
    check = commands.add_parser(
        CHECK_CONFIG,
        help="validate the environment's settings without serving",
        description="Validate the settings in the environment, then exit: 0 when valid, 2 "
        "naming the first invalid variable.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "--database",
        action="store_true",
        help="also connect once (no retries) and verify every exposed table as start-up "
        "does; exit 1 naming the problem",
    )
    return parser


def settings_help() -> str:
    """Every variable with its default, what it accepts and its meaning."""
    lines = ["settings (environment variables; a blank value takes the default):"]
    for var in VARIABLES:
        lines.append(f"  {var.name}  ({_default(var)}; {_accepts(var)})")
        lines.extend(
            textwrap.wrap(var.meaning, 79, initial_indent=" " * 6, subsequent_indent=" " * 6)
        )
    return "\n".join(lines)


def _default(var: Variable) -> str:
    if var.default is None:
        return "required"
    return f"default {var.default}" if var.default else "default empty"


def _accepts(var: Variable) -> str:
    return f"{var.accepts}, secret" if var.secret else var.accepts


def unknown_variable_warnings(env: Mapping[str, str]) -> list[str]:
    """One sentence per variable named like a setting that is none; never its value, which
    may be a password."""
    return [
        f"{name} is not a cm-api setting and is ignored"
        + (f"; did you mean {closest}?" if closest else "")
        for name, closest in unknown_variables(env)
    ]


def log_unknown_variables(env: Mapping[str, str]) -> None:
    log = structlog.get_logger("service")
    for name, closest in unknown_variables(env):
        log.warning("unknown_setting", variable=name, did_you_mean=closest)


def check_config(settings: Settings, env: Mapping[str, str], *, database: bool) -> int:
    """`cm-api check-config`: the settings are valid by now; with `database`, reach it too."""
    for warning in unknown_variable_warnings(env):
        sys.stderr.write(f"cm-api: warning: {warning}\n")
    if not database:
        sys.stdout.write("cm-api: configuration is valid\n")
        return EXIT_OK
    configure_logging(settings.log_level, settings.log_format)
    try:
        where, tables = asyncio.run(_verify_database(settings))
    except StartupError as exc:
        sys.stderr.write(f"cm-api: database check failed: {exc}\n")
        return EXIT_FAILED
    sys.stdout.write(f"cm-api: configuration is valid; {where}: tables {', '.join(tables)} ok\n")
    return EXIT_OK


async def _verify_database(settings: Settings) -> tuple[str, tuple[str, ...]]:
    """Connect and verify the schema as start-up does, but once: a check answers now rather
    than wait through the start-up retries, and needs one connection."""
    once = dataclasses.replace(settings, db_connect_retries=0, db_pool_min_size=1)
    db, catalog = await open_database(once)
    await db.close()
    return db.where, tuple(catalog.resources)
