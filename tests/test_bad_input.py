"""Hostile and malformed requests against the real process (`python -m service`), sent over raw
sockets so that nothing on the way normalises them (aiohttp's client would quote, re-encode or
refuse most of them).

Every one gets a clear 4xx or a correct 200/304 within ANSWER_WITHIN seconds: never a 5xx,
never a hang. Answers come from three places:

- our handlers and routes: the JSON envelope {"error": {"code", "message"}} (400 bad_request,
  404 not_found, 405 method_not_allowed with `Allow: GET,HEAD`), or the data;
- aiohttp's protocol parser, before any code of ours: 400 text/plain, connection closed. That
  is what these get (aiohttp sends 400 for all of them, never 413, 414 or 431):
  * a raw space, tab, NUL, non-ASCII byte or UTF-8 sequence in the request target;
  * a method token llhttp does not know (FROBNICATE, BREW, X-CUSTOM) or in lower case (get);
  * a request target longer than access.MAX_URL_BYTES;
  * a header longer than access.MAX_HEADER_BYTES (name and value), more than
    access.MAX_HEADERS headers, NUL or DEL in a header value;
  * Content-Length twice or with Transfer-Encoding, Host twice;
  (those currently lose their access line: see test_a_request_the_parser_refused_...);
- aiohttp's router, for a request target that is not a path (CONNECT host:port, and for now
  OPTIONS *): 404 text/plain. That one is a gap of ours, not the parser's (test_connect_...).

"No database work" is measured twice, both immune to other tests using the same MariaDB
server at the same time (global counters such as Com_select are not; USER_STATISTICS needs
`userstat`, off by default and a global switch a test should not flip):
- on the server: the process connects as a user of its own, and MariaDB's PROCESSLIST shows
  the QUERY_ID of the last command of each of its connections. Any statement (or ping) on
  any of them, or a new connection, changes that set;
- in the process: cmapi_db_query_seconds_count plus cmapi_db_query_errors_total from /metrics
  count the statements it ran, exactly. With CACHE_TTL_SECONDS=0 every accepted read costs
  exactly one statement, so "1" means one bound SELECT and nothing else.
Values that reach the database are checked to have been bound, not spliced into SQL: a key
that looks like SQL finds exactly the row whose key is that text (or none), never every row.
The process's account may write and drop tables, so only binding protects them.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from devtools.mariadb import ServerAddress
from service.access import MAX_HEADER_BYTES, MAX_HEADERS, MAX_URL_BYTES
from service.responses import accepts_gzip

from .conftest import SQL, free_port, listening_env, spawn_service, wait_until

ANSWER_WITHIN = 10.0  # seconds; any answer here takes milliseconds, so more is a hang
TABLE = "bad_input_keys"
# Text keys that look like SQL or like escapes, served as /bad_input_keys/<key>.
KEYS = ("%FF%FE", "' OR ''='", "1 OR 1=1", "a", "b")
# Long enough for the list to get a gzip copy (cache.GZIP_MIN_BYTES).
NOTE = "x" * 400
ACC_ROWS = 5
# aiohttp's own parser limits, which ours must differ from for the tests to show ours apply.
AIOHTTP_MAX_LINE = 8190
AIOHTTP_MAX_HEADERS = 128


# -- a raw HTTP/1.1 client ------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").partition(";")[0].strip()

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    target: str | bytes,
    method: str | bytes = "GET",
    headers: Iterable[tuple[str | bytes, str | bytes]] = (),
) -> bytes:
    """One request, exactly as given (str parts must be ASCII), closing the connection."""

    def raw(value: str | bytes) -> bytes:
        return value if isinstance(value, bytes) else value.encode("ascii")

    lines = [raw(method) + b" " + raw(target) + b" HTTP/1.1", b"Host: test", b"Connection: close"]
    lines += [raw(name) + b": " + raw(value) for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def exchange(port: int, request: bytes) -> Reply:
    """Send `request` on a new connection and read the answer up to the server's close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(ANSWER_WITHIN):
            writer.write(request)
            await writer.drain()
            data = await reader.read()
    except TimeoutError:
        raise AssertionError(f"no answer within {ANSWER_WITHIN:g} s: {request[:200]!r}") from None
    finally:
        writer.close()
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, f"not an HTTP answer: {data[:200]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(":")
        headers.add(name, value.strip())
    if "Content-Length" in headers:
        assert len(body) == int(headers["Content-Length"]), "answer cut short"
    return Reply(int(status_line.split(" ")[1]), headers, body)


# -- the process under test -------------------------------------------------------------------


