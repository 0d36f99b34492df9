"""GET /openapi.json: a valid OpenAPI 3.1 document that lists exactly the router's routes, and
that real answers of the running app (bodies, statuses, content types, headers) conform to."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from service.app import create_app
from service.errors import (
    BadRequest,
    DatabaseQueryError,
    DatabaseUnavailable,
    NotFound,
    Unauthorized,
)
from service.keys import CATALOG, DATABASE, READINESS
from service.openapi import column_schema, openapi_document
from service.schema import ColumnInfo
from service.settings import Settings

from .conftest import SQL

Client = TestClient[web.Request, web.Application]
URI = "urn:cm-api:openapi"


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


class Contract:
    """Checks real answers against the document the app serves."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(URI, resource)

    def lookup(self, pointer: str) -> Any:
        node: Any = self.document
        for part in pointer.split("/")[1:]:
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def follow(self, pointer: str) -> tuple[str, Any]:
        """The object at `pointer` and its own pointer, after any $ref."""
        node = self.lookup(pointer)
        while "$ref" in node:
            pointer = node["$ref"].removeprefix("#")
            node = self.lookup(pointer)
        return pointer, node

    def validate(self, pointer: str, instance: Any) -> None:
        validator = Draft202012Validator(
            {"$ref": f"{URI}#{pointer}"},
            registry=self.registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        validator.validate(instance)

    async def check(self, response: ClientResponse, template: str) -> None:
        """`response` (to a request on the route `template`) is one its operation documents."""
        method = response.method.lower()
        operation = f"/paths/{_escape(template)}/{method}"
        assert method in self.lookup(f"/paths/{_escape(template)}"), (method, template)
        await self.check_response(response, f"{operation}/responses/{response.status}")

    async def check_response(self, response: ClientResponse, pointer: str) -> None:
        pointer, documented = self.follow(pointer)
        for name in documented.get("headers", {}):
            header_pointer, header = self.follow(f"{pointer}/headers/{_escape(name)}")
            value = response.headers.get(name)
            if value is None:
                assert not header.get("required"), f"{name} missing from {response.url}"
                continue
            schema = header["schema"]
            instance: Any = int(value) if schema.get("type") == "integer" else value
            self.validate(f"{header_pointer}/schema", instance)
        body = await response.read()
        content = documented.get("content")
        if response.method == "HEAD" or content is None:
            assert body == b"", response.url
            return
        assert response.content_type in content, (response.content_type, list(content))
        if response.content_type == "application/json":
            media = f"{pointer}/content/{_escape(response.content_type)}/schema"
            self.validate(media, await response.json())


@pytest.fixture
async def contract(client: Client) -> Contract:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    return Contract(await response.json())


async def test_the_document_is_valid_openapi_3_1(contract: Contract) -> None:
    document = contract.document
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


async def test_every_route_of_the_router_is_documented_and_nothing_else(
    client: Client, contract: Contract
) -> None:
    routed = set()
    for route in client.app.router.routes():
        # '*': the 405 of every path and the catch-all 404, documented as reusable responses.
        if route.method == "*":
            continue
        assert route.resource is not None
        routed.add((route.method, route.resource.canonical))
    documented = {
        (method.upper(), path)
        for path, item in contract.document["paths"].items()
        for method in item
    }
    assert routed == documented
    assert ("GET", "/openapi.json") in documented


async def test_data_answers_conform(client: Client, contract: Contract) -> None:
    checks = [
        ("/acc/", "/acc/"),
        ("/acc", "/acc"),
        ("/user/", "/user/"),
        ("/acc/?limit=2", "/acc/"),
        ("/acc/?limit=2&after=2", "/acc/"),
        ("/user/?limit=0", "/user/"),
        ("/user/?colour=red", "/user/"),
        ("/acc/4", "/acc/{id}"),
        ("/user/3", "/user/{id}"),
        ("/acc/999", "/acc/{id}"),
        ("/acc/1?x=1", "/acc/{id}"),
    ]
    for path, template in checks:
        for method in ("GET", "HEAD"):
            await contract.check(await client.request(method, path), template)
    page = await client.get("/acc/?limit=2")
    assert "Link" in page.headers
    etag = page.headers["ETag"]
    again = await client.get("/acc/?limit=2", headers={"If-None-Match": etag})
    assert again.status == 304
    await contract.check(again, "/acc/")


async def test_probe_scrape_and_document_answers_conform(
    client: Client, contract: Contract
) -> None:
    for path in ("/livez", "/readyz", "/readyz?verbose", "/metrics", "/openapi.json"):
        for method in ("GET", "HEAD"):
            await contract.check(await client.request(method, path), path.partition("?")[0])
    openmetrics = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert openmetrics.content_type == "application/openmetrics-text"
    await contract.check(openmetrics, "/metrics")
    document = await client.get("/openapi.json")
    unchanged = await client.get(
        "/openapi.json", headers={"If-None-Match": document.headers["ETag"]}
    )
    assert unchanged.status == 304
    await contract.check(unchanged, "/openapi.json")

    client.app[READINESS].start_draining()
    for verbose in ("", "?verbose"):
        draining = await client.get(f"/readyz{verbose}")
        assert draining.status == 503
        await contract.check(draining, "/readyz")


async def test_errors_outside_the_operations_use_the_documented_responses(
    client: Client, contract: Contract
) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        response = await client.request(method, "/acc/1")
        assert response.status == 405
        await contract.check_response(response, "/components/responses/MethodNotAllowed")
    missing = await client.get("/no/such/route")
    assert missing.status == 404
    await contract.check_response(missing, "/components/responses/NotFound")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (DatabaseUnavailable("the database did not answer within 5 s"), 503),
        (DatabaseQueryError("the database rejected the query"), 500),
    ],
)
async def test_database_failures_conform(
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    status: int,
) -> None:
    client: Client = await aiohttp_client(create_app(make_settings(CACHE_TTL_SECONDS="0")))
    contract = Contract(await (await client.get("/openapi.json")).json())

    async def failing(*args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(client.app[DATABASE], "fetch_chunks", failing)
    for path, template in (("/acc/", "/acc/"), ("/acc/1", "/acc/{id}")):
        response = await client.get(path)
        assert response.status == status
        await contract.check(response, template)


@pytest.fixture
def typed_table(sql: SQL) -> Iterator[str]:
    """A table with a column of (nearly) every MySQL type, a text key, one row of values and
    one of NULLs."""
    name = f"types_{uuid.uuid4().hex[:10]}"
    sql(
        f"CREATE TABLE {name} ("
        " k VARCHAR(16) NOT NULL PRIMARY KEY,"
        " t TINYINT NOT NULL, si SMALLINT UNSIGNED NULL, bi BIGINT NULL, yr YEAR NULL,"
        " d DECIMAL(5,0) NULL, d2 DECIMAL(6,3) UNSIGNED NULL, f FLOAT NULL, db DOUBLE NULL,"
        " dt DATETIME NULL, ts TIMESTAMP(3) NULL, dd DATE NULL, tm TIME(6) NULL,"
        " e ENUM('Big','it''s') NULL, st SET('a','b') NULL, c CHAR(3) NULL,"
        " tx MEDIUMTEXT NULL, j JSON NULL, vb VARBINARY(8) NULL, bl BLOB NULL, bt BIT(3) NULL"
        ")"
    )
    sql(
        f"INSERT INTO {name} VALUES ('a', -128, 65535, -9223372036854775808, 2155,"
        " -99999, 123.456, 1.5, -2.25e100, '2024-01-02 03:04:05', '2024-01-02 03:04:05.123',"
        " '2024-02-29', '-838:59:59', 'it''s', 'a,b', 'abc', 'x', '{\"a\": 1}', 0x00ff,"
        " 'blob', b'101')"
    )
    sql(f"INSERT INTO {name} (k, t) VALUES ('b', 0)")
    try:
        yield name
    finally:
        sql(f"DROP TABLE IF EXISTS {name}")


async def test_row_schemas_follow_the_column_types(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], typed_table: str
) -> None:
    client: Client = await aiohttp_client(
        create_app(make_settings(RESOURCES=f"acc,user,{typed_table}"))
    )
    contract = Contract(await (await client.get("/openapi.json")).json())
    for path, template in (
        (f"/{typed_table}/", f"/{typed_table}/"),
        (f"/{typed_table}/?limit=1&after=a", f"/{typed_table}/"),
        (f"/{typed_table}/a", f"/{typed_table}/{{id}}"),
        (f"/{typed_table}/b", f"/{typed_table}/{{id}}"),
    ):
        response = await client.get(path)
        assert response.status == 200
        await contract.check(response, template)
    rows = await (await client.get(f"/{typed_table}/")).json()
    assert rows[0]["d2"] == "123.456"  # encoded as the schema says, not by luck
    assert rows[1]["e"] is None

    row = contract.lookup(f"/components/schemas/{typed_table}.row")
    assert row["required"] == list(rows[0])
    assert row["additionalProperties"] is False
    properties = row["properties"]
    assert properties["t"]["type"] == "integer"  # NOT NULL
    assert (properties["t"]["minimum"], properties["t"]["maximum"]) == (-128, 127)
    assert properties["si"]["type"] == ["integer", "null"]
    assert properties["e"]["enum"] == ["Big", "it's", None]
    assert properties["d2"]["pattern"] == r"^[0-9]{1,3}\.[0-9]{3}$"
    assert properties["dd"]["format"] == "date"
    assert properties["vb"]["contentEncoding"] == "base64"
    key = contract.lookup(f"/components/parameters/{typed_table}.id")["schema"]
    assert key == {"type": "string", "minLength": 1, "maxLength": 16}


