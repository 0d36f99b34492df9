"""The OpenAPI 3.1 document of the API, served at GET /openapi.json.

Built once per app, after start-up has read the catalog: each resource's row schema comes from
the columns the database reported (names, nullability, types as encoding.py writes them), so the
document describes the tables of this deployment, not the development schema.
tests/test_openapi.py keeps it true (the router's routes, real answers validated against it) and
.ci/fuzz runs schemathesis with it against a running service.
"""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from . import __version__
from .cache import Outcome, entity_tag
from .db import ColumnInfo
from .encoding import encode
from .health import CHECKS, STATUSES
from .keys import CATALOG, OPENAPI, SETTINGS
from .resources import (
    INTEGER_KEY_MAX,
    INTEGER_KEY_MIN,
    INTEGER_TYPES,
    MAX_TEXT_KEY,
    Catalog,
    Resource,
)
from .responses import CACHE_NAME, JSON, not_modified
from .settings import Settings

Json = dict[str, Any]

OPENAPI_VERSION: Final = "3.1.1"
PATH: Final = "/openapi.json"
# The two security schemes the `bearer` switches add (API_TOKENS_FILE, METRICS_TOKENS_FILE).
DATA_SCHEME: Final = "api_token"
METRICS_SCHEME: Final = "metrics_token"

# Bits of each MySQL integer type; the signed and unsigned ranges follow.
_INTEGER_BITS: Final = {
    "tinyint": 8,
    "smallint": 16,
    "mediumint": 24,
    "int": 32,
    "integer": 32,
    "bigint": 64,
}
_TEXT_TYPES: Final = frozenset(
    {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "json"}
)
# PyMySQL returns these as bytes, which encoding.py writes as base64.
_BYTES_TYPES: Final = frozenset(
    {
        "binary",
        "varbinary",
        "tinyblob",
        "blob",
        "mediumblob",
        "longblob",
        "bit",
        "geometry",
        "point",
        "linestring",
        "polygon",
        "multipoint",
        "multilinestring",
        "multipolygon",
        "geometrycollection",
        "geomcollection",
    }
)
# orjson writes naive datetimes without an offset, which RFC 3339's date-time (the `date-time`
# format) requires: a pattern says what the values really are.
_DATETIME_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?$"
# encoding._mysql_time: MySQL's TIME range is -838:59:59 to 838:59:59, fractions to 6 digits.
_TIME_PATTERN: Final = r"^-?[0-9]{2,3}:[0-5][0-9]:[0-5][0-9](\.[0-9]{6})?$"
_DECIMAL_TYPE: Final = re.compile(r"(?:decimal|numeric)\((\d+),(\d+)\)", re.IGNORECASE)
_ENUM_MEMBER: Final = re.compile(r"'((?:[^']|'')*)'")
_REQUEST_ID_PATTERN: Final = r"^[A-Za-z0-9._:/+=@-]{1,128}$"


@dataclass(frozen=True)
class ServedDocument:
    """The document as served: encoded once, with its strong entity tag."""

    body: bytes
    tag: str

    @classmethod
    def of(cls, document: Json) -> ServedDocument:
        body = encode(document)
        return cls(body, entity_tag(body))