@dataclass
class Served:
    port: int
    user: str
    sql: SQL
    lines: list[str]  # its stdout, line by line, as it comes
    password: str  # its database password: no answer may contain it

    async def get(
        self,
        target: str | bytes,
        method: str | bytes = "GET",
        headers: Iterable[tuple[str | bytes, str | bytes]] = (),
    ) -> Reply:
        reply = await exchange(self.port, http_request(target, method, headers))
        assert reply.status < 500, (target, reply.status, reply.body[:300])
        assert self.password.encode() not in reply.body
        assert not [v for v in reply.headers.values() if self.password in v]
        return reply

    def sessions(self) -> dict[int, int]:
        """Its database connections and the id of the last command each ran."""
        rows = self.sql(
            "SELECT ID, QUERY_ID FROM information_schema.PROCESSLIST WHERE USER = %s",
            (self.user,),
        )
        return {int(r[0]): int(r[1]) for r in rows}

    async def statements(self) -> int:
        """Statements it ran, by its own count (successful and failed)."""
        text = (await self.get("/metrics")).body.decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in ("cmapi_db_query_seconds_count", "cmapi_db_query_errors_total"):
                    total += sample.value
        return int(total)


@asynccontextmanager
async def database_work(served: Served, statements: int) -> AsyncIterator[None]:
    """Assert that what runs inside costs exactly `statements` statements: by the process's
    count, and on the server (none at all, or some)."""
    sessions = served.sessions()
    before = await served.statements()
    yield
    ran = await served.statements() - before
    assert ran == statements, f"{ran} statement(s), expected {statements}"
    touched = served.sessions() != sessions
    assert touched == (statements > 0), f"the server saw {'some' if touched else 'no'} work"


def _drain(stream: Any, into: list[str]) -> None:
    # Read continuously: a full pipe would block the service's writes (and so the service).
    for line in stream:
        into.append(line)


