"""A private, throw-away MariaDB server for development, tests and benchmarks.

`make run`, the test suite and the benchmarks need a real server with known credentials. Starting
one of our own keeps them independent of whatever database the machine runs, of its
configuration files and of its data: the server lives in a temporary directory, listens on a free
port of 127.0.0.1 only, and disappears with that directory when it is stopped.

MariaDB only: `mariadb-install-db` (or its old name `mysql_install_db`) prepares the data
directory, and Oracle MySQL 8 no longer ships that script.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pymysql
import structlog
from pymysql.constants import CLIENT

log = structlog.get_logger()

_SERVER_NAMES = ("mariadbd", "mysqld")
_INSTALL_DB_NAMES = ("mariadb-install-db", "mysql_install_db")
# Server packages put mariadbd in sbin, which is often missing from an ordinary user's PATH.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/mysql/bin")

_HOST = "127.0.0.1"
_USER = "root"
_DB_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")

# A unix socket path may hold at most 107 bytes; "<root>/cmapi-db-xxxxxxxx/mysqld.sock" must fit.
_MAX_TEMP_ROOT_LEN = 60
_STOP_TIMEOUT = 20.0
_LOG_TAIL_LINES = 20
_POLL_INTERVAL = 0.05

# Both mariadb-install-db and mariadbd get these, so the data directory is created as it is run.
# Small buffers keep start-up quick and still hold the dev and test data many times over; utf8mb4
# so a database created without a character set holds any text (MariaDB's default is latin1).
_SERVER_OPTIONS = (
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=8M",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
    "--skip-name-resolve",
)


@dataclass(frozen=True)
class ServerAddress:
    """Where a MySQL/MariaDB server listens and whom to log in as."""

    host: str
    port: int
    user: str
    password: str = field(default="", repr=False)


class DevDBError(Exception):
    """The development database could not be found, started or loaded.

    The message's first line says what went wrong in plain words; start-up failures append the
    last lines of the server's log after it.
    """


def can_install_packages() -> bool:
    """True when this process could install mariadb-server itself (root on a Debian-like OS)."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def find_server_binaries(*, allow_install: bool) -> tuple[Path, Path]:
    """(mariadbd-or-mysqld, mariadb-install-db-or-mysql_install_db).

    Looks in PATH, then /usr/sbin, /usr/bin, /usr/local/bin and /usr/local/mysql/bin. When one is
    missing, `allow_install` is true and `can_install_packages()`, installs mariadb-server with
    apt-get and looks again; otherwise raises DevDBError saying what to install.
    """
    server, install_db = _which(_SERVER_NAMES), _which(_INSTALL_DB_NAMES)
    if (server is None or install_db is None) and allow_install and can_install_packages():
        _apt_install_mariadb_server()
        server, install_db = _which(_SERVER_NAMES), _which(_INSTALL_DB_NAMES)
    if server is None or install_db is None:
        missing = " and ".join(
            "/".join(names)
            for names, found in ((_SERVER_NAMES, server), (_INSTALL_DB_NAMES, install_db))
            if found is None
        )
        raise DevDBError(
            f"no {missing} found in PATH or {', '.join(_EXTRA_BIN_DIRS)}: install the MariaDB "
            "server (Debian/Ubuntu: apt-get install mariadb-server; macOS: brew install mariadb) "
            "or point the tools at a running server"
        )
    return server, install_db


def is_reachable(addr: ServerAddress, timeout: float = 2.0) -> bool:
    """True when a PyMySQL connection with these credentials succeeds."""
    try:
        conn = connect(addr, timeout=timeout)
    except (pymysql.MySQLError, OSError):
        return False
    conn.close()
    return True


