"""What the service logs, captured with structlog's capture_logs over the real app and MariaDB:
one access event per request with its request id (echoed to the client), probes and scrapes at
debug level, database failures once per incident, never a password."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from service.access import server_options
from service.app import create_app
from service.logs import (
    AccessLines,
    LoopFlushedLogger,
    UtcStamper,
    configure_logging,
)
from service.request_id import add_request_id
from service.settings import Settings

from .conftest import SQL

Client = TestClient[web.Request, web.Application]
Events = list[dict[str, Any]]


@pytest.fixture
def logs() -> Iterator[Events]:
    """Every event logged during the test, with the context bound to it (as in production)."""
    with capture_logs(processors=[add_request_id]) as captured:
        yield captured


async def settle() -> None:
    """aiohttp reports a response just after writing its last byte, which the client may have
    read first: let the server's side of the loop finish that turn."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_one_access_event_per_request_with_the_incoming_request_id(
    client: Client, access_lines: Events
) -> None:
    response = await client.get("/acc/", headers={"X-Request-ID": "dash-42.a:b"})
    assert response.headers["X-Request-ID"] == "dash-42.a:b"
    await settle()
    (event,) = access_lines
    assert event["request_id"] == "dash-42.a:b"
    assert event["level"] == "info"
    assert (event["method"], event["route"], event["path"]) == ("GET", "/acc/", "/acc/")
    assert (event["status"], event["cache"], event["client"]) == (200, "MISS", "127.0.0.1")
    assert event["bytes"] > len(await response.read())  # headers included
    assert 0 < event["duration_ms"] < 10_000


@pytest.mark.parametrize("incoming", [None, "", "has spaces", "x" * 129, "naïve", "a\tb"])
async def test_a_missing_or_malformed_request_id_is_replaced(
    client: Client, access_lines: Events, incoming: str | None
) -> None:
    headers = {} if incoming is None else {"X-Request-ID": incoming}
    response = await client.get("/acc/1", headers=headers)
    made = response.headers["X-Request-ID"]
    assert made
    assert made != incoming
    await settle()
    assert [e["request_id"] for e in access_lines] == [made]


async def test_request_ids_are_unique(client: Client, logs: Events) -> None:
    ids = {(await client.get("/acc/")).headers["X-Request-ID"] for _ in range(50)}
    assert len(ids) == 50


async def test_errors_and_unmatched_paths_are_logged_with_a_bounded_route(
    client: Client, access_lines: Events
) -> None:
    await client.get("/some/raw/path/123")
    await client.get("/acc/?limit=nope")
    await client.delete("/acc/7")
    await settle()
    got = [(e["route"], e["path"], e["status"], e["method"]) for e in access_lines]
    assert got == [
        ("unmatched", "/some/raw/path/123", 404, "GET"),
        ("/acc/", "/acc/", 400, "GET"),
        ("/acc/{id}", "/acc/7", 405, "DELETE"),
    ]


async def test_scrapes_are_logged_at_debug_level(client: Client, access_lines: Events) -> None:
    await client.get("/metrics")
    await settle()
    (event,) = access_lines
    assert (event["route"], event["level"]) == ("/metrics", "debug")


async def test_logs_inside_a_request_carry_its_id(
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    sql: SQL,
    logs: Events,
) -> None:
    client = await aiohttp_client(create_app(make_settings(DB_QUERY_TIMEOUT="0.3")))
    sql("LOCK TABLES `acc` WRITE")
    try:
        response = await client.get("/acc/", headers={"X-Request-ID": "traced-1"})
    finally:
        sql("UNLOCK TABLES")
    assert response.status == 503
    (failing,) = [e for e in logs if e["event"] == "database_failing"]
    assert failing["request_id"] == "traced-1"


async def test_database_failures_are_logged_once_per_incident(
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    sql: SQL,
    password_user: tuple[str, str],
    logs: Events,
    access_lines: Events,
) -> None:
    user, password = password_user
    settings = make_settings(DB_USER=user, DB_PASSWORD=password, DB_QUERY_TIMEOUT="0.2")
    client = await aiohttp_client(create_app(settings))
    sql("LOCK TABLES `acc` WRITE")
    try:
        for n in range(1, 6):  # five different keys: five queries, five time-outs
            assert (await client.get(f"/acc/{n}")).status == 503
    finally:
        sql("UNLOCK TABLES")
    # /acc/1 failed within the last second: the cache would answer its error without a retry.
    assert (await client.get("/acc/")).status == 200
    await settle()
    incident = [e for e in logs if e["event"] in ("database_failing", "database_recovered")]
    assert [(e["event"], e["kind"]) for e in incident] == [
        ("database_failing", "timeout"),
        ("database_recovered", "timeout"),
    ]
    assert incident[0]["log_level"] == "warning"
    assert "0.2 s" in incident[0]["reason"]
    assert incident[1]["failures"] == 5
    assert password not in repr(logs)
    assert len(access_lines) == 6


async def test_start_up_logs_pool_bounds_and_resources(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], logs: Events
) -> None:
    await aiohttp_client(create_app(make_settings(DB_POOL_SIZE="4", DB_POOL_MIN_SIZE="2")))
    (ready,) = [e for e in logs if e["event"] == "database_ready"]
    assert (ready["pool_min"], ready["pool_max"]) == (2, 4)
    assert ready["resources"]["acc"]["key"] == "id"
    assert "password_hash" not in ready["resources"]["user"]["columns"]


