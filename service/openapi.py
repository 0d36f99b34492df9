"""The OpenAPI 3.1 document of the API, served at GET /openapi.json.

Built once per app from the catalog start-up read, so each row schema describes this
deployment's columns. Other facts come from their owners: statuses and error codes (errors.py),
methods (routing.py), readiness checks (health.py), request ids (request_id.py), cache outcomes
(cache.py). tests/test_openapi.py checks real answers against it; .ci/fuzz runs schemathesis.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web

from . import __version__, errors
from .cache import Outcome, entity_tag
from .encoding import encode
from .filters import ColumnFilter
from .health import ALIVE, CHECKS, NOT_READY, READY, STATUSES
from .keys import CATALOG, OPENAPI, SETTINGS
from .request_id import HEADER as REQUEST_ID
from .request_id import PATTERN as REQUEST_ID_PATTERN
from .resources import (
    CACHE_BUSTER,
    INTEGER_KEY_MAX,
    INTEGER_KEY_MIN,
    MAX_TEXT_KEY,
    Catalog,
    Resource,
)
from .responses import CACHE_NAME, JSON, REVALIDATE, not_modified
from .routing import ALLOWED, NO_STORE
from .schema import INTEGER_TYPES, ColumnInfo
from .settings import Settings

Json = dict[str, Any]

OPENAPI_VERSION: Final = "3.1.1"
PATH: Final = "/openapi.json"
# The security schemes of API_TOKENS_FILE and METRICS_TOKENS_FILE.
DATA_SCHEME: Final = "api_token"
METRICS_SCHEME: Final = "metrics_token"

_TEXT: Final = "char varchar tinytext text mediumtext longtext json set"  # a SET: "a,b"
# The driver returns these as bytes, which encoding.py writes as base64.
_BYTES: Final = (
    "binary varbinary tinyblob blob mediumblob longblob bit geometry point linestring polygon"
    " multipoint multilinestring multipolygon geometrycollection geomcollection"
)
# How orjson writes a datetime (microseconds only when not zero), then its offset if any: a
# naive one has none, which RFC 3339 (format date-time) requires.
_WALL: Final = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?"
_DATETIME: Final = f"^{_WALL}$"
_UTC: Final = f"^{_WALL}Z$"
_OFFSET: Final = f"^{_WALL}(Z|[+-][0-9]{{2}}:[0-9]{{2}})$"
# A value with a zero year, month or day (0000-00-00 00:00:00) is no datetime: the drivers
# hand on the server's text (timezones.py).
_NO_DATE: Final = (
    r"^([0-9]{4}-[0-9]{2}-00|[0-9]{4}-00-[0-9]{2}|0000-[0-9]{2}-[0-9]{2})"
    r" [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?$"
)
_TIME: Final = r"^-?[0-9]{2,3}:[0-5][0-9]:[0-5][0-9](\.[0-9]{6})?$"  # -838:59:59 to 838:59:59
# Each error answer: the exceptions whose codes it carries (its status is theirs), what it
# means here, and the headers routing.py adds to it.
_ERRORS: Final = (
    (
        (errors.BadRequest, errors.ResultTooLarge),
        "A malformed, unknown or repeated query parameter (a filter may repeat), a filter on a "
        "column that cannot filter; or a whole list larger than MAX_LIST_BYTES "
        "(result_too_large: ask for pages with `limit`).",
        (),
    ),
    ((errors.Unauthorized,), "No valid bearer token.", ("WWW-Authenticate",)),
    ((errors.NotFound,), "No such row; also any method on a path that is no route.", ()),
    ((errors.MethodNotAllowed,), f"Any method but {ALLOWED} on a documented path.", ("Allow",)),
    ((errors.ServiceError, errors.DatabaseQueryError), "Unexpected, or a query rejected.", ()),
    ((errors.DatabaseUnavailable,), "The database cannot answer now.", ("Retry-After",)),
)
_NO_STORE: Final = (REQUEST_ID, "Cache-Control.no-store")
_VALIDATORS: Final = (REQUEST_ID, "ETag", "Cache-Control.revalidate")
_DESCRIPTION: Final = (
    "The configured tables as JSON through a read-through cache: `/{table}/` lists rows by "
    "primary key (keyset pages with `limit` and `after`, filters on indexed columns), "
    "`/{table}/{id}` is one row; `_` (a cache-buster) is accepted and ignored everywhere; errors "
    'are `{"error": {"code": ..., "message": ...}}`. The README (Endpoints, Filters, Caching) '
    "says more."
)


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
    s = app[SETTINGS]
    document = openapi_document(
        s, app[CATALOG], bearer=bool(s.api_tokens), metrics_bearer=bool(s.metrics_tokens)
    )
    app[OPENAPI] = ServedDocument.of(document)
    yield


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json: the document, revalidated by its ETag like the data routes."""
    served = request.app[OPENAPI]
    headers = {"ETag": f'"{served.tag}"', "Cache-Control": REVALIDATE}
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
    schemes = {"data": DATA_SCHEME, "meta": DATA_SCHEME} if bearer else {}
    if metrics_bearer:
        schemes["metrics"] = METRICS_SCHEME
    components: Json = {
        "schemas": _fixed_schemas(),
        "responses": _error_responses(),
        "parameters": _fixed_parameters(settings.max_page_size),
        "headers": _header_components(),
    }
    gets: dict[str, _Get] = {}
    for name, resource in catalog.resources.items():
        gets |= _resource(name, resource, components, settings)
    gets |= _service_gets()
    if schemes:
        scheme = {"type": "http", "scheme": "bearer", "description": "From a token file."}
        components["securitySchemes"] = dict.fromkeys(sorted(set(schemes.values())), scheme)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "cm-api", "version": __version__, "description": _DESCRIPTION},
        "paths": {path: get.item(schemes.get(get.tag), components) for path, get in gets.items()},
        "components": components,
    }