class PrivateMariaDB:
    """A MariaDB server of our own, in a temporary directory, on a free port of 127.0.0.1.

    Use it as a context manager (`with PrivateMariaDB() as db: db.address`) or call start() and
    stop(). root logs in over TCP with an empty password; authentication is real, so a wrong
    password is refused.

    The server runs in its own session: a Ctrl-C in the terminal reaches only our process, whose
    `finally`/`__exit__` then stops the server.

    stop_server() and start_server() stop and restart the server on the same port and data
    directory, for fault tests that take the database away under a running service.

    `options` are more mariadbd options (`--ssl-cert=...`, `--default-time-zone=+05:00`).
    """

    def __init__(
        self,
        *,
        allow_install: bool = False,
        startup_timeout: float = 60.0,
        options: Sequence[str] = (),
    ) -> None:
        self._allow_install = allow_install
        self._startup_timeout = startup_timeout
        self._options = tuple(options)
        self._server_binary: Path | None = None
        self._workdir: Path | None = None
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> ServerAddress:
        """The server's address; stays valid while stopped by stop_server(), until stop()."""
        if self._workdir is None or self._port is None:
            raise DevDBError("the private MariaDB server has not been started")
        return ServerAddress(host=_HOST, port=self._port, user=_USER)

    def start(self) -> ServerAddress:
        """Create a fresh data directory, start the server and wait until it accepts logins."""
        if self._workdir is not None:
            raise DevDBError("this private MariaDB server has already been started")
        began = time.monotonic()
        server_binary, install_db = find_server_binaries(allow_install=self._allow_install)
        self._server_binary = server_binary
        self._workdir = Path(tempfile.mkdtemp(prefix="cmapi-db-", dir=_short_temp_root()))
        try:
            self._initialise_datadir(install_db)
            self._port = _free_port()
            self.start_server()
        except BaseException:
            # Also on KeyboardInterrupt: a half-started server must not outlive us.
            self.stop()
            raise
        log.info(
            "private MariaDB started",
            host=_HOST,
            port=self._port,
            workdir=str(self._workdir),
            seconds=round(time.monotonic() - began, 2),
        )
        return self.address

    def stop(self) -> None:
        """Stop the server and delete its data directory. Safe to call more than once."""
        try:
            self.stop_server()
        finally:
            workdir, self._workdir, self._port = self._workdir, None, None
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
                log.info("private MariaDB removed", workdir=str(workdir))

    def start_server(self) -> None:
        """(Re)start the server process on the same port and data directory."""
        if self._workdir is None or self._port is None or self._server_binary is None:
            raise DevDBError("the private MariaDB server has not been started")
        if self._process is not None and self._process.poll() is None:
            return
        workdir = self._workdir
        command = [
            str(self._server_binary),
            "--no-defaults",  # must come first; keeps the machine's /etc/mysql out of it
            *_as_root_if_root(),
            f"--datadir={workdir / 'data'}",
            # Without our own socket and pid file the server would use the machine's defaults,
            # which the machine's own server already holds.
            f"--socket={workdir / 'mysqld.sock'}",
            f"--pid-file={workdir / 'mysqld.pid'}",
            f"--port={self._port}",
            f"--bind-address={_HOST}",
            *_SERVER_OPTIONS,
            *self._options,
        ]
        self._process = _spawn(command, workdir / "mariadbd.log", append=True)
        try:
            self._wait_until_ready(self._process)
        except BaseException:
            self.stop_server()
            raise

    def stop_server(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after _STOP_TIMEOUT); its data directory stays."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.poll() is None:
                process.terminate()
                # A fault test may have frozen the server with SIGSTOP; it cannot shut down
                # until it runs again.
                process.send_signal(signal.SIGCONT)
                process.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("mariadbd ignored SIGTERM; killing it", pid=process.pid)
        finally:
            # Reached with the server still running on a timeout or a second Ctrl-C while
            # waiting: an orphaned server would hold its port and directory forever.
            if process.poll() is None:
                process.kill()
                process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _initialise_datadir(self, install_db: Path) -> None:
        assert self._workdir is not None
        install_log = self._workdir / "install-db.log"
        command = [
            str(install_db),
            "--no-defaults",
            *_as_root_if_root(),
            f"--datadir={self._workdir / 'data'}",
            # Since MariaDB 10.4 root@localhost defaults to unix_socket authentication, which only
            # the OS user root passes. "normal" gives root@localhost, root@127.0.0.1 and root@::1
            # an empty password with ordinary password checking.
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *_SERVER_OPTIONS,
        ]
        process = _spawn(command, install_log, append=False)
        try:
            code = process.wait(timeout=self._startup_timeout)
        except BaseException as err:
            # The script runs mariadbd in bootstrap mode as its child: killing only the script
            # would leave that server running.
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            if isinstance(err, subprocess.TimeoutExpired):
                raise DevDBError(
                    f"{install_db.name} did not finish within {self._startup_timeout:g} s"
                    + _log_tail(install_log)
                ) from None
            raise
        if code != 0:
            raise DevDBError(
                f"{install_db.name} failed with exit code {code}" + _log_tail(install_log)
            )

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> None:
        assert self._workdir is not None
        server_log = self._workdir / "mariadbd.log"
        deadline = time.monotonic() + self._startup_timeout
        while True:
            code = process.poll()
            if code is not None:
                raise DevDBError(
                    f"mariadbd exited with code {code} while starting" + _log_tail(server_log)
                )
            if is_reachable(self.address, timeout=1.0):
                return
            if time.monotonic() >= deadline:
                raise DevDBError(
                    f"mariadbd did not accept connections within {self._startup_timeout:g} s"
                    + _log_tail(server_log)
                )
            time.sleep(_POLL_INTERVAL)