async def openapi_ctx(app: web.Application) -> AsyncIterator[None]:
    """Builds the document once the catalog exists: append it after database_ctx."""
    settings = app[SETTINGS]
    document = openapi_document(
        settings,
        app[CATALOG],
        bearer=bool(settings.api_tokens),
        metrics_bearer=bool(settings.metrics_tokens),
    )
    app[OPENAPI] = ServedDocument.of(document)
    yield


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json: the document, revalidated by its ETag like the data routes."""
    served = request.app[OPENAPI]
    headers = {"ETag": f'"{served.tag}"', "Cache-Control": "no-cache"}
    if not_modified(request.if_none_match, served.tag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=served.body, content_type=JSON, headers=headers)


def openapi_document(
    settings: Settings, catalog: Catalog, *, bearer: bool = False, metrics_bearer: bool = False
) -> Json:
    """The OpenAPI 3.1 document of an app with these settings and this catalog.

    `bearer`: the data routes and /openapi.json need an `Authorization: Bearer` token (scheme
    `api_token`) and may answer 401; `metrics_bearer`: the same for /metrics (`metrics_token`).
    """
    protected: dict[str, str] = {}  # operation tag -> the security scheme it requires
    if bearer:
        protected.update(data=DATA_SCHEME, meta=DATA_SCHEME)
    if metrics_bearer:
        protected["metrics"] = METRICS_SCHEME
    return _Builder(settings, catalog, protected).document()


class _Builder:
    """One document's components and paths, built in one pass."""

    def __init__(self, settings: Settings, catalog: Catalog, protected: dict[str, str]) -> None:
        self.settings = settings
        self.catalog = catalog
        self.protected = protected
        self.responses = _error_responses()
        if self.protected:
            self.responses["Unauthorized"] = _error_response(
                "No valid bearer token.",
                ["unauthorized"],
                {"WWW-Authenticate": _header_ref("WWWAuthenticate")},
            )
        self.paths: Json = {}

    def document(self) -> Json:
        schemas = _common_schemas()
        parameters = _common_parameters(self.settings.max_page_size)
        for name, resource in self.catalog.resources.items():
            schemas[_row(name)] = row_schema(resource)
            schemas[_list(name)] = {
                "type": "array",
                "items": {"$ref": _ref("schemas", _row(name))},
                "description": f"Rows of `{resource.table}` ordered by `{resource.key.name}`.",
            }
            parameters[_after(name)] = _after_parameter(resource)
            parameters[_id(name)] = _id_parameter(resource)
            self._resource_paths(name, resource)
        self._probe_paths()
        components: Json = {
            "schemas": schemas,
            "responses": self.responses,
            "parameters": parameters,
            "headers": _headers(),
        }
        if self.protected:
            components["securitySchemes"] = {
                scheme: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from the service's token file.",
                }
                for scheme in sorted(set(self.protected.values()))
            }
        return {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "cm-api",
                "version": __version__,
                "summary": "The operations dashboard's JSON API over MySQL/MariaDB tables.",
                "description": _DESCRIPTION,
            },
            "tags": [
                {"name": "data", "description": "The configured tables, read through a cache."},
                {"name": "probes", "description": "Kubernetes liveness and readiness."},
                {"name": "metrics", "description": "Prometheus exposition."},
                {"name": "meta", "description": "This document."},
            ],
            "paths": self.paths,
            "components": components,
        }

    def _resource_paths(self, name: str, resource: Resource) -> None:
        list_parameters = [
            {"$ref": _ref("parameters", "limit")},
            {"$ref": _ref("parameters", _after(name))},
            {"$ref": _ref("parameters", "If-None-Match")},
        ]
        list_responses = {
            "200": _cached_ok(f"Rows of `{resource.table}`.", _list(name), link=True),
            "304": _not_modified(link=True),
            "400": {"$ref": _ref("responses", "BadRequest")},
            "500": {"$ref": _ref("responses", "InternalError")},
            "503": {"$ref": _ref("responses", "ServiceUnavailable")},
        }
        summary = f"List `{resource.table}` rows, a keyset page with `limit`."
        # Operation ids are "<resource>.<what>": a table name holds no dot, so no two resources'
        # ids can collide, whatever their names.
        for path, what in ((f"/{name}/", "list"), (f"/{name}", "list_no_slash")):
            self._add(
                path,
                operation_id=f"{name}.{what}",
                tag="data",
                summary=summary,
                parameters=list_parameters,
                responses=list_responses,
            )
        self._add(
            f"/{name}/{{id}}",
            operation_id=f"{name}.get",
            tag="data",
            summary=f"One `{resource.table}` row by `{resource.key.name}`; no query parameters.",
            parameters=[
                {"$ref": _ref("parameters", _id(name))},
                {"$ref": _ref("parameters", "If-None-Match")},
            ],
            responses={
                "200": _cached_ok(f"The `{resource.table}` row.", _row(name), link=False),
                "304": _not_modified(link=False),
                "400": {"$ref": _ref("responses", "BadRequest")},
                "404": {"$ref": _ref("responses", "NotFound")},
                "500": {"$ref": _ref("responses", "InternalError")},
                "503": {"$ref": _ref("responses", "ServiceUnavailable")},
            },
        )

    def _probe_paths(self) -> None:
        no_store = {
            "X-Request-ID": _header_ref("RequestId"),
            "Cache-Control": _header_ref("CacheControlNoStore"),
        }
        internal = {"$ref": _ref("responses", "InternalError")}
        self._add(
            "/livez",
            operation_id="livez",
            tag="probes",
            summary="Liveness: the process and its event loop answer; never touches the database.",
            parameters=[],
            responses={"200": _json_response("Alive.", "Livez", no_store), "500": internal},
        )
        self._add(
            "/readyz",
            operation_id="readyz",
            tag="probes",
            summary="Readiness: schema verified at start-up, no shutdown. Database and pool "
            "trouble shows as degraded checks, not as 503; never waits for the database.",
            parameters=[
                {
                    "name": "verbose",
                    "in": "query",
                    "required": False,
                    "allowEmptyValue": True,
                    "description": "Present (any value): add each check to the answer.",
                    "schema": {"type": "string"},
                }
            ],
            responses={
                "200": _json_response("Ready to serve.", "Ready", no_store),
                "500": internal,
                "503": _json_response(
                    "Not ready: shutdown has begun.",
                    "NotReady",
                    {**no_store, "Retry-After": _header_ref("RetryAfter")},
                ),
            },
        )
        text = {"schema": {"type": "string"}}
        self._add(
            "/metrics",
            operation_id="metrics",
            tag="metrics",
            summary="Prometheus metrics: text format, or OpenMetrics when the Accept header asks.",
            parameters=[],
            responses={
                "200": {
                    "description": "The metrics of this replica.",
                    "headers": {"X-Request-ID": _header_ref("RequestId")},
                    "content": {"text/plain": text, "application/openmetrics-text": text},
                },
                "500": internal,
            },
        )
        validators = {
            "X-Request-ID": _header_ref("RequestId"),
            "ETag": _header_ref("ETag"),
            "Cache-Control": _header_ref("CacheControlRevalidate"),
        }
        self._add(
            PATH,
            operation_id="openapi",
            tag="meta",
            summary="This OpenAPI 3.1 document.",
            parameters=[{"$ref": _ref("parameters", "If-None-Match")}],
            responses={
                "200": {
                    "description": "The document.",
                    "headers": validators,
                    "content": {JSON: {"schema": {"type": "object"}}},
                },
                "304": {"description": "Unchanged since the given ETag.", "headers": validators},
                "500": internal,
            },
        )

    def _add(
        self,
        path: str,
        *,
        operation_id: str,
        tag: str,
        summary: str,
        parameters: list[Json],
        responses: Json,
    ) -> None:
        """GET and HEAD on `path` (HEAD: the same answers without their bodies)."""
        get: Json = {
            "operationId": operation_id,
            "tags": [tag],
            "summary": summary,
            "parameters": copy.deepcopy(parameters),
            "responses": copy.deepcopy(responses),
        }
        if not parameters:
            del get["parameters"]
        scheme = self.protected.get(tag)
        if scheme is not None:
            get["security"] = [{scheme: []}]
            get["responses"]["401"] = {"$ref": _ref("responses", "Unauthorized")}
            get["responses"] = dict(sorted(get["responses"].items()))
        head = copy.deepcopy(get)
        head["operationId"] = f"{operation_id}.head"
        head["summary"] = f"{summary} Headers only."
        head["responses"] = {
            status: self._without_body(response) for status, response in get["responses"].items()
        }
        self.paths[path] = {"get": get, "head": head}

    def _without_body(self, response: Json) -> Json:
        ref = response.get("$ref")
        if ref is not None:
            response = self.responses[ref.rsplit("/", 1)[1]]
        return {key: copy.deepcopy(value) for key, value in response.items() if key != "content"}


