"""`make run`: the API on http://127.0.0.1:8080/ with demo data, nothing to set up first.

Without DB_HOST in the environment it starts a private MariaDB (devtools.mariadb), loads
config/schema.sql and config/demo-data.sql into database `cmapi` and points the service at it;
the database goes away when the service stops. With DB_HOST set it only runs the service, exactly
as `python -m service` would.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType

import structlog

from devtools.mariadb import DevDBError, PrivateMariaDB, can_install_packages, create_database

log = structlog.get_logger()

_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
_DB_NAME = "cmapi"
_EXIT_INTERRUPTED = 130


def main() -> int:
    # Imported here, not at the top: that module is the production entry point and this one must
    # stay importable (and testable) on its own.
    from service.__main__ import main as serve  # noqa: PLC0415

    # No load balancer to drain in development: Ctrl-C stops at once.
    os.environ.setdefault("SHUTDOWN_DELAY_SECONDS", "0")
    if os.environ.get("DB_HOST"):
        return serve()

    # The service handles SIGTERM itself once it runs; before that (and after it returns) a
    # SIGTERM would end Python without running `finally`, orphaning the private server.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with PrivateMariaDB(allow_install=can_install_packages()) as db:
            addr = db.address
            create_database(
                addr, _DB_NAME, [_CONFIG_DIR / "schema.sql", _CONFIG_DIR / "demo-data.sql"]
            )
            env = dict(os.environ)
            # A mounted-secret setting would compete with the empty password below.
            env.pop("DB_PASSWORD_FILE", None)
            env.update(
                DB_HOST=addr.host,
                DB_PORT=str(addr.port),
                DB_USER=addr.user,
                DB_PASSWORD=addr.password,
                DB_NAME=_DB_NAME,
            )
            env.setdefault("HTTP_HOST", "127.0.0.1")
            env.setdefault("HTTP_PORT", "8080")
            log.info(
                "private MariaDB with demo data is running; it is removed when the API stops",
                database=f"{addr.user}@{addr.host}:{addr.port}/{_DB_NAME}",
                client=f"mariadb -h {addr.host} -P {addr.port} -u {addr.user} {_DB_NAME}",
                api=f"http://{env['HTTP_HOST']}:{env['HTTP_PORT']}/acc/",
            )
            return serve(env)
    except DevDBError as err:
        sys.stderr.write(f"cannot start the development database: {err}\n")
        return 1
    except KeyboardInterrupt:
        return _EXIT_INTERRUPTED


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