@pytest.fixture(scope="module")
def served(db_server: ServerAddress, db_name: str) -> Iterator[Served]:
    """One process for the module, with a table of SQL-looking text keys besides acc and user,
    connecting as an account of its own."""
    sql = SQL(db_server, db_name)
    user, password = f"cmapi_bi_{uuid.uuid4().hex[:8]}", "bad-Input-Pa55"
    sql(f"DROP TABLE IF EXISTS {TABLE}")
    sql(
        f"CREATE TABLE {TABLE} (code VARCHAR(40) NOT NULL PRIMARY KEY, note TEXT NOT NULL) "
        "CHARACTER SET utf8mb4"
    )
    for key in KEYS:
        sql(f"INSERT INTO {TABLE} VALUES (%s, %s)", (key, NOTE))
    for host in ("%", "localhost"):
        sql(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
        sql(f"GRANT SELECT, INSERT, UPDATE, DELETE, DROP ON `{db_name}`.* TO '{user}'@'{host}'")
    port = free_port()
    env = {
        **listening_env(db_server, db_name, (user, password), port),
        "RESOURCES": f"acc,user,{TABLE}",
        "CACHE_TTL_SECONDS": "0",  # every accepted read is one statement: countable
        "SHUTDOWN_DELAY_SECONDS": "0",
    }
    process = spawn_service(env)
    lines: list[str] = []
    errors: list[str] = []
    readers = [
        threading.Thread(target=_drain, args=(stream, into), daemon=True)
        for stream, into in ((process.stdout, lines), (process.stderr, errors))
    ]
    for reader in readers:
        reader.start()
    try:
        _wait_for_livez(port, process, errors)
        yield Served(port, user, sql, lines, password)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for reader in readers:
            reader.join(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        for host in ("%", "localhost"):
            sql(f"DROP USER IF EXISTS '{user}'@'{host}'")
        sql(f"DROP TABLE IF EXISTS {TABLE}")
        sql.close()
    # Everything it wrote, hostile requests, refusals and tracebacks included.
    assert lines
    assert password not in "".join(lines) + "".join(errors)


def _wait_for_livez(port: int, process: subprocess.Popen[str], errors: list[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"service exited early: {''.join(errors)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise AssertionError("service did not come up")


@pytest.fixture
async def service(served: Served) -> AsyncIterator[Served]:
    """The module's process; after the test, nothing it logged may be a 5xx or an error of
    ours."""
    start = len(served.lines)
    yield served
    # A last request of our own: once its line is out, every earlier one is (one writer).
    marker = f"/end-of-test-{uuid.uuid4().hex}"
    await served.get(marker)
    await wait_until(lambda: any(marker in line for line in served.lines[start:]))
    events = []
    for line in served.lines[start:]:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    bad = [
        e
        for e in events
        if e.get("event") == "unhandled_error"
        or (e.get("event") == "request" and e.get("status", 0) >= 500)
    ]
    assert not bad, bad


def assert_error(reply: Reply, status: int, code: str) -> str:
    """`reply` is our JSON error envelope with `status` and `code`; its message, which never
    echoes a long input back."""
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.content_type == "application/json"
    body = reply.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    assert isinstance(message, str)
    assert 0 < len(message) < 200
    return message


def assert_parser_rejected(reply: Reply) -> None:
    """aiohttp's own answer to a request its parser refused (see the module docstring)."""
    assert reply.status == 400, (reply.status, reply.body[:300])
    assert reply.content_type == "text/plain"


def intact(sql: SQL) -> None:
    assert sql("SELECT COUNT(*) FROM acc")[0][0] == ACC_ROWS
    assert sorted(r[0] for r in sql(f"SELECT code FROM {TABLE}")) == sorted(KEYS)


def codes_after(sql: SQL, after: str) -> list[str]:
    return [r[0] for r in sql(f"SELECT code FROM {TABLE} WHERE code > %s ORDER BY code", (after,))]


# -- SQL-looking input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ("/acc/1%20OR%201=1", 404, "not_found"),
        ("/acc/1;DROP%20TABLE%20acc", 404, "not_found"),
        ("/acc/1%3BDROP%20TABLE%20acc", 404, "not_found"),
        ("/acc/'%20OR%20''='", 404, "not_found"),
        ("/acc/1%2F**%2FUNION%2F**%2FSELECT%20*%20FROM%20user", 404, "not_found"),
        ("/acc/1/**/UNION/**/SELECT", 404, "not_found"),  # not a route
        ("/acc/0x1", 404, "not_found"),
        ("/acc/1e0", 404, "not_found"),
        ("/acc/%2B1", 404, "not_found"),
        ("/acc/%201", 404, "not_found"),
        ("/acc/1_0", 404, "not_found"),
        ("/acc/%D9%A1", 404, "not_found"),  # ARABIC-INDIC DIGIT ONE: int() would take it
        ("/acc/18446744073709551616", 404, "not_found"),  # past BIGINT UNSIGNED
        ("/acc/-9223372036854775809", 404, "not_found"),  # before BIGINT
        ("/acc/?after=1%20OR%201=1", 400, "bad_request"),
        ("/acc/?after=1;DROP%20TABLE%20acc", 400, "bad_request"),
        ("/acc/?after='%20OR%20''='", 400, "bad_request"),
        ("/acc/?after=1/**/UNION/**/SELECT", 400, "bad_request"),
        ("/acc/?after=1+OR+1=1&limit=1", 400, "bad_request"),
        ("/acc/?limit=1%20OR%201=1", 400, "bad_request"),
        ("/acc/?limit=1;DROP%20TABLE%20acc", 400, "bad_request"),
        ("/acc/?limit=1)%20UNION%20SELECT%201--", 400, "bad_request"),
        ("/acc/?1=1", 400, "bad_request"),
        ("/acc/1?after=1%20OR%201=1", 400, "bad_request"),
        ("/acc/?id=1%20OR%201=1", 400, "bad_request"),
        ("/acc/?id=1&id=1;DROP%20TABLE%20acc", 400, "bad_request"),
        ("/acc/?status=active'%20OR%20'1'='1", 400, "bad_request"),
        ("/acc/?status=active&status=%27)%20OR%20(%271", 400, "bad_request"),
        ("/acc/?name=x'%20OR%20''='", 400, "bad_request"),  # not indexed: no filter
        ("/acc/1?_=1&id=1%20OR%201=1", 400, "bad_request"),
    ],
)
async def test_sql_looking_input_for_an_integer_key_costs_no_query(
    service: Served, target: str, status: int, code: str
) -> None:
    async with database_work(service, 0):
        reply = await service.get(target)
    assert_error(reply, status, code)
    intact(service.sql)


@pytest.mark.parametrize(
    ("target", "status", "ids"),
    [
        ("/acc/%31", 200, [1]),
        ("/acc/0001", 200, [1]),
        ("/acc/-0", 404, None),
        ("/acc/-1", 404, None),
        ("/acc/18446744073709551615", 404, None),
        ("/acc/-9223372036854775808", 404, None),
        ("/acc/?after=%33&limit=%31", 200, [4]),
        ("/acc/?after=-9223372036854775808&limit=1", 200, [1]),
        ("/acc/?limit=2&after=18446744073709551615", 200, []),
    ],
)
async def test_numeric_keys_reach_the_database_once_as_integers(
    service: Served, target: str, status: int, ids: list[int] | None
) -> None:
    async with database_work(service, 1):
        reply = await service.get(target)
    if ids is None:
        assert_error(reply, status, "not_found")
        return
    assert reply.status == status
    body = reply.json()
    got = [row["id"] for row in body] if isinstance(body, list) else [body["id"]]
    assert got == ids


@pytest.mark.parametrize(
    "key",
    [
        "1 OR 1=1",
        "' OR ''='",
        "x' OR '1'='1",
        "1;DROP TABLE acc",
        f"a'; DROP TABLE {TABLE}; --",
        "a\\' OR 1=1 -- ",
        "../../etc/passwd",
        "..",
        "\x00",
        "a\x00' OR 1=1",
        "%FF%FE",  # the literal text, sent as %25FF%25FE
    ],
)
async def test_sql_looking_text_keys_are_bound_parameters(service: Served, key: str) -> None:
    """A text key is any text: it reaches the database, as one bound value, and finds the row
    with exactly that key or none (spliced into SQL, most of these would find every row)."""
    async with database_work(service, 1):
        reply = await service.get(f"/{TABLE}/{quote(key, safe='')}")
    if key in KEYS:
        assert reply.status == 200
        assert reply.json() == {"code": key, "note": NOTE}
    else:
        assert_error(reply, 404, "not_found")
    intact(service.sql)


@pytest.mark.parametrize(
    "key",
    ["1 OR 1=1", "' OR ''='", "x' OR '1'='1", f"a'; DROP TABLE {TABLE}; --", "\x00", "%FF%FE"],
)
async def test_sql_looking_filter_values_are_bound_parameters(service: Served, key: str) -> None:
    """A filter on the text key: one statement, whose values are bound (with a second value,
    as the repeated parameter makes an IN list), finding exactly the rows with those keys."""
    async with database_work(service, 1):
        reply = await service.get(f"/{TABLE}/?code={quote(key, safe='')}&code=b&_=1")
    assert reply.status == 200
    assert sorted(row["code"] for row in reply.json()) == sorted({key, "b"} & set(KEYS))
    intact(service.sql)


@pytest.mark.parametrize("target", ["/acc/?_=1", "/acc/?_=1&_=%E2%82%AC", "/acc/2?_=", "/acc/?_"])
async def test_the_cache_buster_is_accepted_and_costs_its_one_read(
    service: Served, target: str
) -> None:
    async with database_work(service, 1):  # CACHE_TTL_SECONDS=0: every read is one statement
        reply = await service.get(target)
    assert reply.status == 200, reply.body[:300]


@pytest.mark.parametrize(
    "after",
    ["1 OR 1=1", "' OR ''='", "x' OR '1'='1", f"1;DROP TABLE {TABLE}", "%FF%FE", "\x00"],
)
async def test_sql_looking_after_values_on_a_text_key_are_bound(
    service: Served, after: str
) -> None:
    async with database_work(service, 1):
        reply = await service.get(f"/{TABLE}/?after={quote(after, safe='')}&limit=100")
    assert reply.status == 200
    assert [row["code"] for row in reply.json()] == codes_after(service.sql, after)
    intact(service.sql)


async def test_plus_in_a_query_is_a_space(service: Served) -> None:
    async with database_work(service, 1):
        reply = await service.get(f"/{TABLE}/?after=1+OR+1%3D1")
    assert [row["code"] for row in reply.json()] == codes_after(service.sql, "1 OR 1=1")


# -- bytes that are not UTF-8 -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ("/acc/%FF%FE", 404, "not_found"),
        (f"/{TABLE}/%FF%FE", 404, "not_found"),  # not the row whose key is the text "%FF%FE"
        (f"/{TABLE}/..%C0%AF..%C0%AF", 404, "not_found"),  # over-long "/"
        (f"/{TABLE}/%ED%A0%80", 404, "not_found"),  # a UTF-16 surrogate
        (f"/{TABLE}/a%C3", 404, "not_found"),  # truncated sequence
        ("/acc/?after=%FF", 400, "bad_request"),
        ("/acc/?limit=%FE", 400, "bad_request"),
        ("/acc/?%FF=1", 400, "bad_request"),
        (f"/{TABLE}/?after=%FF%FE", 400, "bad_request"),
        (f"/{TABLE}/?after=a%C3&limit=1", 400, "bad_request"),
        (f"/{TABLE}/?limit=1&after=%ED%A0%80", 400, "bad_request"),
    ],
)
async def test_percent_escapes_that_are_not_utf8_cost_no_query(
    service: Served, target: str, status: int, code: str
) -> None:
    """yarl keeps such escapes in a path as literal text ("%FF") and makes U+FFFD of them in a
    query; either way the database would be asked for a key the client never sent."""
    async with database_work(service, 0):
        reply = await service.get(target)
    assert_error(reply, status, code)