def row_schema(resource: Resource) -> Json:
    """A row object of `resource`: every exposed column, nothing else."""
    described = {column.name: column for column in resource.described}
    properties: Json = {}
    for name in resource.columns:
        column = described.get(name)
        properties[name] = {} if column is None else column_schema(column)
    return {
        "type": "object",
        "description": f"A row of `{resource.table}`, keyed by `{resource.key.name}`.",
        "properties": properties,
        "required": list(resource.columns),
        "additionalProperties": False,
    }


def column_schema(column: ColumnInfo) -> Json:
    """The JSON schema of one column's values as encoding.py writes them."""
    schema = _value_schema(column)
    if schema is None:
        # A type this document does not know: any JSON value rather than a wrong promise.
        return {"description": f"{column.column_type}: not described."}
    schema["x-mysql-type"] = column.column_type
    if column.nullable:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    return schema


def _value_schema(column: ColumnInfo) -> Json | None:
    data_type = column.data_type
    if data_type in INTEGER_TYPES:
        low, high = _integer_range(column)
        return {"type": "integer", "minimum": low, "maximum": high}
    if data_type in ("decimal", "numeric"):
        pattern = _decimal_pattern(column.column_type)
        return {"type": "string", "format": "decimal", "pattern": pattern}
    if data_type == "enum":
        members = [m.replace("''", "'") for m in _ENUM_MEMBER.findall(column.column_type)]
        return {"type": "string", "enum": members}
    if data_type in ("char", "varchar") and column.max_length is not None:
        return {"type": "string", "maxLength": column.max_length}
    return _fixed_schema(data_type)


