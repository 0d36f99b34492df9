"""TLS to the database (DB_SSL_MODE, DB_SSL_CA, DB_SSL_CERT, DB_SSL_KEY), against real MariaDB
servers started here: one with TLS (certificates made by tests/tls_files.py, performance_schema
on, so the server itself tells which sessions are encrypted), one without, and one whose
certificate names another host. Every mode runs against both drivers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devtools.mariadb import PrivateMariaDB, ServerAddress, connect, create_database
from service.db import Database
from service.drivers import NAMES
from service.errors import StartupError
from service.settings import SettingsError, load_settings
from service.tls import MODES

from .conftest import DEMO_DATA, SCHEMA, base_env, free_port, listening_env, spawn_service
from .tls_files import TlsFiles, make_tls_files

DATABASE = "cmapi_tls"
ENCRYPTING = MODES[1:]  # every mode but disabled


def _server_options(cert: Path, key: Path, ca: Path) -> list[str]:
    return [f"--ssl-ca={ca}", f"--ssl-cert={cert}", f"--ssl-key={key}", "--performance-schema=ON"]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _started(options: list[str]) -> Iterator[ServerAddress]:
    with PrivateMariaDB(options=options) as server:
        create_database(server.address, DATABASE, [SCHEMA, DEMO_DATA])
        yield server.address


@pytest.fixture(scope="module")
def tls_server(tls_files: TlsFiles) -> Iterator[ServerAddress]:
    """Offers TLS with a certificate for 127.0.0.1 and localhost, signed by tls_files.ca."""
    f = tls_files
    yield from _started(_server_options(f.server_cert, f.server_key, f.ca))


@pytest.fixture(scope="module")
def plain_server() -> Iterator[ServerAddress]:
    """Offers no TLS at all."""
    yield from _started(["--skip-ssl", "--performance-schema=ON"])


@pytest.fixture(scope="module")
def elsewhere_server(tls_files: TlsFiles) -> Iterator[ServerAddress]:
    """Offers TLS with a certificate signed by tls_files.ca for db.elsewhere.example only."""
    f = tls_files
    yield from _started(_server_options(f.elsewhere_cert, f.elsewhere_key, f.ca))


def _env(server: ServerAddress, driver: str, **variables: str) -> dict[str, str]:
    return {**base_env(server, DATABASE), "DB_DRIVER": driver, **variables}


def _mode_env(mode: str, files: TlsFiles) -> dict[str, str]:
    env = {"DB_SSL_MODE": mode}
    if mode in ("verify_ca", "verify_identity"):
        env["DB_SSL_CA"] = str(files.ca)
    return env


@contextlib.asynccontextmanager
async def _started_database(env: dict[str, str]) -> AsyncIterator[Database]:
    db = Database(load_settings(env))
    await db.start()
    try:
        yield db
    finally:
        await db.close()


async def _session_cipher(db: Database) -> str:
    """The server's word on the pooled session that runs this: its TLS cipher, "" if none."""
    [(_, cipher)] = await db.fetch("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    return str(cipher)


# -- every mode against a server with TLS and one without -------------------------------------


@pytest.mark.parametrize("driver", NAMES)
@pytest.mark.parametrize("mode", MODES)
async def test_each_mode_against_a_tls_server(
    mode: str, driver: str, tls_server: ServerAddress, tls_files: TlsFiles
) -> None:
    async with _started_database(_env(tls_server, driver, **_mode_env(mode, tls_files))) as db:
        cipher = await _session_cipher(db)
        assert (cipher != "") == (mode != "disabled"), cipher
        if mode == "disabled":
            assert db.health.tls == "none (DB_SSL_MODE=disabled)"
        else:
            assert db.health.tls.startswith("TLSv1.")
            assert db.health.tls.endswith(f" {cipher} (DB_SSL_MODE={mode})")


@pytest.mark.parametrize("driver", NAMES)
@pytest.mark.parametrize("mode", MODES)
async def test_each_mode_against_a_server_without_tls(
    mode: str, driver: str, plain_server: ServerAddress, tls_files: TlsFiles
) -> None:
    env = _env(plain_server, driver, **_mode_env(mode, tls_files))
    if mode in ("disabled", "preferred"):
        async with _started_database(env) as db:
            assert await _session_cipher(db) == ""
            assert db.health.tls.startswith("none (DB_SSL_MODE=")
            assert (mode == "preferred") == db.health.tls.endswith("the server offers no TLS)")
        return
    db = Database(load_settings(env))
    with pytest.raises(StartupError) as failed:
        await db.start()
    host = f"{plain_server.host}:{plain_server.port}"
    assert str(failed.value) == (
        f"cannot use MySQL at {host}, database {DATABASE!r}, user 'root': "
        "TLS: the server offers no TLS, and DB_SSL_MODE requires it"
    )
    await db.close()


async def test_a_requiring_mode_logs_in_nowhere_on_a_server_without_tls(
    plain_server: ServerAddress,
) -> None:
    """Refused before the client's first packet, so before any credentials: with a right
    password the server never sees the account log in (aiomysql alone would go on in clear)."""
    user, password = f"cmapi_p_{uuid.uuid4().hex[:6]}", "plain-Pa55word"
    with connect(plain_server, timeout=10.0) as sql, sql.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        cur.execute(f"GRANT SELECT ON `{DATABASE}`.* TO '{user}'@'%'")
        for driver in NAMES:
            env = _env(plain_server, driver, DB_USER=user, DB_PASSWORD=password)
            db = Database(load_settings({**env, "DB_SSL_MODE": "required"}))
            with pytest.raises(StartupError):
                await db.start()
            await db.close()
        cur.execute("SELECT COUNT(*) FROM performance_schema.users WHERE USER = %s", (user,))
        assert cur.fetchall() == ((0,),)
        # The same account does log in when TLS is not required: the check above can fail.
        preferred = {"DB_USER": user, "DB_PASSWORD": password, "DB_SSL_MODE": "preferred"}
        async with _started_database(_env(plain_server, "aiomysql", **preferred)):
            pass
        cur.execute("SELECT COUNT(*) FROM performance_schema.users WHERE USER = %s", (user,))
        assert cur.fetchall() == ((1,),)


# -- certificates that must be refused, and a server that wants one ----------------------------


def _start_up_failure(env: dict[str, str]) -> str:
    """Run the real service to its exit; return its last stderr line (exit code 1 asserted)."""
    done = subprocess.run(
        [sys.executable, "-m", "service"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    return lines[-1]


@pytest.mark.parametrize("driver", NAMES)
@pytest.mark.parametrize("mode", ["verify_ca", "verify_identity"])
def test_a_certificate_from_another_ca_stops_start_up(
    mode: str, driver: str, tls_server: ServerAddress, tls_files: TlsFiles
) -> None:
    env = _env(
        tls_server, driver, DB_SSL_MODE=mode, DB_SSL_CA=str(tls_files.other_ca),
        DB_CONNECT_RETRIES="5", DB_CONNECT_RETRY_DELAY="10",
    )  # fmt: skip
    line = _start_up_failure(env)  # at once: no retry would change the certificate
    assert line.startswith(
        f"cm-api: start-up failed: cannot use MySQL at {tls_server.host}:{tls_server.port}, "
    )
    assert "TLS: the server's certificate is not trusted by DB_SSL_CA" in line


@pytest.mark.parametrize("driver", NAMES)
def test_a_certificate_for_another_host_stops_start_up_under_verify_identity(
    driver: str, elsewhere_server: ServerAddress, tls_files: TlsFiles
) -> None:
    env = _env(elsewhere_server, driver, DB_SSL_MODE="verify_identity", DB_SSL_CA=str(tls_files.ca))
    line = _start_up_failure(env)
    where = f"{elsewhere_server.host}:{elsewhere_server.port}"
    assert line.startswith(f"cm-api: start-up failed: cannot use MySQL at {where}, ")
    assert "TLS: the server's certificate does not name this host" in line
    assert "127.0.0.1" in line


@pytest.mark.parametrize("driver", NAMES)
async def test_verify_ca_accepts_the_certificate_of_another_host(
    driver: str, elsewhere_server: ServerAddress, tls_files: TlsFiles
) -> None:
    """verify_ca checks the signature, not the name (as MySQL's client)."""
    env = _env(elsewhere_server, driver, DB_SSL_MODE="verify_ca", DB_SSL_CA=str(tls_files.ca))
    async with _started_database(env) as db:
        assert await _session_cipher(db) != ""


@pytest.fixture(scope="module")
def x509_user(tls_server: ServerAddress) -> tuple[str, str]:
    """An account that MariaDB lets in only with a client certificate signed by its CA."""
    user, password = "cmapi_x509", "x509-Pa55word"
    with connect(tls_server, timeout=10.0) as sql, sql.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}' REQUIRE X509")
        cur.execute(f"GRANT SELECT ON `{DATABASE}`.* TO '{user}'@'%'")
    return user, password


@pytest.mark.parametrize("driver", NAMES)
def test_a_server_requiring_a_client_certificate_refuses_the_service_without_one(
    driver: str, tls_server: ServerAddress, tls_files: TlsFiles, x509_user: tuple[str, str]
) -> None:
    user, password = x509_user
    env = _env(
        tls_server, driver, DB_USER=user, DB_PASSWORD=password,
        DB_SSL_MODE="verify_identity", DB_SSL_CA=str(tls_files.ca),
    )  # fmt: skip
    line = _start_up_failure(env)
    assert line.startswith("cm-api: start-up failed: cannot use MySQL at ")
    assert "Access denied" in line


@pytest.mark.parametrize("driver", NAMES)
@pytest.mark.parametrize("combined", [False, True], ids=["key-file", "key-in-cert-file"])
async def test_a_client_certificate_logs_in_where_x509_is_required(
    driver: str,
    combined: bool,
    tls_server: ServerAddress,
    tls_files: TlsFiles,
    x509_user: tuple[str, str],
) -> None:
    user, password = x509_user
    files = (
        {"DB_SSL_CERT": str(tls_files.client_combined)}
        if combined
        else {"DB_SSL_CERT": str(tls_files.client_cert), "DB_SSL_KEY": str(tls_files.client_key)}
    )
    env = _env(
        tls_server, driver, DB_USER=user, DB_PASSWORD=password,
        DB_SSL_MODE="verify_identity", DB_SSL_CA=str(tls_files.ca), **files,
    )  # fmt: skip
    async with _started_database(env) as db:
        assert await _session_cipher(db) != ""
        assert await db.fetch("SELECT id FROM acc ORDER BY id LIMIT 1")


# -- what the service says, and what the server says of the service's sessions ----------------


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


@pytest.fixture(scope="module")
def service_user(tls_server: ServerAddress) -> tuple[str, str]:
    """The service's own account, so that its sessions are told apart in performance_schema."""
    user, password = f"cmapi_s_{uuid.uuid4().hex[:6]}", "service-Pa55word"
    with connect(tls_server, timeout=10.0) as sql, sql.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        cur.execute(f"GRANT SELECT ON `{DATABASE}`.* TO '{user}'@'%'")
    return user, password


def _ciphers_of(server: ServerAddress, user: str) -> dict[int, str]:
    """performance_schema's Ssl_cipher of each session of `user`, by connection id."""
    with connect(server, timeout=10.0) as sql, sql.cursor() as cur:
        cur.execute(
            "SELECT t.PROCESSLIST_ID, s.VARIABLE_VALUE FROM performance_schema.threads t"
            " JOIN performance_schema.status_by_thread s USING (THREAD_ID)"
            " WHERE t.PROCESSLIST_USER = %s AND s.VARIABLE_NAME = 'Ssl_cipher'",
            (user,),
        )
        return {int(thread): str(cipher) for thread, cipher in cur.fetchall()}


@pytest.mark.parametrize("driver", NAMES)
def test_every_pooled_connection_is_encrypted_and_the_service_says_so(
    driver: str,
    tls_server: ServerAddress,
    tls_files: TlsFiles,
    service_user: tuple[str, str],
) -> None:
    user, _ = service_user
    port = free_port()
    env = {
        **listening_env(tls_server, DATABASE, service_user, port),
        "DB_DRIVER": driver,
        "DB_POOL_SIZE": "4",
        "DB_POOL_MIN_SIZE": "4",
        "DB_SSL_MODE": "verify_identity",
        "DB_SSL_CA": str(tls_files.ca),
        "DB_SSL_CERT": str(tls_files.client_cert),
        "DB_SSL_KEY": str(tls_files.client_key),
    }
    process = spawn_service(env)
    try:
        _wait_until_serving(port, process)
        assert json.loads(_get(port, "/acc/"))
        ciphers = _ciphers_of(tls_server, user)
        # The server's own view of every session the service holds.
        assert len(ciphers) == 4, ciphers
        assert all(cipher for cipher in ciphers.values()), ciphers
        cipher = next(iter(ciphers.values()))

        readiness = json.loads(_get(port, "/readyz?verbose"))
        [database] = [c for c in readiness["checks"] if c["name"] == "database"]
        assert f"TLS: TLSv1.3 {cipher} (DB_SSL_MODE=verify_identity)" in database["message"]
        metrics = _get(port, "/metrics")
        assert 'cmapi_db_connections_tls_total{version="TLSv1.3"} 4.0' in metrics
        assert 'cmapi_db_connections_tls_total{version="none"}' not in metrics
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    [told] = [line for line in lines if line["event"] == "database_tls"]
    assert told["tls"] == f"TLSv1.3 {cipher} (DB_SSL_MODE=verify_identity)"
    assert told["level"] == "info"
    # The key file is a secret: not its path, not its content, anywhere.
    key_text = tls_files.client_key.read_text()
    for text in (out, err):
        assert str(tls_files.client_key) not in text
        assert key_text.strip().splitlines()[1] not in text


def _wait_until_serving(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            _get(port, "/readyz")
        except OSError:
            time.sleep(0.05)
        else:
            return
    raise AssertionError("the service did not serve within 30 s")


# -- settings ---------------------------------------------------------------------------------

REQUIRED = {"DB_HOST": "db.example", "DB_USER": "dash", "DB_NAME": "ops"}


@pytest.mark.parametrize(
    ("written", "mode"),
    [("DISABLED", "disabled"), ("Preferred", "preferred"), ("verify-ca", "verify_ca"),
     ("VERIFY_IDENTITY", "verify_identity"), ("Verify-Identity", "verify_identity")],
)  # fmt: skip
def test_modes_are_read_in_any_case_with_dash_or_underscore(
    written: str, mode: str, tls_files: TlsFiles
) -> None:
    s = load_settings({**REQUIRED, **_mode_env(mode, tls_files), "DB_SSL_MODE": written})
    assert s.db_ssl_mode == mode == s.tls().mode


def test_a_ca_without_a_mode_means_verify_ca_as_for_mysqls_client(tls_files: TlsFiles) -> None:
    s = load_settings({**REQUIRED, "DB_SSL_CA": str(tls_files.ca)})
    assert s.db_ssl_mode == "verify_ca"
    assert load_settings(REQUIRED).db_ssl_mode == "preferred"


@pytest.mark.parametrize(
    ("env", "variable", "words"),
    [
        ({"DB_SSL_MODE": "verify_identity"}, "DB_SSL_CA", "is required with DB_SSL_MODE"),
        ({"DB_SSL_MODE": "required", "DB_SSL_CA": "{ca}"}, "DB_SSL_CA", "checks no certificate"),
        ({"DB_SSL_MODE": "disabled", "DB_SSL_CERT": "{cert}"}, "DB_SSL_CERT", "uses no TLS"),
        ({"DB_SSL_KEY": "{key}"}, "DB_SSL_KEY", "needs DB_SSL_CERT"),
        ({"DB_SSL_CA": "{missing}"}, "DB_SSL_CA", "no such file"),
        ({"DB_SSL_CA": "{key}"}, "DB_SSL_CA", "cannot use"),  # a key is no CA certificate
        ({"DB_SSL_CERT": "{cert}"}, "DB_SSL_CERT", "no private key in it"),
        ({"DB_SSL_CERT": "{cert}", "DB_SSL_KEY": "{wrong_key}"}, "DB_SSL_KEY", "MISMATCH"),
        ({"DB_SSL_CERT": "{key}", "DB_SSL_KEY": "{key}"}, "DB_SSL_CERT", "cannot use"),
    ],
)
def test_tls_settings_that_cannot_work_name_their_variable(
    env: dict[str, str], variable: str, words: str, tls_files: TlsFiles, tmp_path: Path
) -> None:
    paths = {
        "ca": tls_files.ca,
        "cert": tls_files.client_cert,
        "key": tls_files.client_key,
        "wrong_key": tls_files.server_key,
        "missing": tmp_path / "absent.pem",
    }
    given = {name: value.format(**paths) for name, value in env.items()}
    with pytest.raises(SettingsError) as failed:
        load_settings({**REQUIRED, **given})
    assert failed.value.variable == variable
    assert words in str(failed.value)
    key_text = tls_files.client_key.read_text() + tls_files.server_key.read_text()
    for line in key_text.splitlines()[1:-1]:
        assert line not in str(failed.value)


def test_the_key_file_is_a_secret_in_the_start_up_log(tls_files: TlsFiles) -> None:
    s = load_settings(
        {**REQUIRED, "DB_SSL_CERT": str(tls_files.client_cert),
         "DB_SSL_KEY": str(tls_files.client_key)}
    )  # fmt: skip
    assert s.public()["db_ssl_key"] == "<redacted>"
    assert str(tls_files.client_key) not in repr(s)
