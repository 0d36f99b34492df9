"""The command line: --help lists every setting and never serves, --version, usage errors exit 2
without serving, check-config validates (and with --database reaches the database once), exit
codes 0/1/2, unknown variables warned about without their values."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from devtools.mariadb import ServerAddress
from service import __version__
from service.__main__ import main
from service.settings import VARIABLES, Settings

from .conftest import base_env, free_port

LIMIT = 30.0
# Valid settings: before the command line existed, `cm-api --help` with these set served.
VALID = {"DB_HOST": "db.example", "DB_USER": "dash", "DB_NAME": "ops"}


def never_build(settings: Settings) -> web.Application:
    raise AssertionError("this command line must not serve")


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The console script `cm-api` with `args`, run to completion (it must exit by itself)."""
    script = Path(sys.executable).with_name("cm-api")
    return subprocess.run(
        [str(script), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )


# -- in-process: argv parsing -----------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_setting_with_its_default_and_exits_0(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(VALID, build=never_build, argv=[flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cm-api")
    for var in VARIABLES:
        assert f"  {var.name}  (" in out, var.name
    assert "  DB_PORT  (default 3306; 1-65535)" in out
    assert "  DB_HOST  (required; " in out
    assert "  DB_PASSWORD  (default empty; text, secret)" in out
    assert "check-config" in out
    for code in ("0", "1", "2"):
        assert f"\n  {code}  " in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(VALID, build=never_build, argv=["--version"]) == 0
    assert capsys.readouterr().out == f"cm-api {__version__}\n"


@pytest.mark.parametrize(
    "argv",
    [["--helpp"], ["--port", "80"], ["serve", "--now"], ["start"], ["check-config", "-x"]],
)
def test_a_usage_error_exits_2_without_serving(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(VALID, build=never_build, argv=argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: cm-api")
    assert "cm-api" in err.splitlines()[-1]


def test_called_bare_main_reads_the_process_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["cm-api", "--version"])
    assert main() == 0
    assert capsys.readouterr().out == f"cm-api {__version__}\n"


def test_check_config_valid_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(VALID, build=never_build, argv=["check-config"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "cm-api: configuration is valid\n"
    assert captured.err == ""


def test_check_config_invalid_exits_2_naming_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {**VALID, "DB_PORT": "none"}
    assert main(env, build=never_build, argv=["check-config"]) == 2
    assert capsys.readouterr().err == (
        "cm-api: invalid configuration: DB_PORT: expected an integer from 1 to 65535, got 'none'\n"
    )


def test_check_config_warns_about_unknown_variables_without_their_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {**VALID, "DB_PASSWROD": "typo-S3cret-value", "CACHE_TTL": "9", "HTTP_PROXY": "x"}
    assert main(env, build=never_build, argv=["check-config"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "cm-api: warning: CACHE_TTL is not a cm-api setting and is ignored; "
        "did you mean CACHE_TTL_SECONDS?",
        "cm-api: warning: DB_PASSWROD is not a cm-api setting and is ignored; "
        "did you mean DB_PASSWORD?",
    ]
    assert "typo-S3cret-value" not in err


# -- the real process -------------------------------------------------------------------------


def test_help_never_serves_even_with_a_usable_database(
    db_server: ServerAddress, db_name: str
) -> None:
    env = {**base_env(db_server, db_name), "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(free_port())}
    done = run_cli(["--help"], env)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: cm-api")
    assert '"starting"' not in done.stdout


def test_python_m_service_has_the_same_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "--version"],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, f"cm-api {__version__}\n")


def test_check_config_database_exits_0_when_every_table_is_usable(
    db_server: ServerAddress, db_name: str
) -> None:
    done = run_cli(["check-config", "--database"], base_env(db_server, db_name))
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("cm-api: configuration is valid; MySQL at ")
    assert last.endswith(": tables acc, user ok")


def test_check_config_database_names_a_missing_table(
    db_server: ServerAddress, db_name: str
) -> None:
    env = {**base_env(db_server, db_name), "RESOURCES": "acc,invoices"}
    done = run_cli(["check-config", "--database"], env)
    assert done.returncode == 1
    assert done.stderr.startswith("cm-api: database check failed: table 'invoices' does not exist")


def test_check_config_database_names_a_refused_password_without_showing_it(
    db_server: ServerAddress, db_name: str, password_user: tuple[str, str]
) -> None:
    user, _ = password_user
    wrong = "wrong-S3cret-value"
    env = {**base_env(db_server, db_name), "DB_USER": user, "DB_PASSWORD": wrong}
    done = run_cli(["check-config", "--database"], env)
    assert done.returncode == 1
    assert "cm-api: database check failed: cannot use MySQL at " in done.stderr
    assert "Access denied" in done.stderr
    assert wrong not in done.stdout + done.stderr


def test_check_config_database_tries_once_however_many_retries_serving_has() -> None:
    port = free_port()
    env = {
        **base_env(ServerAddress("127.0.0.1", port, "root"), "x"),
        "DB_CONNECT_RETRIES": "5",
        "DB_CONNECT_RETRY_DELAY": "10",
    }
    started = time.monotonic()
    done = run_cli(["check-config", "--database"], env)
    assert time.monotonic() - started < 10  # no retry delay was waited
    assert done.returncode == 1
    assert f"cannot connect to MySQL at 127.0.0.1:{port}" in done.stderr
    assert "after 1 attempt(s)" in done.stderr


def test_check_config_without_database_does_not_connect() -> None:
    env = base_env(ServerAddress("127.0.0.1", free_port(), "root"), "x")
    done = run_cli(["check-config"], env)
    assert (done.returncode, done.stdout) == (0, "cm-api: configuration is valid\n")
