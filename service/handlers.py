"""Thin HTTP handlers for the resources: parse the request, fetch, shape the response."""

from __future__ import annotations

from aiohttp import web

from .encoding import encode, rows_to_objects
from .errors import BadRequest, NotFound
from .keys import CATALOG, DATABASE, SETTINGS

JSON = "application/json"


class ResourceHandlers:
    """The list and item handlers of one configured resource."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def list(self, request: web.Request) -> web.Response:
        resource = request.app[CATALOG][self.name]
        page = resource.parse_page(request.query.items(), request.app[SETTINGS].max_page_size)
        sql, args = resource.list_query(page)
        rows = rows_to_objects(resource.columns, await request.app[DATABASE].fetch(sql, args))
        link = resource.next_link(page, rows, f"/{self.name}/")
        if page.limit is not None:
            del rows[page.limit :]
        response = web.Response(body=encode(rows), content_type=JSON)
        if link is not None:
            response.headers["Link"] = link
        return response

    async def item(self, request: web.Request) -> web.Response:
        resource = request.app[CATALOG][self.name]
        if request.query:
            name = next(iter(request.query))
            raise BadRequest(f"unknown query parameter {name[:64]!r}; items take none")
        raw = request.match_info["id"]
        key = resource.parse_key(raw)
        rows = [] if key is None else await request.app[DATABASE].fetch(*resource.one_query(key))
        if not rows:
            raise NotFound(f"no {self.name} with id {raw[:64]!r}")
        return web.Response(
            body=encode(rows_to_objects(resource.columns, rows)[0]), content_type=JSON
        )