@dataclass(frozen=True)
class _Get:
    """A documented GET; also the other methods of routing.ALLOWED, HEAD without bodies."""

    id: str
    tag: str
    summary: str
    responses: Json  # besides the 500 (and 401) every operation has
    parameters: tuple[str, ...] = ()  # names of parameter components

    def item(self, scheme: str | None, components: Json) -> Json:
        """The path item; `scheme`: the security scheme the operations require."""
        responses = self.responses | _errors(errors.ServiceError)
        if scheme is not None:
            responses |= _errors(errors.Unauthorized)
        item: Json = {}
        for method in ALLOWED.lower().split(","):
            head = method == "head"
            answers = {s: _bodiless(r, components) if head else r for s, r in responses.items()}
            item[method] = {
                "operationId": f"{self.id}.head" if head else self.id,
                "tags": [self.tag],
                "summary": f"{self.summary} Headers only." if head else self.summary,
                "responses": dict(sorted(answers.items())),
            }
            if self.parameters:
                item[method]["parameters"] = [_ref("parameters", p) for p in self.parameters]
            if scheme is not None:
                item[method]["security"] = [{scheme: []}]
        return item


def _resource(
    name: str, resource: Resource, components: Json, settings: Settings
) -> dict[str, _Get]:
    """Adds one resource's schemas and parameters to `components`; its operations by path."""
    row, rows, after, key = (
        _component(f"{name}.{part}") for part in ("row", "list", "after", "id")
    )
    table, key_name = resource.table, resource.key.name
    components["schemas"] |= {
        row: row_schema(resource, settings.db_datetime_zone),
        rows: {"type": "array", "items": _ref("schemas", row), "description": f"`{table}` rows"},
    }
    components["parameters"] |= dict(zip((after, key), _key_parameters(resource), strict=True))
    filters = {
        _component(f"{name}.filter.{f.name}"): _filter_parameter(f, settings.filter_max_values)
        for f in resource.filters
    }
    components["parameters"] |= filters
    fails = _errors(errors.BadRequest, errors.DatabaseUnavailable)
    listing = _cached(rows, link=True) | fails
    by = ", ".join(f"`{f.name}`" for f in resource.filters) or "none"
    many = f"List `{table}` rows by `{key_name}`, a keyset page with `limit`; filters: {by}."
    one = f"One `{table}` row by `{key_name}`; no query parameters but `{CACHE_BUSTER}`."
    page = ("limit", after, *filters, CACHE_BUSTER, "If-None-Match", "Prefer")
    # Operation ids are "<resource>.<what>": a table name holds no dot, so none can collide.
    return {
        f"/{name}/": _Get(f"{name}.list", "data", many, listing, page),
        f"/{name}": _Get(f"{name}.list_no_slash", "data", many, listing, page),
        f"/{name}/{{id}}": _Get(
            f"{name}.get",
            "data",
            one,
            _cached(row, link=False) | fails | _errors(errors.NotFound),
            (key, CACHE_BUSTER, "If-None-Match", "Prefer"),
        ),
    }