def create_database(addr: ServerAddress, name: str, sql_files: Sequence[Path] = ()) -> None:
    """CREATE DATABASE `name` (utf8mb4) and run each SQL script in it, in order.

    The scripts are plain `;`-separated statements with `--` comments (no client commands such as
    DELIMITER). The server splits them, so a `;` inside a string or comment is harmless.
    """
    _check_database_name(name)
    conn = _connect_or_fail(addr, multi_statements=True)
    try:
        with conn.cursor() as cursor:
            _execute(cursor, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4", what=name)
            conn.select_db(name)
            for path in sql_files:
                try:
                    script = path.read_text(encoding="utf-8")
                except OSError as err:
                    raise DevDBError(f"cannot read {path}: {err.strerror}") from err
                if script.strip():
                    _execute(cursor, script, what=str(path))
    finally:
        conn.close()


def drop_database(addr: ServerAddress, name: str) -> None:
    """DROP DATABASE IF EXISTS `name`."""
    _check_database_name(name)
    conn = _connect_or_fail(addr)
    try:
        with conn.cursor() as cursor:
            _execute(cursor, f"DROP DATABASE IF EXISTS `{name}`", what=name)
    finally:
        conn.close()


@contextmanager
def database_server(
    *, prefer: ServerAddress | None, allow_install: bool
) -> Iterator[ServerAddress]:
    """Yield `prefer` when it is given and reachable, else a PrivateMariaDB for the block."""
    if prefer is None:
        reason = "no server was given"
    elif is_reachable(prefer):
        log.info("using the given database server", host=prefer.host, port=prefer.port)
        yield prefer
        return
    else:
        reason = f"{prefer.user}@{prefer.host}:{prefer.port} is not reachable"
    log.info("starting a private MariaDB server", reason=reason)
    with PrivateMariaDB(allow_install=allow_install) as db:
        yield db.address


def _which(names: Sequence[str]) -> Path | None:
    search_path = os.pathsep.join([os.environ.get("PATH", os.defpath), *_EXTRA_BIN_DIRS])
    for name in names:
        found = shutil.which(name, path=search_path)
        if found is not None:
            return Path(found)
    return None


def _apt_install_mariadb_server() -> None:
    apt_get = shutil.which("apt-get")
    assert apt_get is not None
    log.info("installing mariadb-server with apt-get; this can take a minute")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        [apt_get, "update"],
        [apt_get, "install", "-y", "--no-install-recommends", "mariadb-server"],
    ):
        result = subprocess.run(  # noqa: S603 - fixed argument list, no shell
            command, env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip().splitlines()
            detail = f": {output[-1]}" if output else ""
            raise DevDBError(
                f"`apt-get {command[1]}` failed with exit code {result.returncode}{detail}"
            )


def _as_root_if_root() -> list[str]:
    # mariadbd refuses to run as root unless told to, and --user is ignored for other users.
    return ["--user=root"] if os.geteuid() == 0 else []


def _short_temp_root() -> str | None:
    # macOS's TMPDIR (/var/folders/...) is long enough to push the socket path past its limit.
    # /tmp is safe here: mkdtemp creates a fresh directory only we can enter.
    if len(tempfile.gettempdir()) <= _MAX_TEMP_ROOT_LEN:
        return None
    return "/tmp"  # noqa: S108


def _spawn(command: list[str], log_path: Path, *, append: bool) -> subprocess.Popen[bytes]:
    """Start a server-side program with its output in `log_path`, in its own session so a
    Ctrl-C in the terminal reaches only our process (which then stops it in order)."""
    with log_path.open("ab" if append else "wb") as log_file:
        return subprocess.Popen(  # noqa: S603 - our own argument list, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _free_port() -> int:
    # The kernel picks a port that is free now; the server binds it a moment later. Another
    # process could take it in between, which start-up then reports with the server's log.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    tail = lines[-_LOG_TAIL_LINES:]
    return "".join(f"\n    {line}" for line in tail) if tail else ""


def _check_database_name(name: str) -> None:
    if not _DB_NAME.fullmatch(name):
        raise DevDBError(f"invalid database name {name!r}: use 1 to 64 of A-Z, a-z, 0-9 and _")


def connect(
    addr: ServerAddress,
    *,
    timeout: float,
    database: str | None = None,
    query_timeout: float | None = None,
    multi_statements: bool = False,
    local_infile: bool = False,
) -> pymysql.Connection[Any]:
    # read/write time-outs too: a server frozen by SIGSTOP accepts the TCP connection in the
    # kernel but never sends its greeting.
    io_timeout = timeout if query_timeout is None else query_timeout
    return pymysql.connect(
        host=addr.host,
        port=addr.port,
        user=addr.user,
        password=addr.password,
        database=database,
        charset="utf8mb4",
        connect_timeout=timeout,
        read_timeout=io_timeout,
        write_timeout=io_timeout,
        client_flag=CLIENT.MULTI_STATEMENTS if multi_statements else 0,
        autocommit=True,
        local_infile=local_infile,
    )


def _connect_or_fail(
    addr: ServerAddress, *, multi_statements: bool = False
) -> pymysql.Connection[Any]:
    try:
        # Loading a benchmark's data set can keep one statement busy for minutes.
        return connect(addr, timeout=30.0, query_timeout=3600.0, multi_statements=multi_statements)
    except (pymysql.MySQLError, OSError) as err:
        raise DevDBError(
            f"cannot log in to {addr.user}@{addr.host}:{addr.port}: {_describe(err)}"
        ) from err


def _execute(cursor: pymysql.cursors.Cursor, sql: str, *, what: str) -> None:
    try:
        cursor.execute(sql)
        # With several statements the server reports each one's outcome in turn; an error in a
        # later statement only surfaces while reading its result.
        while cursor.nextset():
            pass
    except pymysql.MySQLError as err:
        raise DevDBError(f"{what}: {_describe(err)}") from err


def _describe(err: Exception) -> str:
    if isinstance(err, pymysql.MySQLError) and len(err.args) == 2:
        code, message = err.args
        return f"{message} (error {code})"
    return str(err)
