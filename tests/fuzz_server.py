"""The service for .ci/fuzz: a database of its own with the demo rows, `python -m service` on a
free port of 127.0.0.1, and everything removed again when this process is told to stop.

    python -m tests.fuzz_server --url-file FILE --log FILE

The database server is the tests' (tests/conftest.py: DB_HOST/DB_PORT/DB_USER/DB_PASSWORD, else
127.0.0.1:3306 as root, else a private MariaDB). Once /readyz answers 200 the base URL is written
to the --url-file; the process then holds everything until SIGTERM or SIGINT, or exits 1 should
the service die first. Either way the service is stopped and the database dropped (and a private
MariaDB stopped) before it exits: the caller's trap only has to signal it and wait.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import FrameType

from devtools.mariadb import ServerAddress, can_install_packages, create_database, database_server
from devtools.mariadb import drop_database as drop
from tests.conftest import DEMO_DATA, SCHEMA, _preferred_server, base_env, free_port

READY_WITHIN = 60.0
STOP_WITHIN = 15.0


class Stop(Exception):
    """SIGTERM or SIGINT: leave through the `finally` blocks that clean up."""


def _stop(signum: int, frame: FrameType | None) -> None:
    # Once: a second signal must not cut short the clean-up the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Stop(signal.Signals(signum).name)


def _start_service(
    address: ServerAddress, database: str, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        **base_env(address, database),
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
        # Warnings and errors only: a fuzz run makes thousands of requests.
        "LOG_LEVEL": "warning",
        "SHUTDOWN_DELAY_SECONDS": "0",
        "SHUTDOWN_GRACE_SECONDS": "5",
        # The document cannot state the parser's MAX_URL_BYTES (16 KiB; beyond it aiohttp
        # answers a text/plain 400 of its own): 100 values per filter (the default) of up to
        # 64 four-byte characters each make schema-valid requests longer than that.
        "FILTER_MAX_VALUES": "10",
        # Generated `If-None-Match: *` with `Prefer: wait=N` is a valid long-poll: held until
        # the data changes, which here it never does. One second keeps the run short.
        "LONG_POLL_MAX_SECONDS": "1",
    }
    env.pop("DB_PASSWORD_FILE", None)  # would compete with base_env's DB_PASSWORD
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    return process, f"http://127.0.0.1:{port}"


def _wait_ready(process: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"fuzz_server: the service exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"fuzz_server: {base}/readyz did not answer 200 within {READY_WITHIN:g} s")


def _stop_service(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_WITHIN)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url-file", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True, help="the service's output")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        with database_server(
            prefer=_preferred_server(), allow_install=can_install_packages()
        ) as address:
            database = f"cmapi_fuzz_{uuid.uuid4().hex[:12]}"
            create_database(address, database, [SCHEMA, DEMO_DATA])
            try:
                process, base = _start_service(address, database, args.log)
                try:
                    _wait_ready(process, base)
                    partial = args.url_file.with_suffix(".partial")
                    partial.write_text(base)
                    partial.replace(args.url_file)  # the caller never reads half a URL
                    process.wait()
                    sys.stderr.write(f"fuzz_server: the service exited with {process.returncode}\n")
                    return 1
                finally:
                    _stop_service(process)
            finally:
                drop(address, database)
    except Stop:
        return 0


if __name__ == "__main__":
    sys.exit(main())