def _service_gets() -> dict[str, _Get]:
    """The routes that are no resource: the probes, the metrics and this document."""
    alive = {"200": _response("Alive.", _NO_STORE, "Livez")}
    ready = {
        "200": _response("Ready.", _NO_STORE, "Ready"),
        "503": _response("Shutdown has begun.", (*_NO_STORE, "Retry-After"), "NotReady"),
    }
    media = ("text/plain", "application/openmetrics-text")
    metrics = {"200": _response("This replica's.", (REQUEST_ID,), {"type": "string"}, media)}
    document = {
        "200": _response("The document.", _VALIDATORS, {"type": "object"}),
        "304": _response("Unchanged since the given ETag.", _VALIDATORS),
    }
    live = "Liveness: the process and its event loop answer; never touches the database."
    readiness = "Readiness: started, schema verified, not draining; the database is a check."
    scrape = "Prometheus metrics: text format, or OpenMetrics when the Accept header asks."
    return {
        "/livez": _Get("livez", "probes", live, alive),
        "/readyz": _Get("readyz", "probes", readiness, ready, ("verbose",)),
        "/metrics": _Get("metrics", "metrics", scrape, metrics),
        PATH: _Get("openapi", "meta", "This document.", document, ("If-None-Match",)),
    }


def row_schema(resource: Resource, datetime_zone: str = "") -> Json:
    """A row object of `resource`: every exposed column, nothing else."""
    described = {column.name: column for column in resource.described}
    properties = {
        name: column_schema(described[name], datetime_zone=datetime_zone)
        if name in described
        else {}
        for name in resource.columns
    }
    description = f"A row of `{resource.table}`, keyed by `{resource.key.name}`."
    return _object(properties) | {"description": description}


def column_schema(column: ColumnInfo, *, datetime_zone: str = "") -> Json:
    """The JSON schema of one column's values as encoding.py writes them; `datetime_zone`:
    DB_DATETIME_ZONE."""
    data_type = column.data_type
    if data_type in INTEGER_TYPES:
        schema = _integer(*column.integer_range())
    elif data_type in ("decimal", "numeric"):
        schema = {"type": "string", "format": "decimal", "pattern": _decimal_pattern(column)}
    elif data_type == "enum":
        schema = {"type": "string", "enum": column.members()}
    elif data_type in ("char", "varchar") and column.max_length is not None:
        schema = {"type": "string", "maxLength": column.max_length}
    elif data_type in ("datetime", "timestamp"):
        schema = _datetime_schema(data_type, datetime_zone)
    elif (fixed := _fixed_schema(data_type)) is not None:
        schema = fixed
    else:
        # A type this document does not know: any JSON value rather than a wrong promise.
        return {"description": f"{column.column_type}: not described."}
    schema["x-mysql-type"] = column.column_type
    if column.nullable:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    return schema


def _fixed_schema(data_type: str) -> Json | None:
    """The schema of a type whose values have one shape whatever its declaration."""
    if data_type in _TEXT.split():
        return {"type": "string"}
    if data_type in _BYTES.split():
        return {"type": "string", "contentEncoding": "base64"}
    return {
        "float": {"type": "number"},
        "double": {"type": "number"},
        "real": {"type": "number"},
        "year": _integer(0, 2155),
        "date": {"type": "string", "format": "date"},
        "time": {"type": "string", "pattern": _TIME},
    }.get(data_type)


def _datetime_schema(data_type: str, datetime_zone: str) -> Json:
    """TIMESTAMP in UTC; DATETIME in `datetime_zone`, or without an offset (timezones.py)."""
    if data_type == "timestamp":
        time: Json = {"format": "date-time", "pattern": _UTC}
        description = "RFC 3339 in UTC (Z)"
    elif datetime_zone:
        time = {"format": "date-time", "pattern": _OFFSET}
        description = f"RFC 3339: the wall time in {datetime_zone} with that instant's offset"
    else:
        time = {"pattern": _DATETIME}
        description = "Without an offset: the wall time as stored, in no known zone"
    return {
        "type": "string",
        "anyOf": [time, {"pattern": _NO_DATE}],
        "description": f"{description}; or a zero date such as 0000-00-00 00:00:00.",
    }


