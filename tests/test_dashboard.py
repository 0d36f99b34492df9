"""The example dashboard (examples/dashboard/) in a real browser: 20 tabs of one Chromium context
(Debian's chromium, driven by playwright), served from another origin than the API, against the
real service (`python -m service`) and a private MariaDB whose general log shows every SELECT.

One run of about 30 s (the module's fixture) records what the tabs showed, what crossed the
wire and what the database ran: every tab opens the page, a row changes in the database, the
polling tab is closed (another takes over) and a row changes again. A short second phase points
two tabs at a service with long-poll off (the page falls back to polling), then stops that
service (the page shows the error and keeps its rows). Each test checks one promise of what was
recorded; the figures are printed at the end of the test session.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
from aiohttp import web
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    async_playwright,
)

from .conftest import free_port, report_figures, required_tool
from .statement_log import LoggedMariaDB, Service, logged_mariadb, logged_service, scrape

PAGE_DIR: Final = Path(__file__).resolve().parent.parent / "examples" / "dashboard"
TABS: Final = 20
RUN_SECONDS: Final = 30.0
TTL: Final = 3  # CACHE_TTL_SECONDS: a change must reach every tab within TTL + 1 s
# The page's Prefer: wait (its default is 25): short, so that the run sees several held
# requests end unchanged (304) besides the changes.
WAIT: Final = 5
POLL: Final = 2  # the page's plain-poll interval, should it fall back
# The second, short phase: a service with long-poll off, 2 tabs polling every second.
FALLBACK_TABS: Final = 2
FALLBACK_POLL: Final = 1
SOON: Final = 15.0  # bound for anything that must happen "soon" on a busy 2-core machine

# What a tab shows, read in one evaluation: its role and, per list, the rows (data-id and
# text), the status line's data-* and when this tab last rendered rows (Date.now()).
SHOWN_JS: Final = """() => ({
  role: document.body.dataset.role ?? null,
  lists: Object.fromEntries([...document.querySelectorAll("section[data-resource]")].map(
    (s) => [s.dataset.resource, {
      rows: [...s.querySelectorAll("tbody tr")].map((tr) => [tr.dataset.id, tr.textContent]),
      mode: s.dataset.mode ?? null,
      version: Number(s.dataset.version ?? 0),
      renderedAt: Number(s.dataset.renderedAt ?? 0) / 1000,
      error: s.dataset.error ?? "",
    }])),
})"""


@dataclass(frozen=True)
class Wire:
    """One answer of the API as the browser received it."""

    resource: str
    status: int
    preference_applied: str | None
    x_cache: str | None


@dataclass
class Tab:
    number: int
    page: Page
    wire: list[Wire] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # console errors, page errors, failures
    closed: bool = False
    outage: bool = False  # the API was stopped on purpose: errors go to outage_errors
    outage_errors: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        (self.outage_errors if self.outage else self.errors).append(text)

    async def shown(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.page.evaluate(SHOWN_JS)
        return result


@dataclass
class Change:
    """A row changed in the database, and when each open tab showed it."""

    statement: str
    delays: dict[int, float]  # tab number -> seconds from the UPDATE to that tab's render

    @property
    def worst(self) -> float:
        return max(self.delays.values())


@dataclass
class Fallback:
    """The page against a service that holds no request."""

    tabs: list[Tab]
    final: dict[int, dict[str, Any]]
    change: Change
    outage: dict[int, dict[str, Any]]  # what the tabs showed once the service was stopped

    @property
    def wire(self) -> list[Wire]:
        return [w for tab in self.tabs for w in tab.wire]


@dataclass
class Run:
    tabs: list[Tab]
    final: dict[int, dict[str, Any]]  # tab number -> what it showed at the end
    expected_ids: dict[str, list[str]]
    changes: list[Change]
    takeover_s: float
    seconds: float  # from the tabs' opening to the end, by the database's clock
    selects: dict[str, int]
    metrics_304: float
    metrics_long_polls: dict[str, float]

    @property
    def wire(self) -> list[Wire]:
        return [w for tab in self.tabs for w in tab.wire]


# -- the processes ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def cm_api(db: LoggedMariaDB, page_origin: str, **variables: str) -> AsyncIterator[Service]:
    """The real service, allowing the page's origin."""
    async with logged_service(
        db,
        SOON,
        CORS_ALLOWED_ORIGINS=page_origin,
        CACHE_TTL_SECONDS=str(TTL),
        SHUTDOWN_GRACE_SECONDS="2",
        **variables,
    ) as service:
        yield service