def _fixed_schema(data_type: str) -> Json | None:
    """The schema of a type whose values have one shape whatever its declaration."""
    if data_type in _TEXT_TYPES or data_type == "set":  # a SET: its members joined by commas
        return {"type": "string"}
    if data_type in _BYTES_TYPES:
        return {"type": "string", "contentEncoding": "base64"}
    fixed: dict[str, Json] = {
        "float": {"type": "number"},
        "double": {"type": "number"},
        "real": {"type": "number"},
        "year": {"type": "integer", "minimum": 0, "maximum": 2155},
        "date": {"type": "string", "format": "date"},
        "datetime": {
            "type": "string",
            "pattern": _DATETIME_PATTERN,
            "description": "ISO 8601 date and time without an offset (the database's time).",
        },
        "time": {"type": "string", "pattern": _TIME_PATTERN},
    }
    fixed["timestamp"] = fixed["datetime"]
    schema = fixed.get(data_type)
    return None if schema is None else dict(schema)


def _integer_range(column: ColumnInfo) -> tuple[int, int]:
    bits = _INTEGER_BITS.get(column.data_type, 64)
    declared = column.column_type.lower()
    if "unsigned" in declared or "zerofill" in declared:  # ZEROFILL implies UNSIGNED
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _decimal_pattern(declared: str) -> str:
    """DECIMAL(p,s) arrives with exactly s fraction digits, at most p - s integer digits."""
    match = _DECIMAL_TYPE.match(declared)
    if match is None:
        return r"^-?[0-9]+(\.[0-9]+)?$"
    precision, scale = int(match[1]), int(match[2])
    sign = "" if "unsigned" in declared.lower() else "-?"
    fraction = rf"\.[0-9]{{{scale}}}" if scale else ""
    return rf"^{sign}[0-9]{{1,{max(1, precision - scale)}}}{fraction}$"


def _after_parameter(resource: Resource) -> Json:
    schema: Json
    if resource.integer_key:
        # Any integer a key column can hold, whatever this column's own range: a page after
        # a value beyond it is simply empty (or everything).
        schema = {"type": "integer", "minimum": INTEGER_KEY_MIN, "maximum": INTEGER_KEY_MAX}
    else:
        schema = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_KEY}
    return {
        "name": "after",
        "in": "query",
        "required": False,
        "description": f"Only rows whose `{resource.key.name}` is greater (keyset paging).",
        "schema": schema,
    }


