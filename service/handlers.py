"""Thin HTTP handlers for the resources: parse the request into a cache key, ask the cache, and
on a miss fetch and encode once."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from aiohttp import web

from .cache import Document
from .encoding import JsonArray, TooLarge, encode, rows_to_objects
from .errors import BadRequest, NotFound, ResultTooLarge
from .keys import CACHE, CATALOG, DATABASE, SETTINGS
from .longpoll import PREFER, respond
from .resources import CACHE_BUSTER, Page
from .responses import cached_response

WHOLE = Page()


def _is_utf8(encoded: str) -> bool:
    """Whether percent-encoded `encoded` stands for UTF-8 text. yarl decodes what is not into
    something else: in a path it keeps the escapes as text ("%FF", as "%25FF" would give), in
    a query it makes U+FFFD of them; either would reach the database as a key never sent."""
    try:
        unquote_to_bytes(encoded).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class ResourceHandlers:
    """The list and item handlers of one configured resource."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._whole_key = (name, "list", WHOLE.normalised())

    async def list(self, request: web.Request) -> web.Response:
        app = request.app
        resource = app[CATALOG][self.name]
        if request.query_string:
            # Raw bytes are refused by aiohttp's parser: only escapes can be other than UTF-8.
            encoded = request.rel_url.raw_query_string
            if "%" in encoded and not _is_utf8(encoded):
                raise BadRequest("the query string is not UTF-8 once percent-decoded")
            settings = app[SETTINGS]
            page = resource.parse_page(
                request.query.items(), settings.max_page_size, settings.filter_max_values
            )
            key = (self.name, "list", page.normalised())
        else:  # the dashboard's own request: skip parsing on the hot path
            page, key = WHOLE, self._whole_key
        cache = app[CACHE]
        hit = cache.fresh(key)
        if hit is not None and PREFER not in request.headers:
            return cached_response(request, hit)

        async def load() -> Document:
            sql, args = resource.list_query(page)
            settings = app[SETTINGS]
            rows = JsonArray(resource.columns, page.limit, max_bytes=settings.max_list_bytes)
            try:
                await app[DATABASE].fetch_chunks(sql, args, rows.add, resource=self.name)
            except TooLarge as exc:
                raise ResultTooLarge(
                    f"this list is larger than MAX_LIST_BYTES ({exc.max_bytes} bytes of JSON, "
                    f"reached after {exc.rows} rows); ask for pages with ?limit=N (at most "
                    f"{settings.max_page_size}) and follow each answer's Link header"
                ) from None
            last = rows.last if rows.more else None
            link = resource.next_link(page, last, f"/{self.name}/")
            return Document(await rows.finish(), (("Link", link),) if link is not None else ())

        return await respond(request, key, await cache.get(key, load), load)

    async def item(self, request: web.Request) -> web.Response:
        app = request.app
        resource = app[CATALOG][self.name]
        name = next((n for n in request.query if n != CACHE_BUSTER), None)
        if name is not None:
            raise BadRequest(
                f"unknown query parameter {name[:64]!r}; items take none but the cache-buster "
                f"{CACHE_BUSTER!r}"
            )
        raw = request.match_info["id"]
        # The item route matched, so the id is the last segment of the encoded path.
        encoded = request.rel_url.raw_path.rpartition("/")[2]
        key = resource.parse_key(raw) if "%" not in encoded or _is_utf8(encoded) else None
        if key is None:
            raise NotFound(f"no {self.name} with id {raw[:64]!r}")

        cache, cache_key = app[CACHE], (self.name, "item", key)
        hit = cache.fresh(cache_key)
        if hit is not None and PREFER not in request.headers:
            return cached_response(request, hit)

        async def load() -> Document:
            rows = await app[DATABASE].fetch(*resource.one_query(key), resource=self.name)
            if not rows:
                raise NotFound(f"no {self.name} with id {str(key)[:64]!r}")
            return Document(encode(rows_to_objects(resource.columns, rows)[0]))

        return await respond(request, cache_key, await cache.get(cache_key, load), load)