@pytest.mark.parametrize(
    ("target", "status"),
    [
        (f"/{TABLE}/%E2%82%AC", 404),  # EURO SIGN: valid, just no such row
        (f"/{TABLE}/?after=%E2%82%AC", 200),
        (f"/{TABLE}/?after=%F0%9F%98%80&limit=1", 200),
        ("/acc/%31", 200),
    ],
)
async def test_percent_escapes_of_utf8_are_served(
    service: Served, target: str, status: int
) -> None:
    async with database_work(service, 1):
        reply = await service.get(target)
    assert reply.status == status
    assert reply.content_type == "application/json"


@pytest.mark.parametrize(
    "target",
    [
        b"/acc/\xff\xfe",
        b"/acc/?after=\xff",
        b"/bad_input_keys/caf\xc3\xa9",  # valid UTF-8, but raw bytes are not allowed in a URL
        b"/acc/\x00",
        b"/acc/1 OR 1=1",
        b"/acc/?after=1 OR 1=1",
        b"/acc/\t1",
    ],
)
async def test_raw_bytes_in_the_target_are_refused_by_the_parser(
    service: Served, target: bytes
) -> None:
    async with database_work(service, 0):
        reply = await service.get(target)
    assert_parser_rejected(reply)


# -- length ------------------------------------------------------------------------------------