@pytest.mark.parametrize(
    ("column_type", "value", "valid"),
    [
        ("decimal(18,4)", "15234.5000", True),
        ("decimal(18,4)", "15234.5", False),
        ("decimal(18,4)", 15234.5, False),
        ("bigint(20) unsigned", 2**64 - 1, True),
        ("bigint(20) unsigned", -1, False),
        ("int(11)", 2**31, False),
        ("datetime(6)", "2024-02-01T14:05:12.250000", True),
        ("datetime(6)", "2024-02-01 14:05:12", False),
        ("time", "-838:59:59", True),
        ("enum('active','closed')", "active", True),
        ("enum('active','closed')", "ACTIVE", False),
    ],
)
def test_column_schemas(column_type: str, value: object, valid: bool) -> None:
    data_type = column_type.partition("(")[0]
    schema = column_schema(ColumnInfo("c", data_type, column_type, None, nullable=False))
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    assert validator.is_valid(value) is valid
    assert validator.is_valid(None) is False


def test_an_unknown_type_promises_nothing() -> None:
    assert column_schema(ColumnInfo("c", "vector", "vector(3)", None)) == {
        "description": "vector(3): not described."
    }


async def test_bearer_adds_the_security_scheme_the_401_and_nothing_for_probes(
    client: Client, settings: Settings
) -> None:
    catalog = client.app[CATALOG]
    plain = openapi_document(settings, catalog)
    assert "securitySchemes" not in plain["components"]
    assert all(
        "401" not in op["responses"] for item in plain["paths"].values() for op in item.values()
    )

    document = openapi_document(settings, catalog, bearer=True, metrics_bearer=True)
    validate(document)
    schemes = document["components"]["securitySchemes"]
    assert {s["scheme"] for s in schemes.values()} == {"bearer"}
    for path, item in document["paths"].items():
        for operation in item.values():
            if path in ("/livez", "/readyz"):
                assert "security" not in operation
                assert "401" not in operation["responses"]
            else:
                assert operation["security"], path
                assert "401" in operation["responses"], path
    assert document["paths"]["/acc/"]["get"]["security"] == [{"api_token": []}]
    assert document["paths"]["/metrics"]["get"]["security"] == [{"metrics_token": []}]


async def test_errors_are_documented_with_the_status_and_code_they_are_answered_with(
    client: Client, settings: Settings
) -> None:
    contract = Contract(openapi_document(settings, client.app[CATALOG], bearer=True))
    for error in (BadRequest, Unauthorized, NotFound, DatabaseQueryError, DatabaseUnavailable):
        _, response = contract.follow(f"/paths/{_escape('/acc/{id}')}/get/responses/{error.status}")
        error_schema = response["content"]["application/json"]["schema"]["properties"]["error"]
        assert error.code in error_schema["properties"]["code"]["enum"], error
