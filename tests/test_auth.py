"""Optional bearer tokens: the data routes need one of API_TOKENS_FILE's, /metrics one of
METRICS_TOKENS_FILE's, the probes none; a refused request never reaches the cache or the
database. Over the real app and a real database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.auth import BearerTokens
from service.errors import Unauthorized
from service.keys import CACHE
from service.settings import Secret, Settings

Client = TestClient[web.Request, web.Application]

DATA_TOKENS = ("dashboard-token-0123456789", "second-token-abcdefghij")
SCRAPE_TOKEN = "prometheus-token-0123456789"


@pytest.fixture
async def protected(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> Client:
    data = tmp_path / "api-tokens"
    data.write_text("# the dashboard\n" + "\n".join(DATA_TOKENS) + "\n", encoding="utf-8")
    scrape = tmp_path / "metrics-tokens"
    scrape.write_text(SCRAPE_TOKEN + "\n", encoding="utf-8")
    settings = make_settings(API_TOKENS_FILE=str(data), METRICS_TOKENS_FILE=str(scrape))
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, 'Bearer realm="cm-api"'),
        (bearer("not-a-token-of-ours-12345"), 'Bearer realm="cm-api", error="invalid_token"'),
        (bearer(SCRAPE_TOKEN), 'Bearer realm="cm-api", error="invalid_token"'),
        (bearer(DATA_TOKENS[0][:-1]), 'Bearer realm="cm-api", error="invalid_token"'),
        (
            {"Authorization": f"Basic {DATA_TOKENS[0]}"},
            'Bearer realm="cm-api", error="invalid_request"',
        ),
        ({"Authorization": "Bearer "}, 'Bearer realm="cm-api", error="invalid_request"'),
    ],
)
@pytest.mark.parametrize("path", ["/acc/", "/user/", "/user/1", "/acc/?limit=2"])
async def test_data_routes_refuse_without_a_valid_token(
    protected: Client, path: str, headers: dict[str, str], challenge: str
) -> None:
    response = await protected.get(path, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == challenge
    body = await response.json()
    assert body["error"]["code"] == "unauthorized"
    assert DATA_TOKENS[0] not in await response.text()
    # Refused before the cache: nothing was looked up, loaded or stored.
    stats = protected.app[CACHE].stats()  # type: ignore[index]
    assert (stats.entries, stats.in_flight, stats.waiting) == (0, 0, 0)


@pytest.mark.parametrize("token", DATA_TOKENS)
async def test_every_listed_token_reads_the_data(protected: Client, token: str) -> None:
    response = await protected.get("/acc/", headers=bearer(token))
    assert response.status == 200
    assert len(await response.json()) == 5
    head = await protected.head("/user/1", headers={"Authorization": f"bearer  {token} "})
    assert head.status == 200


async def test_probes_stay_open_and_metrics_take_their_own_token(protected: Client) -> None:
    assert (await protected.get("/livez")).status == 200
    assert (await protected.get("/readyz")).status == 200
    assert (await protected.get("/metrics")).status == 401
    refused = await protected.get("/metrics", headers=bearer(DATA_TOKENS[0]))
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"].startswith('Bearer realm="cm-api metrics"')
    scrape = await protected.get("/metrics", headers=bearer(SCRAPE_TOKEN))
    assert scrape.status == 200
    # The refused scrapes are counted like any other answer.
    assert 'cmapi_http_requests_total{method="GET",route="/metrics",status="401"} 2.0' in (
        await scrape.text()
    )


async def test_without_tokens_files_everything_is_open(client: Client) -> None:
    assert (await client.get("/user/")).status == 200
    assert (await client.get("/metrics")).status == 200


def test_verify_compares_every_token_and_accepts_only_exact_ones() -> None:
    tokens = BearerTokens([Secret(t) for t in DATA_TOKENS], "r")
    for token in DATA_TOKENS:
        tokens.verify(f"Bearer {token}")
    for wrong in (DATA_TOKENS[0] + "x", DATA_TOKENS[0].upper(), DATA_TOKENS[0] + DATA_TOKENS[1]):
        with pytest.raises(Unauthorized):
            tokens.verify(f"Bearer {wrong}")
    with pytest.raises(ValueError, match="at least one"):
        BearerTokens([], "r")


async def test_the_served_document_takes_the_data_tokens_and_says_so(protected: Client) -> None:
    assert (await protected.get("/openapi.json")).status == 401
    response = await protected.get("/openapi.json", headers=bearer(DATA_TOKENS[1]))
    assert response.status == 200
    document = await response.json()
    assert set(document["components"]["securitySchemes"]) == {"api_token", "metrics_token"}
    assert "401" in document["paths"]["/user/"]["get"]["responses"]
    assert "security" not in document["paths"]["/livez"]["get"]