@contextlib.asynccontextmanager
async def static_site(directory: Path) -> AsyncIterator[str]:
    """The page's files served on a port of their own (another origin than the API's)."""
    app = web.Application()
    app.router.add_static("/", directory)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# -- the browser ------------------------------------------------------------------------------


async def open_tab(context: BrowserContext, number: int, url: str, api: str) -> Tab:
    page = await context.new_page()
    tab = Tab(number, page)
    answered: set[Request] = set()

    def on_response(response: Response) -> None:
        request = response.request
        answered.add(request)
        if request.method == "GET" and request.url.startswith(api):
            resource = request.url.removeprefix(api).strip("/").split("/")[0]
            headers = response.headers
            tab.wire.append(
                Wire(
                    resource,
                    response.status,
                    headers.get("preference-applied"),
                    headers.get("x-cache"),
                )
            )

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            tab.error(f"console: {message.text} ({message.location})")

    def on_failed(request: Request) -> None:
        # Chromium ends a fetch answered without a body (a 304) as failed (net::ERR_ABORTED)
        # although the page's fetch got the answer (microsoft/playwright#32752): not a failure.
        if not tab.closed and request not in answered:
            tab.error(f"request failed: {request.method} {request.url} {request.failure}")

    page.on("response", on_response)
    page.on("console", on_console)
    page.on("pageerror", lambda error: tab.error(f"page error: {error}"))
    page.on("requestfailed", on_failed)
    await page.goto(url)
    return tab


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float, what: str, tabs: list[Tab]
) -> float:
    """Poll `check` until it holds; the seconds it took. A bound, not a pause. The failure's
    message shows what the first tabs showed last."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            shown = await showing(tabs[:3])
            raise AssertionError(f"{what}: not within {within:g} s; first tabs: {shown}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def showing(tabs: list[Tab]) -> dict[int, dict[str, Any]]:
    shown = await asyncio.gather(*(tab.shown() for tab in tabs))
    return {tab.number: s for tab, s in zip(tabs, shown, strict=True)}


def ids_in(db: LoggedMariaDB) -> dict[str, list[str]]:
    """Every row's id in each table, as the page's data-id attributes read."""
    return {
        table: [str(i) for (i,) in db.execute(f"SELECT id FROM `{table}` ORDER BY id")]
        for table in ("acc", "user")
    }


def row_text(shown: dict[str, Any], resource: str, row_id: str) -> str:
    return next((text for i, text in shown["lists"][resource]["rows"] if i == row_id), "")


async def change_row(
    db: LoggedMariaDB, tabs: list[Tab], resource: str, column: str, row_id: int, value: str
) -> Change:
    """UPDATE one row and wait until every tab shows it; when each rendered it."""
    statement = f"UPDATE `{resource}` SET `{column}` = %s WHERE id = %s"
    before = time.time()  # the same clock as the page's Date.now()
    db.execute(statement, (value, row_id))

    async def everywhere() -> bool:
        shown = await showing(tabs)
        return all(value in row_text(s, resource, str(row_id)) for s in shown.values())

    await eventually(everywhere, SOON, f"{resource} {row_id} changed in every tab", tabs)
    shown = await showing(tabs)
    delays = {n: s["lists"][resource]["renderedAt"] - before for n, s in shown.items()}
    return Change(statement % (repr(value), row_id), delays)


async def drive(browser: Browser, db: LoggedMariaDB, page_origin: str, api: str) -> Run:
    context = await browser.new_context()
    url = f"{page_origin}/index.html?api={api}&wait={WAIT}&poll={POLL}"
    since = db.now()
    started = time.monotonic()
    tabs = list(await asyncio.gather(*(open_tab(context, n, url, api) for n in range(TABS))))
    expected = ids_in(db)  # the changes below keep every id

    async def polled_and_shown() -> bool:
        shown = await showing(tabs)
        roles = Counter(s["role"] for s in shown.values())
        poller = next((s for s in shown.values() if s["role"] == "poller"), None)
        return (
            roles["poller"] == 1
            and poller is not None
            and all(poller["lists"][t]["mode"] == "long-poll" for t in expected)
            and all(
                [i for i, _ in s["lists"][t]["rows"]] == ids
                for s in shown.values()
                for t, ids in expected.items()
            )
        )

    await eventually(
        polled_and_shown, SOON, "one tab long-polls and every tab shows every row", tabs
    )
    await asyncio.sleep(1.0)  # the requests are held now
    changes = [await change_row(db, tabs, "acc", "name", 1, "Acme Logistics (renamed)")]

    # The polling tab goes away: another takes the lock and goes on from what it showed.
    shown = await showing(tabs)
    poller = next(tab for tab in tabs if shown[tab.number]["role"] == "poller")
    poller.closed = True
    await poller.page.close()
    open_tabs = [tab for tab in tabs if not tab.closed]

    async def taken_over() -> bool:
        roles = Counter(s["role"] for s in (await showing(open_tabs)).values())
        return roles["poller"] == 1

    takeover = await eventually(taken_over, SOON, "another tab polls", open_tabs)
    await asyncio.sleep(1.0)
    changes.append(await change_row(db, open_tabs, "user", "full_name", 2, "Robert Smith II"))

    await asyncio.sleep(max(0.0, RUN_SECONDS - (time.monotonic() - started)))
    final = await showing(open_tabs)
    until = db.now()
    selects = {t: len([s for s in db.selects(t, since) if s.at <= until]) for t in expected}
    samples = await scrape(api)
    for tab in tabs:
        tab.closed = True  # their held requests are cut now
    await context.close()
    return Run(
        tabs=tabs,
        final=final,
        expected_ids=expected,
        changes=changes,
        takeover_s=takeover,
        seconds=(until - since).total_seconds(),
        selects=selects,
        metrics_304=sum(
            v
            for (n, labels), v in samples.items()
            if n == "cmapi_http_requests_total" and ("status", "304") in labels
        ),
        metrics_long_polls={
            dict(labels).get("ended", "?"): v
            for (n, labels), v in samples.items()
            if n == "cmapi_http_long_polls_total"
        },
    )


async def drive_fallback(
    browser: Browser, db: LoggedMariaDB, page_origin: str, service: Service
) -> Fallback:
    api = service.url
    context = await browser.new_context()
    url = f"{page_origin}/index.html?api={api}&wait={WAIT}&poll={FALLBACK_POLL}"
    opened = await asyncio.gather(*(open_tab(context, n, url, api) for n in range(FALLBACK_TABS)))
    tabs = list(opened)

    async def polling() -> bool:
        shown = await showing(tabs)
        return all(
            s["lists"][t]["mode"] == "polling" and s["lists"][t]["rows"]
            for s in shown.values()
            for t in ("acc", "user")
        )

    await eventually(polling, SOON, "the page polls", tabs)
    change = await change_row(db, tabs, "acc", "name", 2, "Borealis Energía (renamed)")
    await asyncio.sleep(2 * FALLBACK_POLL)
    final = await showing(tabs)

    # The API goes away: the page must say so and keep its rows.
    for tab in tabs:
        tab.outage = True
    service.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(service.process.wait, SOON)

    async def failing() -> bool:
        shown = await showing(tabs)
        return all(s["lists"][t]["error"] for s in shown.values() for t in ("acc", "user"))

    await eventually(failing, SOON, "every tab shows the error", tabs)
    outage = await showing(tabs)
    for tab in tabs:
        tab.closed = True
    await context.close()
    return Fallback(tabs, final, change, outage)


async def run_dashboard(chromium: str) -> tuple[Run, Fallback]:
    with logged_mariadb() as db:
        async with static_site(PAGE_DIR) as page_origin, async_playwright() as playwright:
            # The system's browser: playwright's own builds are never downloaded.
            browser = await playwright.chromium.launch(executable_path=chromium)
            try:
                async with cm_api(db, page_origin) as api:
                    run = await drive(browser, db, page_origin, api.url)
                # Long-poll off: no answer carries Preference-Applied, so the page polls.
                async with cm_api(db, page_origin, LONG_POLL_MAX_SECONDS="0") as api:
                    fallback = await drive_fallback(browser, db, page_origin, api)
                return run, fallback
            finally:
                await browser.close()


@pytest.fixture(scope="module")
def observed(pytestconfig: pytest.Config) -> tuple[Run, Fallback]:
    chromium = required_tool("chromium", "Debian's chromium package")
    began = time.monotonic()
    run, fallback = asyncio.run(run_dashboard(chromium))
    report_figures(
        pytestconfig,
        "example dashboard in chromium (tests/test_dashboard.py)",
        {
            "tabs": TABS,
            "run (s)": round(run.seconds, 1),
            "worst change delay per change (s)": [round(c.worst, 2) for c in run.changes],
            "new polling tab after the old one closed (s)": round(run.takeover_s, 2),
            "API answers on the wire": dict(sorted(Counter(w.status for w in run.wire).items())),
            "their X-Cache": dict(Counter(w.x_cache for w in run.wire)),
            "304s counted by the service": run.metrics_304,
            "long polls by how they ended": run.metrics_long_polls,
            "SELECTs per table": run.selects,
            "SELECT bound per table (run / TTL + 1)": round(run.seconds / TTL + 1, 1),
            "long-poll off, polling every 1 s: worst change delay (s)": round(
                fallback.change.worst, 2
            ),
            "long-poll off: answers on the wire": dict(Counter(w.status for w in fallback.wire)),
            "API stopped: refused connections the browser logged (console, requests)": sum(
                len(t.outage_errors) for t in fallback.tabs
            ),
            "test wall time with MariaDB and the service (s)": round(time.monotonic() - began, 1),
        },
    )
    return run, fallback


@pytest.fixture
def run(observed: tuple[Run, Fallback]) -> Run:
    return observed[0]


@pytest.fixture
def fallback(observed: tuple[Run, Fallback]) -> Fallback:
    return observed[1]


# -- the promises -----------------------------------------------------------------------------


def test_every_tab_shows_every_row(run: Run) -> None:
    assert len(run.final) == TABS - 1  # one was closed
    for number, shown in run.final.items():
        for table, ids in run.expected_ids.items():
            assert [i for i, _ in shown["lists"][table]["rows"]] == ids, (number, table)
            assert shown["lists"][table]["error"] == "", (number, table)
        assert "Acme Logistics (renamed)" in row_text(shown, "acc", "1")
        assert "Robert Smith II" in row_text(shown, "user", "2")
        # data-version counts renders: the first rows, then the change (at least).
        assert shown["lists"]["acc"]["version"] >= 2, number


def test_a_change_reaches_every_tab_within_ttl_plus_one_second(run: Run) -> None:
    for change in run.changes:
        assert change.worst <= TTL + 1, (change.statement, change.delays)


def test_one_tab_long_polls_for_all(run: Run) -> None:
    roles = Counter(s["role"] for s in run.final.values())
    assert roles == {"poller": 1, "listener": TABS - 2}
    for shown in run.final.values():
        assert all(shown["lists"][t]["mode"] == "long-poll" for t in run.expected_ids)
    assert any(w.preference_applied for w in run.wire)
    # Only the polling tabs (the first one, then its successor) asked the API.
    assert len([tab for tab in run.tabs if tab.wire]) == 2


def test_the_browser_revalidates(run: Run) -> None:
    statuses = Counter(w.status for w in run.wire)
    assert set(statuses) <= {200, 304}, statuses
    assert statuses[304] >= 2, statuses
    assert run.metrics_304 >= statuses[304]


def test_database_sees_at_most_one_select_per_key_per_ttl(run: Run) -> None:
    bound = run.seconds / TTL + 1
    for table, count in run.selects.items():
        assert 1 <= count <= bound, (table, count, bound)


def test_without_long_poll_the_page_polls(run: Run, fallback: Fallback) -> None:
    for shown in fallback.final.values():
        assert all(shown["lists"][t]["mode"] == "polling" for t in run.expected_ids)
        assert "Borealis Energía (renamed)" in row_text(shown, "acc", "2")
    statuses = Counter(w.status for w in fallback.wire)
    assert set(statuses) <= {200, 304}, statuses
    assert statuses[304] >= 2, statuses
    assert not any(w.preference_applied for w in fallback.wire)
    # A cached answer expires after TTL; the next poll refreshes it, the one after gets it.
    assert fallback.change.worst <= TTL + 2 * FALLBACK_POLL + 1, fallback.change.delays


def test_a_failure_is_shown_and_the_rows_stay(run: Run, fallback: Fallback) -> None:
    for number, shown in fallback.outage.items():
        for table, ids in run.expected_ids.items():
            listed = shown["lists"][table]
            assert listed["error"].startswith("no answer"), (number, table, listed["error"])
            assert [i for i, _ in listed["rows"]] == ids, (number, table)
    # What the browser logged meanwhile: the refused connections, nothing else.
    for tab in fallback.tabs:
        for error in tab.outage_errors:
            assert "ERR_CONNECTION_REFUSED" in error, error


def test_no_console_errors(run: Run, fallback: Fallback) -> None:
    phases = {"tab": run.tabs, "long-poll off, tab": fallback.tabs}
    errors = {f"{p} {t.number}": t.errors for p, tabs in phases.items() for t in tabs if t.errors}
    assert not errors