TEN_KB = 10 * 1024


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ("/acc/" + "9" * TEN_KB, 404, "not_found"),
        (f"/{TABLE}/" + "x" * TEN_KB, 404, "not_found"),  # longer than the VARCHAR(40) key
        (f"/{TABLE}/" + "%41" * (TEN_KB // 3), 404, "not_found"),
        ("/acc/?after=" + "9" * TEN_KB, 400, "bad_request"),
        (f"/{TABLE}/?after=" + "x" * TEN_KB, 400, "bad_request"),
        ("/acc/?limit=" + "1" * TEN_KB, 400, "bad_request"),
        ("/acc/?" + "x" * TEN_KB + "=1", 400, "bad_request"),
        ("/acc/?limit=1&" + "&" * TEN_KB, 200, None),
    ],
)
async def test_ten_kilobyte_targets_are_answered_without_a_query(
    service: Served, target: str, status: int, code: str | None
) -> None:
    """Within MAX_URL_BYTES (and past aiohttp's default limit), so our code answers them; no
    key or parameter is that long, so none needs the database, and no answer echoes it."""
    assert AIOHTTP_MAX_LINE < len(target) < MAX_URL_BYTES
    async with database_work(service, 0 if code else 1):
        reply = await service.get(target)
    if code:
        assert_error(reply, status, code)
    else:
        assert reply.status == status


async def test_the_longest_page_request_we_accept_is_served(service: Served) -> None:
    """`after` of the most characters a text key may have, each 12 bytes once encoded: the
    reason MAX_URL_BYTES is what it is."""
    after = "\N{GRINNING FACE}" * 1024
    target = f"/{TABLE}/?after={quote(after, safe='')}&limit=1000"
    assert AIOHTTP_MAX_LINE < len(target) <= MAX_URL_BYTES
    async with database_work(service, 1):
        reply = await service.get(target)
    assert reply.status == 200
    assert [row["code"] for row in reply.json()] == codes_after(service.sql, after)