def _id_parameter(resource: Resource) -> Json:
    key = resource.key
    schema: Json
    if resource.integer_key:
        # The column's range: any other id is answered 404 like an absent row.
        low, high = _integer_range(key)
        schema = {"type": "integer", "minimum": low, "maximum": high}
    else:
        schema = {"type": "string", "minLength": 1, "maxLength": key.max_length or MAX_TEXT_KEY}
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "description": f"The row's `{key.name}`; an id no row can have is a 404.",
        "schema": schema,
    }


def _common_parameters(max_page_size: int) -> Json:
    return {
        "limit": {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": 'At most this many rows; a `Link: rel="next"` header when more follow.',
            "schema": {"type": "integer", "minimum": 1, "maximum": max_page_size},
        },
        "If-None-Match": {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "An ETag from an earlier answer: 304 while the answer is unchanged.",
            "schema": {"type": "string"},
        },
    }


def _common_schemas() -> Json:
    check = {
        "type": "object",
        "required": ["name", "status", "message"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "enum": list(CHECKS)},
            "status": {"type": "string", "enum": list(STATUSES)},
            "message": {"type": "string"},
        },
    }
    checks = {
        "type": "array",
        "items": {"$ref": _ref("schemas", "ReadinessCheck")},
        "description": "With ?verbose only.",
    }
    return {
        "Error": {
            "type": "object",
            "description": "The envelope of every error answer.",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "additionalProperties": False,
                    "properties": {
                        "code": {"type": "string", "description": "Stable, machine-readable."},
                        "message": {"type": "string", "description": "For people; no internals."},
                    },
                }
            },
        },
        "Livez": {
            "type": "object",
            "required": ["status"],
            "additionalProperties": False,
            "properties": {"status": {"const": "alive"}},
        },
        "ReadinessCheck": check,
        "Ready": {
            "type": "object",
            "required": ["status"],
            "additionalProperties": False,
            "properties": {"status": {"const": "ready"}, "checks": checks},
        },
        "NotReady": {
            "type": "object",
            "required": ["status", "error"],
            "additionalProperties": False,
            "properties": {
                "status": {"const": "not_ready"},
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "additionalProperties": False,
                    "properties": {
                        "code": {"const": "not_ready"},
                        "message": {"type": "string"},
                    },
                },
                "checks": checks,
            },
        },
    }


def _error_responses() -> Json:
    retry = {"Retry-After": _header_ref("RetryAfter")}
    return {
        "BadRequest": _error_response(
            "A malformed, unknown or repeated query parameter.", ["bad_request"]
        ),
        "NotFound": _error_response(
            "No such row; also the answer, with any method, on a path that is no route.",
            ["not_found"],
        ),
        "MethodNotAllowed": _error_response(
            "Any method but GET and HEAD on a documented path.",
            ["method_not_allowed"],
            {"Allow": _header_ref("Allow")},
        ),
        "InternalError": _error_response(
            "The database rejected the query, or an unexpected error; no internals shown.",
            ["database_error", "internal_error"],
        ),
        "ServiceUnavailable": _error_response(
            "The database cannot answer now and no stored answer may stand in; retry later.",
            ["database_unavailable"],
            retry,
        ),
    }


