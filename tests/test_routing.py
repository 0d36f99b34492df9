"""The JSON error envelope without middlewares: the handler wrapper and the fallback routes, on a
bare aiohttp app (no database is needed to raise an error)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.errors import BadRequest, DatabaseUnavailable
from service.routing import Routing, add_not_found, add_read_only

Client = TestClient[web.Request, web.Application]


async def broken(request: web.Request) -> web.Response:
    raise ZeroDivisionError("a bug")  # an error no handler expects


async def unavailable(request: web.Request) -> web.Response:
    raise DatabaseUnavailable("the database did not answer within 5 s")


async def bad(request: web.Request) -> web.Response:
    raise BadRequest("limit must be an integer")


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any]) -> Client:
    app = web.Application()
    routing = Routing()
    add_read_only(app.router, "/broken", broken, routing)
    add_read_only(app.router, "/down", unavailable, routing)
    add_read_only(app.router, "/bad", bad, routing)
    add_not_found(app.router, ["acc", "user"], routing)
    result: Client = await aiohttp_client(app)
    return result


async def test_an_unexpected_exception_is_a_500_without_internals(client: Client) -> None:
    response = await client.get("/broken")
    assert response.status == 500
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body == {"error": {"code": "internal_error", "message": "internal server error"}}
    assert "ZeroDivision" not in await response.text()


async def test_domain_errors_keep_their_status_code_and_message(client: Client) -> None:
    down = await client.get("/down")
    assert (down.status, down.headers["Retry-After"]) == (503, "2")
    assert (await down.json())["error"]["code"] == "database_unavailable"
    bad = await client.get("/bad")
    assert bad.status == 400
    assert await bad.json() == {
        "error": {"code": "bad_request", "message": "limit must be an integer"}
    }


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_any_method_on_an_unknown_path_is_404_naming_the_resources(
    client: Client, method: str
) -> None:
    response = await client.request(method, "/nothing/here")
    assert response.status == 404
    body = await response.json()
    assert body["error"]["code"] == "not_found"
    assert "/acc/, /user/" in body["error"]["message"]


async def test_other_methods_on_a_known_path_are_405_with_allow(client: Client) -> None:
    response = await client.request("PUT", "/bad")
    assert response.status == 405
    assert response.headers["Allow"] == "GET,HEAD"
    assert (await response.json())["error"]["code"] == "method_not_allowed"
    head = await client.head("/bad")
    assert head.status == 400  # HEAD reaches the handler like GET