def _decimal_pattern(column: ColumnInfo) -> str:
    """DECIMAL(p,s) arrives with exactly s fraction digits, at most p - s integer digits."""
    digits = column.decimal_digits()
    if digits is None:
        return r"^-?[0-9]+(\.[0-9]+)?$"
    precision, scale = digits
    sign = "" if column.unsigned else "-?"
    fraction = rf"\.[0-9]{{{scale}}}" if scale else ""
    return rf"^{sign}[0-9]{{1,{max(1, precision - scale)}}}{fraction}$"


def _key_parameters(resource: Resource) -> tuple[Json, Json]:
    """`after` takes any integer a key column can hold (a page after a value beyond this
    column's range is just empty or everything); `id` only the column's own range (else 404)."""
    key = resource.key
    if resource.integer_key:
        after, one = _integer(INTEGER_KEY_MIN, INTEGER_KEY_MAX), _integer(*key.integer_range())
    else:
        after, one = _text(MAX_TEXT_KEY), _text(key.max_length or MAX_TEXT_KEY)
    greater = f"Only rows whose `{key.name}` is greater (keyset paging)."
    return (
        _parameter("after", "query", greater, after),
        _parameter("id", "path", f"The row's `{key.name}`; one no row can have: 404.", one),
    )


def _filter_parameter(column_filter: ColumnFilter, max_values: int) -> Json:
    """A filter: the parameter repeated (form, exploded) once per value, any of which a row's
    column may equal; each value exactly as the server reads it (filters.py)."""
    name = column_filter.name
    description = (
        f"Only rows whose `{name}` equals this value; repeated (up to {max_values} times): "
        "equals any of the values."
    )
    schema = {"type": "array", "items": dict(column_filter.schema), "maxItems": max_values}
    return _parameter(name, "query", description, schema) | {"style": "form", "explode": True}


def _fixed_parameters(max_page_size: int) -> Json:
    more = 'At most this many rows; a `Link: rel="next"` header when more follow.'
    etag = "An ETag from an earlier answer: 304 while the answer is unchanged."
    verbose = "Present, with any value or none: each check in the answer."
    wait = (
        "`wait=N` (RFC 7240) with a current If-None-Match: held until the data changes (200) or "
        "N seconds pass (304), at most LONG_POLL_MAX_SECONDS; other preferences are ignored."
    )
    buster = (
        "A cache-buster (jQuery's `cache: false` adds one): any value, ignored; never part of "
        "the cache key, so it does not cost a query."
    )
    return {
        "limit": _parameter("limit", "query", more, _integer(1, max_page_size)),
        CACHE_BUSTER: _parameter(CACHE_BUSTER, "query", buster, {"type": "string"}),
        "If-None-Match": _parameter("If-None-Match", "header", etag, {"type": "string"}),
        "Prefer": _parameter("Prefer", "header", wait, {"type": "string"}),
        "verbose": _parameter("verbose", "query", verbose, {"type": "string"})
        | {"allowEmptyValue": True},
    }


def _fixed_schemas() -> Json:
    check = _object(
        {
            "name": {"enum": list(CHECKS)},
            "status": {"enum": list(STATUSES)},
            "message": {"type": "string"},
        }
    )
    checks = {"checks": {"type": "array", "items": check, "description": "With ?verbose."}}
    not_ready = _error_envelope({"const": NOT_READY})["properties"]
    return {
        "Livez": _object({"status": {"const": ALIVE}}),
        "Ready": _object({"status": {"const": READY}}, optional=checks),
        "NotReady": _object({"status": {"const": NOT_READY}, **not_ready}, optional=checks),
    }


