"""CORS for the dashboard's origin: answers carry the headers that let an allowed page read
them, preflights are answered (without a token), everything else is refused clearly. Over the
real app and a real database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.settings import Settings

Client = TestClient[web.Request, web.Application]
Factory = Callable[..., Any]

DASHBOARD = "https://dash.example.com"
TOKEN = "dashboard-token-0123456789"


async def app_client(
    aiohttp_client: Factory, make_settings: Callable[..., Settings], **env: str
) -> Client:
    return await aiohttp_client(create_app(make_settings(**env)))  # type: ignore[no-any-return]


def preflight_headers(
    origin: str = DASHBOARD, method: str = "GET", headers: str = ""
) -> dict[str, str]:
    sent = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        sent["Access-Control-Request-Headers"] = headers
    return sent


async def test_off_by_default(client: Client) -> None:
    response = await client.get("/acc/", headers={"Origin": DASHBOARD})
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" not in response.headers.get("Vary", "")
    preflight = await client.options("/acc/", headers=preflight_headers())
    assert preflight.status == 405
    assert preflight.headers["Allow"] == "GET,HEAD"


async def test_allowed_origin_reads_answers_and_errors(
    aiohttp_client: Factory, make_settings: Callable[..., Settings]
) -> None:
    client = await app_client(
        aiohttp_client, make_settings, CORS_ALLOWED_ORIGINS=f"{DASHBOARD},http://localhost:3000"
    )
    for path, status in (("/acc/", 200), ("/acc/999999", 404), ("/acc/?limit=0", 400)):
        response = await client.get(path, headers={"Origin": DASHBOARD, "Accept-Encoding": "gzip"})
        assert response.status == status, path
        assert response.headers["Access-Control-Allow-Origin"] == DASHBOARD
        assert "Access-Control-Allow-Credentials" not in response.headers
        exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"ETag", "X-Cache", "Link", "X-Request-Id"} <= exposed
        assert "Origin" in response.headers["Vary"]
    cached = await client.get("/acc/", headers={"Origin": DASHBOARD, "Accept-Encoding": "gzip"})
    assert cached.headers["X-Cache"] == "HIT"
    assert cached.headers["Vary"] == "Accept-Encoding, Origin"


async def test_other_origin_gets_no_grant_but_the_same_data(
    aiohttp_client: Factory, make_settings: Callable[..., Settings]
) -> None:
    client = await app_client(aiohttp_client, make_settings, CORS_ALLOWED_ORIGINS=DASHBOARD)
    for origin in ("https://evil.example", "https://dash.example.com.evil.example", "null"):
        response = await client.get("/acc/", headers={"Origin": origin})
        assert response.status == 200
        assert "Access-Control-Allow-Origin" not in response.headers
        assert response.headers["Vary"] == "Accept-Encoding, Origin"


async def test_preflight_needs_no_token_and_lists_what_is_allowed(
    aiohttp_client: Factory, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n", encoding="utf-8")
    client = await app_client(
        aiohttp_client,
        make_settings,
        CORS_ALLOWED_ORIGINS=DASHBOARD,
        CORS_ALLOW_CREDENTIALS="true",
        API_TOKENS_FILE=str(tokens),
    )
    preflight = await client.options(
        "/user/", headers=preflight_headers(headers="Authorization, If-None-Match")
    )
    assert preflight.status == 204, await preflight.text()
    assert preflight.headers["Access-Control-Allow-Origin"] == DASHBOARD
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "if-none-match"} <= {h.strip() for h in allowed.split(",")}
    assert int(preflight.headers["Access-Control-Max-Age"]) > 0
    # The actual request then needs its token, and its refusal is readable by the page.
    refused = await client.get("/user/", headers={"Origin": DASHBOARD})
    assert refused.status == 401
    assert refused.headers["Access-Control-Allow-Origin"] == DASHBOARD
    granted = await client.get(
        "/user/", headers={"Origin": DASHBOARD, "Authorization": f"Bearer {TOKEN}"}
    )
    assert granted.status == 200


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (preflight_headers(origin="https://evil.example"), "origin"),
        (preflight_headers(method="DELETE"), "method"),
        (preflight_headers(headers="authorization, x-custom"), "x-custom"),
        (preflight_headers(headers="prefer, x-custom"), "CORS_ALLOWED_HEADERS"),
    ],
)
async def test_preflight_refusals_say_why(
    aiohttp_client: Factory,
    make_settings: Callable[..., Settings],
    headers: dict[str, str],
    reason: str,
) -> None:
    client = await app_client(aiohttp_client, make_settings, CORS_ALLOWED_ORIGINS=DASHBOARD)
    response = await client.options("/acc/", headers=headers)
    assert response.status == 403
    body = await response.json()
    assert body["error"]["code"] == "cors_rejected"
    assert reason in body["error"]["message"]
    assert "Access-Control-Allow-Methods" not in response.headers


async def test_options_that_is_not_a_preflight_is_405(
    aiohttp_client: Factory, make_settings: Callable[..., Settings]
) -> None:
    client = await app_client(aiohttp_client, make_settings, CORS_ALLOWED_ORIGINS=DASHBOARD)
    response = await client.options("/acc/")
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_any_origin(aiohttp_client: Factory, make_settings: Callable[..., Settings]) -> None:
    client = await app_client(aiohttp_client, make_settings, CORS_ALLOWED_ORIGINS="*")
    response = await client.get("/acc/", headers={"Origin": "https://anyone.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Vary"] == "Accept-Encoding"
    preflight = await client.options(
        "/acc/1", headers=preflight_headers(origin="https://anyone.example")
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"


# What fetch wrappers and chart libraries put on every request (jQuery's X-Requested-With, axios'
# Content-Type, no-cache headers), a long-poll's Prefer, and safelisted headers with values that
# are not safelisted (which browsers then list in the preflight).
WHAT_PAGES_SEND = (
    "Content-Type, X-Requested-With, Prefer, Cache-Control, Pragma, If-None-Match, "
    "Authorization, X-Request-Id, Accept, Accept-Language, Content-Language, Range"
)


async def test_preflight_accepts_what_real_fetch_code_sends(
    aiohttp_client: Factory, make_settings: Callable[..., Settings]
) -> None:
    client = await app_client(aiohttp_client, make_settings, CORS_ALLOWED_ORIGINS=DASHBOARD)
    for headers in (WHAT_PAGES_SEND, WHAT_PAGES_SEND.lower(), "content-type", "prefer,pragma"):
        preflight = await client.options("/acc/", headers=preflight_headers(headers=headers))
        assert preflight.status == 204, (headers, await preflight.text())
        allowed = {h.strip() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
        assert {h.strip().lower() for h in headers.split(",")} <= allowed
    answer = await client.get("/acc/", headers={"Origin": DASHBOARD})
    exposed = {h.strip() for h in answer.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Preference-Applied", "Age", "X-Cache", "ETag"} <= exposed


async def test_cors_allowed_headers_adds_more(
    aiohttp_client: Factory, make_settings: Callable[..., Settings]
) -> None:
    client = await app_client(
        aiohttp_client,
        make_settings,
        CORS_ALLOWED_ORIGINS=DASHBOARD,
        CORS_ALLOWED_HEADERS="X-Dashboard-Version, Traceparent",
    )
    preflight = await client.options(
        "/user/", headers=preflight_headers(headers="x-dashboard-version,traceparent,prefer")
    )
    assert preflight.status == 204, await preflight.text()
    allowed = preflight.headers["Access-Control-Allow-Headers"]
    assert "x-dashboard-version" in allowed
    assert "traceparent" in allowed
    still_refused = await client.options("/user/", headers=preflight_headers(headers="x-other"))
    assert still_refused.status == 403