def _error_response(description: str, codes: list[str], headers: Json | None = None) -> Json:
    return {
        "description": description,
        "headers": {
            "X-Request-ID": _header_ref("RequestId"),
            "Cache-Control": _header_ref("CacheControlNoStore"),
            **(headers or {}),
        },
        "content": {
            JSON: {
                "schema": {
                    "allOf": [
                        {"$ref": _ref("schemas", "Error")},
                        {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
                    ]
                }
            }
        },
    }


def _cache_headers(*, link: bool) -> Json:
    headers = {
        "X-Request-ID": _header_ref("RequestId"),
        "ETag": _header_ref("ETag"),
        "Cache-Control": _header_ref("CacheControlRevalidate"),
        "Vary": _header_ref("Vary"),
        "Age": _header_ref("Age"),
        "X-Cache": _header_ref("XCache"),
        "Cache-Status": _header_ref("CacheStatus"),
    }
    if link:
        headers["Link"] = _header_ref("Link")
    return headers


def _cached_ok(description: str, schema: str, *, link: bool) -> Json:
    return {
        "description": f"{description} Fresh, or stale within the configured windows.",
        "headers": {
            **_cache_headers(link=link),
            "Content-Encoding": _header_ref("ContentEncoding"),
        },
        "content": {JSON: {"schema": {"$ref": _ref("schemas", schema)}}},
    }


def _not_modified(*, link: bool) -> Json:
    return {
        "description": "The answer still has the ETag given in If-None-Match.",
        "headers": _cache_headers(link=link),
    }


def _json_response(description: str, schema: str, headers: Json) -> Json:
    return {
        "description": description,
        "headers": headers,
        "content": {JSON: {"schema": {"$ref": _ref("schemas", schema)}}},
    }


def _headers() -> Json:
    def header(description: str, schema: Json, *, required: bool = True) -> Json:
        return {"description": description, "required": required, "schema": schema}

    return {
        "RequestId": header(
            "The request's id (a well-formed incoming X-Request-ID, else a new one).",
            {"type": "string", "pattern": _REQUEST_ID_PATTERN},
        ),
        "ETag": header(
            "Strong validator of the body (a gzip copy has its own).",
            {"type": "string", "pattern": '^"[A-Za-z0-9_-]+"$'},
        ),
        "CacheControlRevalidate": header(
            "Clients may keep the answer but revalidate it each time.", {"const": "no-cache"}
        ),
        "CacheControlNoStore": header("An answer about this instant.", {"const": "no-store"}),
        "Vary": header("The answer differs by content coding.", {"type": "string"}),
        "Age": header(
            "Whole seconds since the answer was loaded.", {"type": "integer", "minimum": 0}
        ),
        "XCache": header(
            "How the cache answered.",
            {"type": "string", "enum": [outcome.value for outcome in Outcome]},
        ),
        "CacheStatus": header(
            "RFC 9211 Cache-Status.",
            {"type": "string", "pattern": f"^{re.escape(CACHE_NAME)}; (hit|fwd=(miss|stale))"},
        ),
        "Link": header(
            "RFC 8288 link to the next page; present when more rows follow.",
            {"type": "string", "pattern": '^<[^>]+>; rel="next"$'},
            required=False,
        ),
        "ContentEncoding": header(
            "gzip when Accept-Encoding admits it.", {"const": "gzip"}, required=False
        ),
        "RetryAfter": header("Seconds to wait before retrying.", {"type": "integer", "minimum": 0}),
        "Allow": header("The methods this path serves.", {"const": "GET,HEAD"}),
        "WWWAuthenticate": header("RFC 6750 bearer challenge.", {"type": "string"}),
    }


def _ref(kind: str, name: str) -> str:
    return f"#/components/{kind}/{name}"


def _header_ref(name: str) -> Json:
    return {"$ref": _ref("headers", name)}


def _component(name: str) -> str:
    # Component names may hold only these characters (OpenAPI 3.1 section 4.8.7.1).
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _row(name: str) -> str:
    return _component(f"{name}.row")


def _list(name: str) -> str:
    return _component(f"{name}.list")


def _after(name: str) -> str:
    return _component(f"{name}.after")


def _id(name: str) -> str:
    return _component(f"{name}.id")


_DESCRIPTION: Final = """\
Serves the configured tables as JSON: `/{table}/` (also without the trailing slash) lists every
row ordered by the primary key, or a keyset page with `limit` and `after`; `/{table}/{id}` is
one row. DECIMAL values are strings (exact), DATETIME and DATE ISO 8601, binary base64, NULL null.

Data answers come through a read-through cache: a strong `ETag`, `Cache-Control: no-cache`,
`Age`, `X-Cache` and `Cache-Status`; `If-None-Match` gets 304 while nothing changed. When the
database fails, the last good answer is served for a while (`X-Cache: STALE`), then 503 with
`Retry-After`.

Every error is `{"error": {"code": "...", "message": "..."}}`: 400 for an unknown, repeated or
malformed query parameter, 404 for a missing row and for any path that is no route, 405 with
`Allow: GET,HEAD` for any other method on a documented path, 500 without internals, 503 with
`Retry-After`. Every answer carries `X-Request-ID`.
"""