def _header_components() -> Json:
    def header(schema: Json, description: str, *, required: bool = True) -> Json:
        return {"description": description, "required": required, "schema": schema}

    def pattern(regex: str) -> Json:
        return {"type": "string", "pattern": regex}

    cache_status = f"^{re.escape(CACHE_NAME)}; (hit|fwd=(miss|stale))"
    return {
        REQUEST_ID: header(pattern(f"^{REQUEST_ID_PATTERN}$"), "The incoming one, or a new one."),
        "ETag": header(pattern('^"[A-Za-z0-9_-]+"$'), "Strong validator."),
        "Cache-Control.revalidate": header({"const": REVALIDATE}, "Revalidate before each use."),
        "Cache-Control.no-store": header({"const": NO_STORE}, "An answer about this instant."),
        "Vary": header({"type": "string"}, "The answer differs by content coding."),
        "Age": header(_integer(0), "Whole seconds since the answer was loaded."),
        "X-Cache": header({"enum": [o.value for o in Outcome]}, "How the cache answered."),
        "Cache-Status": header(pattern(cache_status), "RFC 9211."),
        "Link": header(pattern('^<[^>]+>; rel="next"$'), "The next page.", required=False),
        "Content-Encoding": header({"const": "gzip"}, "When accepted.", required=False),
        "Preference-Applied": header(
            pattern("^wait=[0-9]+$"), "The wait (Prefer) this answer honoured.", required=False
        ),
        "Retry-After": header(_integer(0), "Seconds to wait before retrying."),
        "Allow": header({"const": ALLOWED}, "The methods this path serves."),
        "WWW-Authenticate": header({"type": "string"}, "RFC 6750 bearer challenge."),
    }


def _cached(schema: str, *, link: bool) -> Json:
    """The 200 and 304 answers of the read-through cache."""
    headers = (
        *_VALIDATORS,
        *("Vary", "Age", "X-Cache", "Cache-Status", "Preference-Applied"),
        *(["Link"] if link else []),
    )
    fresh = "Fresh, or stale within the configured windows."
    return {
        "200": _response(fresh, (*headers, "Content-Encoding"), schema),
        "304": _response("Unchanged since the given ETag.", headers),
    }


def _response(
    description: str,
    headers: tuple[str, ...],
    schema: Json | str | None = None,
    media: tuple[str, ...] = (JSON,),
) -> Json:
    """`headers`: header component names, as _headers takes them; `schema`: a JSON schema, or
    the name of a schema component."""
    response: Json = {"description": description, "headers": _headers(*headers)}
    if isinstance(schema, str):
        schema = _ref("schemas", schema)
    if schema is not None:
        response["content"] = {media_type: {"schema": schema} for media_type in media}
    return response


def _bodiless(response: Json, components: Json) -> Json:
    """`response` (or the component it refers to) without content: the answer to HEAD."""
    if "$ref" in response:
        response = components["responses"][response["$ref"].rsplit("/", 1)[1]]
    return {key: value for key, value in response.items() if key != "content"}


def _error_responses() -> Json:
    """One answer per error status, named by its reason phrase (NotFound, ...)."""
    return {
        _error_name(types[0]): _response(
            description,
            (*_NO_STORE, *headers),
            _error_envelope({"enum": [error.code for error in types]}),
        )
        for types, description, headers in _ERRORS
    }


def _error_envelope(code: Json) -> Json:
    return _object({"error": _object({"code": code, "message": {"type": "string"}})})


def _object(properties: Json, *, optional: Json | None = None) -> Json:
    """An object of exactly `properties` (all required) and `optional`."""
    return {
        "type": "object",
        "required": list(properties),
        "additionalProperties": False,
        "properties": properties | (optional or {}),
    }


def _parameter(name: str, where: str, description: str, schema: Json) -> Json:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema,
    }


def _integer(minimum: int, maximum: int | None = None) -> Json:
    schema: Json = {"type": "integer", "minimum": minimum}
    return schema if maximum is None else schema | {"maximum": maximum}


def _text(max_length: int) -> Json:
    return {"type": "string", "minLength": 1, "maxLength": max_length}


def _errors(*types: type[errors.ServiceError]) -> Json:
    return {str(error.status): _ref("responses", _error_name(error)) for error in types}


def _error_name(error: type[errors.ServiceError]) -> str:
    return HTTPStatus(error.status).phrase.replace(" ", "")  # BadRequest, NotFound, ...


def _headers(*names: str) -> Json:
    """References to header components; "Cache-Control.no-store" is a Cache-Control header."""
    return {name.partition(".")[0]: _ref("headers", name) for name in names}


def _ref(kind: str, name: str) -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def _component(name: str) -> str:
    # Component names may hold only these characters (OpenAPI 3.1 section 4.8.7.1).
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)