def test_standard_library_records_are_rendered_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("info", "json")
        logging.getLogger("aiohttp.server").warning("bad %s", "thing")
        structlog.get_logger("service").info("ours", n=1)
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()
    theirs, ours = lines
    assert (theirs["event"], theirs["level"], theirs["logger"]) == (
        "bad thing",
        "warning",
        "aiohttp.server",
    )
    assert "timestamp" in theirs
    assert (ours["event"], ours["level"], ours["n"]) == ("ours", "info", 1)


@pytest.mark.parametrize("level", ["info", "debug"])
def test_tracebacks_have_no_locals_and_parser_rejections_no_error_line(
    capsys: pytest.CaptureFixture[str], level: str
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    server = logging.getLogger("aiohttp.server")
    try:
        configure_logging(level, "json")
        password = "s3cret-in-a-frame-local"  # noqa: F841 (a local the traceback must not show)
        try:
            raise ValueError("boom")
        except ValueError:
            structlog.get_logger("service").exception("failed")
        try:
            raise LineTooLong("Status line", "16384", "20000")
        except LineTooLong as exc:
            server.error("Error handling request from %s", "10.0.0.9", exc_info=exc)
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        root.handlers[:], saved_level = saved
        root.setLevel(saved_level)
        for f in list(server.filters):
            server.removeFilter(f)
        structlog.reset_defaults()
    failed = lines[0]
    assert failed["event"] == "failed"
    assert failed["exception"][0]["exc_type"] == "ValueError"
    assert "s3cret-in-a-frame-local" not in json.dumps(lines)
    rejected = lines[1:]
    if level == "info":
        assert rejected == []
    else:
        assert [(e["level"], "exception" in e) for e in rejected] == [("debug", False)]
        assert "Got more than 16384 bytes" in rejected[0]["event"]


# --- the writers behind the lines (no app: what they write, and when) ----------------------------


class Writes:
    """A binary file that records each write() call: the writer's batching is what is tested."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.calls.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for call in self.calls for line in call.splitlines()]


def test_the_utc_stamper_matches_datetimes_iso_format() -> None:
    # A fake clock, to hit exact instants: a second's edges, the same second twice (its cached
    # prefix), a rounding up into the next second, a minute later.
    instants = [1_790_000_000.25, 1_790_000_000.999999, 1_790_000_000.9999997, 1_790_000_001.0]
    instants += [1_790_000_001.000001, 1_790_000_061.5]
    times = iter(instants)
    stamper = UtcStamper(clock=lambda: next(times))
    stamps = [stamper.now() for _ in instants]
    assert stamps == [
        datetime.datetime.fromtimestamp(t, datetime.UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
        for t in instants
    ]
    assert stamps[0] == "2026-09-21T14:13:20.250000Z"
    assert stamps[2] == "2026-09-21T14:13:21.000000Z"


def test_loop_lines_are_written_once_per_loop_turn_and_errors_at_once() -> None:
    file = Writes()
    out = LoopFlushedLogger(file)  # type: ignore[arg-type]

    async def turn() -> None:
        before = len(file.calls)
        out.info("a")
        out.info("b")
        assert len(file.calls) == before  # not yet: at the end of this turn
        await asyncio.sleep(0)
        assert file.calls[before:] == [b"a\nb\n"]
        out.info("c")
        out.error("d")  # a warning or error goes out at once, with what was pending
        assert file.calls[before + 1 :] == [b"c\nd\n"]
        out.info("e")

    asyncio.run(turn())
    asyncio.run(turn())  # tests run many loops: each one gets its writes
    assert b"".join(file.calls).split() == [b"a", b"b", b"c", b"d", b"e"] * 2
    out.info("f")  # no loop running: written at once
    assert file.calls[-1] == b"f\n"


async def test_lines_below_the_writers_level_are_not_gathered_but_still_counted(
    settings: Settings,
) -> None:
    app = create_app(settings)
    written: Events = []
    lines = AccessLines(logging.WARNING, written.append)
    server = TestServer(app)
    await server.start_server(**server_options(app, lines))
    async with TestClient(server) as client:
        for path in ("/acc/", "/acc/", "/nope", "/livez"):
            await (await client.get(path)).read()
        await settle()
        scrape = await (await client.get("/metrics")).text()
        lines.level = logging.DEBUG  # from now on every line is wanted, probes' too
        await (await client.get("/livez")).read()
        await settle()
    assert 'cmapi_http_requests_total{method="GET",route="/acc/",status="200"} 2.0' in scrape
    assert 'cmapi_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in scrape
    assert 'cmapi_cache_requests_total{resource="acc",result="hit"} 1.0' in scrape
    assert [(e["level"], e["route"]) for e in written] == [("debug", "/livez")]


def test_the_access_line_has_the_shape_of_the_structlog_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        lines = configure_logging("info", "json")
        fields = {"request_id": "r-1", "method": "GET", "route": "/acc/", "status": 200}
        assert lines.enabled_for(logging.INFO)
        assert not lines.enabled_for(logging.DEBUG)
        lines.write(logging.INFO, dict(fields))
        structlog.get_logger("cm_api.access").info("request", **fields)
        written = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        console = configure_logging("info", "console")
        console.write(logging.INFO, dict(fields))
        text = capsys.readouterr().out
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()
    ours, theirs = written
    assert list(ours) == list(theirs)  # same keys, same order
    assert ours.pop("timestamp")[:19] == theirs.pop("timestamp")[:19]
    assert ours == theirs == {**fields, "event": "request", "level": "info"}
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)  # the console renderer's colours
    assert "request" in plain
    assert "route=/acc/" in plain