def _filler(count: int) -> list[tuple[str, str]]:
    return [(f"X-Filler-{i}", "1") for i in range(count)]


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/acc/?after=" + "9" * MAX_URL_BYTES, []),
        ("/acc/" + "%41" * (MAX_URL_BYTES // 3 + 1), []),
        ("/acc/", [("X-Filler", "a" * (MAX_HEADER_BYTES + 1))]),
        ("/acc/", [("X-" + "n" * MAX_HEADER_BYTES, "1")]),
        ("/acc/", [("If-None-Match", "," * TEN_KB)]),
        ("/acc/", [("Accept-Encoding", "gzip, " * (MAX_HEADER_BYTES // 6 + 1))]),
        ("/acc/", [("Cookie", "a=b; " * (MAX_HEADER_BYTES // 5 + 1))]),
        ("/acc/", _filler(MAX_HEADERS - 1)),  # with Host and Connection: one too many
    ],
)
async def test_beyond_the_parser_limits_is_refused_before_our_code(
    service: Served, target: str, headers: list[tuple[str, str]]
) -> None:
    async with database_work(service, 0):
        reply = await service.get(target, headers=headers)
    assert_parser_rejected(reply)


@pytest.mark.parametrize(
    "headers",
    [
        _filler(MAX_HEADERS - 3),  # with Host and Connection: one fewer than the limit
        [("X-Filler", "a" * (MAX_HEADER_BYTES - len("X-Filler") - 8))],
        [("Cookie", "a=b; " * ((MAX_HEADER_BYTES - 16) // 5))],
    ],
)
async def test_within_the_parser_limits_is_served(
    service: Served, headers: list[tuple[str, str]]
) -> None:
    assert len(headers) < AIOHTTP_MAX_HEADERS
    async with database_work(service, 1):
        reply = await service.get("/acc/1", headers=headers)
    assert reply.status == 200


def test_our_header_count_limit_is_below_aiohttps_default() -> None:
    # Otherwise the refusal above could be aiohttp's default at work rather than ours.
    assert MAX_HEADERS + 1 < AIOHTTP_MAX_HEADERS


# -- parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "name"),
    [
        ("/acc/?limit=1&limit=2", "limit"),
        ("/acc/?limit=1&limit=1", "limit"),
        ("/acc/?after=1&after=2", "after"),
        ("/acc/?after=1&limit=1&after=1", "after"),
        (f"/{TABLE}/?after=a&after=b", "after"),
        ("/acc/?limit=1&limit", "limit"),
        ("/acc/?limit=1&LIMIT=2", "LIMIT"),
        ("/acc/?limit=1&lim%69t=2", "limit"),
    ],
)
async def test_repeated_or_unknown_parameters_are_400(
    service: Served, target: str, name: str
) -> None:
    async with database_work(service, 0):
        reply = await service.get(target)
    assert repr(name) in assert_error(reply, 400, "bad_request")


@pytest.mark.parametrize(
    "limit",
    [
        "-1",
        "0",
        "-0",
        "00",
        "1001",  # MAX_PAGE_SIZE + 1
        "0001001",
        "99999999999",
        "9" * 400,
        "1e3",
        "1.0",
        "1.5",
        "0x10",
        "0b1",
        "0o7",
        "%2B1",
        "%201",
        "1%20",
        "1_0",
        "%D9%A1",
        "NaN",
        "inf",
        "",
        "abc",
        "1,2",
    ],
)
async def test_malformed_limits_are_400(service: Served, limit: str) -> None:
    async with database_work(service, 0):
        reply = await service.get(f"/acc/?limit={limit}")
    assert "limit" in assert_error(reply, 400, "bad_request")


@pytest.mark.parametrize(
    ("limit", "rows", "link"),
    [
        ("1", 1, '</acc/?after=1&limit=1>; rel="next"'),
        ("01", 1, '</acc/?after=1&limit=1>; rel="next"'),
        ("000000002", 2, '</acc/?after=2&limit=2>; rel="next"'),
        ("1000", ACC_ROWS, None),
    ],
)
async def test_valid_limits_are_normalised(
    service: Served, limit: str, rows: int, link: str | None
) -> None:
    async with database_work(service, 1):
        reply = await service.get(f"/acc/?limit={limit}")
    assert reply.status == 200
    assert len(reply.json()) == rows
    assert reply.headers.get("Link") == link


# -- methods -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method", ["PATCH", "DELETE", "PUT", "POST", "PROPFIND", "MKCOL", "TRACE", "M-SEARCH"]
)
@pytest.mark.parametrize("target", ["/acc/", "/acc/1", f"/{TABLE}/a", "/livez"])
async def test_other_methods_are_405_with_allow(service: Served, method: str, target: str) -> None:
    async with database_work(service, 0):
        reply = await service.get(target, method)
    assert method in assert_error(reply, 405, "method_not_allowed")
    assert set(reply.headers["Allow"].split(",")) == {"GET", "HEAD"}


async def test_a_body_on_another_method_is_405(service: Served) -> None:
    body = b"1; DROP TABLE acc"
    headers = [("Content-Length", str(len(body))), ("Content-Type", "text/plain")]
    async with database_work(service, 0):
        reply = await exchange(service.port, http_request("/acc/", "POST", headers) + body)
    assert_error(reply, 405, "method_not_allowed")
    intact(service.sql)


@pytest.mark.parametrize("method", ["FROBNICATE", "BREW", "get", "X-CUSTOM", "G\xc9T"])
async def test_unknown_method_tokens_are_refused_by_the_parser(
    service: Served, method: str
) -> None:
    async with database_work(service, 0):
        reply = await service.get("/acc/", method.encode("latin-1"))
    assert_parser_rejected(reply)


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/acc/", []),
        ("/acc/1", []),
        ("*", []),
        ("/acc/", [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "GET")]),
        (
            "/acc/1",
            [("Origin", "null"), ("Access-Control-Request-Method", "DELETE' OR 1=1")],
        ),
    ],
)
async def test_options_does_no_database_work(
    service: Served, target: str, headers: list[tuple[str, str]]
) -> None:
    """OPTIONS (CORS preflight) is being given its own answer elsewhere: only no 5xx (checked by
    every request) and no query are asserted here."""
    async with database_work(service, 0):
        await service.get(target, "OPTIONS", headers)


@pytest.mark.parametrize("target", ["127.0.0.1:443", "/acc/"])
async def test_connect_is_refused_without_database_work(service: Served, target: str) -> None:
    async with database_work(service, 0):
        reply = await service.get(target, "CONNECT")
    assert reply.status == 404


@pytest.mark.xfail(
    strict=True,
    reason="aiohttp's router answers a target that is not a path with its own text/plain 404: "
    "routing.add_not_found's catch-all /{tail:.*} cannot match it",
)
async def test_connect_is_answered_with_the_json_envelope(service: Served) -> None:
    assert_error(await service.get("127.0.0.1:443", "CONNECT"), 404, "not_found")


# -- conditional and content-coding headers -----------------------------------------------------


async def _plain(service: Served, target: str) -> Reply:
    reply = await service.get(target)
    assert reply.status == 200
    assert "Content-Encoding" not in reply.headers
    return reply


def _tag(reply: Reply) -> str:
    return reply.headers["ETag"].strip('"')


@pytest.mark.parametrize(
    "value",
    [
        b'"',
        b"W/",
        b'W/"',
        b'""',
        b"," * 8000,
        b'"\xff\xfe"',
        b'W/"\xc3\xa9"',
        b"{tag}",  # unquoted
        b'"a" "{tag}"',  # no comma between
        b'"x", *',  # "*" is only valid alone
        b'"{tag}',  # unterminated
        b'W/"' * 2700,
        b'"a",' * 2000,
        b"\xe2\x80\x9c{tag}\xe2\x80\x9d",  # typographic quotes
    ],
)
async def test_garbage_if_none_match_gets_the_full_answer(service: Served, value: bytes) -> None:
    plain = await _plain(service, "/acc/1")
    value = value.replace(b"{tag}", _tag(plain).encode())
    started = time.monotonic()
    async with database_work(service, 1):
        reply = await service.get("/acc/1", headers=[("If-None-Match", value)])
    assert time.monotonic() - started < 2.0
    assert reply.status == 200
    assert reply.body == plain.body


@pytest.mark.parametrize(
    "value",
    ['"{tag}"', 'W/"{tag}"', '"x", "{tag}"', ' "x" ,W/"{tag}" ', "*", '"{tag}-gzip"'],
)
async def test_matching_if_none_match_gets_304(service: Served, value: str) -> None:
    plain = await _plain(service, "/acc/1")
    async with database_work(service, 1):
        reply = await service.get(
            "/acc/1", headers=[("If-None-Match", value.replace("{tag}", _tag(plain)))]
        )
    assert reply.status == 304
    assert reply.body == b""
    assert reply.headers["ETag"] == plain.headers["ETag"]


@pytest.mark.parametrize(
    ("value", "gzipped"),
    [
        (b"gzip;q=abc", False),
        (b"*;q=0", False),
        (b"identity;q=0", False),
        (b"gzip;q=0", False),
        (b"gzip;q=0.5;q=0", False),
        (b"x;q=0.1," * 1000, False),
        (b"\xff\xfe", False),
        (b"gzip;q=\xd9\xa1", False),  # an Arabic-Indic 1 is no qvalue
        (b"gzip;q=0_1", False),  # nor is 0_1 (float() reads it as 1)
        (b"gzip;q=inf", False),
        (b"gzip;q=1e999", False),
        (b"gzip;q=nan", False),
        (b"gzip;q=-1", False),
        (b"gzip;q=2", False),
        (b";;;,,,;q=", False),
        (b"gzip", True),
        (b"GZIP", True),
        (b"x-gzip", True),
        (b"gzip ; q=1", True),
        (b"gzip;q=0.001", True),
        (b"gzip;q=1.000", True),
        (b"identity;q=0, gzip", True),
        (b"*", True),
        (b"*;q=0.5", True),
        (b"br, deflate, " * 600 + b"gzip", True),
    ],
)
async def test_garbage_accept_encoding_gets_a_correct_answer(
    service: Served, value: bytes, gzipped: bool
) -> None:
    plain = await _plain(service, f"/{TABLE}/")
    async with database_work(service, 1):
        reply = await service.get(f"/{TABLE}/", headers=[("Accept-Encoding", value)])
    assert reply.status == 200
    if gzipped:
        assert reply.headers["Content-Encoding"] == "gzip"
        assert reply.headers["ETag"] == f'"{_tag(plain)}-gzip"'
        assert gzip.decompress(reply.body) == plain.body
    else:
        assert "Content-Encoding" not in reply.headers
        assert reply.body == plain.body


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gzip", True),
        ("gzip;q=1", True),
        ("gzip;q=1.", True),
        ("gzip;q=0.5", True),
        ("gzip; q=0.001", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=1.5", False),
        ("gzip;q=1.0001", False),
        ("gzip;q=0.0001", False),
        ("gzip;q=.5", False),
        ("gzip;q=+1", False),
        ("gzip;q= 1", True),  # as lenient about spaces as before
        ("gzip;q=\u0661", False),
        ("gzip;q=0_1", False),
        ("gzip;q=1e0", False),
        ("gzip;q=inf", False),
        ("*;q=1e999", False),
    ],
)
def test_only_rfc_qvalues_count(value: str, expected: bool) -> None:
    """RFC 9110 12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ); anything
    else counts as 0, as an unreadable one always did."""
    assert accepts_gzip(value) is expected


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/acc/../../etc/passwd",
        "/%2e%2e/",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/acc/..%2f..%2fetc%2fpasswd",
        "/acc/..%2F..%2F",
        "/acc/%2e%2e%2f%2e%2e%2f",
        "/acc/..",
        "/acc/%2e%2e",
        "/acc/.",
        "//acc//",
        "//acc/1",
        "/acc//1",
        "/acc/1/",
        "/acc\\1",
        "/acc/\\..\\..\\etc\\passwd",
        "/acc/%5c..%5c..%5cetc%5cpasswd",
        "/acc/%00",
        "/acc/1%00",
        "/acc/1%00.json",
        "/acc%2f1",
        "/acc/1/../2",
        "/static/../../../etc/passwd",
        "/.env",
        "/acc/.git/config",
    ],
)
async def test_path_tricks_are_404_without_a_query(service: Served, target: str) -> None:
    async with database_work(service, 0):
        reply = await service.get(target)
    assert_error(reply, 404, "not_found")
    assert b"root:" not in reply.body


async def test_absolute_form_target_is_served_like_its_path(service: Served) -> None:
    """RFC 9112 3.2.2: servers accept the absolute form; only its path routes."""
    async with database_work(service, 1):
        reply = await service.get("http://evil.example/acc/1")
    assert reply.status == 200
    assert reply.json()["id"] == 1


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Length", "1"), ("Content-Length", "2")],
        [("Transfer-Encoding", "chunked"), ("Content-Length", "3")],
        [("If-None-Match", '"a\x00"')],
        [("Accept-Encoding", "gzip\x7f")],
        [("Host", "second")],
    ],
)
async def test_malformed_headers_are_refused_by_the_parser(
    service: Served, headers: list[tuple[str, str]]
) -> None:
    async with database_work(service, 0):
        reply = await service.get("/acc/", headers=headers)
    assert_parser_rejected(reply)


async def test_a_request_the_parser_refused_is_logged_and_counted(service: Served) -> None:
    start = len(service.lines)
    reply = await service.get(b"/acc/\x00")
    assert_parser_rejected(reply)
    marker = f"/after-refused-{uuid.uuid4().hex}"
    await service.get(marker)
    await wait_until(lambda: any(marker in line for line in service.lines[start:]))
    events = [json.loads(line) for line in service.lines[start:]]
    assert not [e for e in events if e["event"] == "Unhandled exception"]
    # The access line records it; aiohttp's own error line with a traceback is not written
    # (logs.ParserRejections) unless LOG_LEVEL=debug.
    assert not [e for e in events if e["level"] in ("error", "critical")]
    assert next(e["status"] for e in events if e["event"] == "request") == 400
