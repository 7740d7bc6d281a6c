"""``/static``: the widget and the browser client, compressed and cacheable.

* **Compressed** with gzip for clients that accept it (``widget.js`` is ~84 KB, ~20 KB gzipped).
  Only this mount is wrapped in Starlette's ``GZipMiddleware``: the streaming routes (SSE events,
  the OpenAI-compatible streams, the WebSocket) never pass through a compressor, which would hold
  back events until a compression block fills (``tests/test_static_files.py`` checks SSE still
  flushes per event when the client sends ``Accept-Encoding: gzip``).
* **Cacheable.** A URL with a version (``?v=<content hash>``, which the widget puts on
  ``chat-client.js``: ``static/build.py`` stamps it) never changes content, so browsers and CDNs
  may keep it for a year (``immutable``). Any other URL — ``widget.js`` itself, which brand sites
  embed by a fixed URL — is ``no-cache``: kept, but revalidated with its ``ETag`` (a 304 costs a
  round trip, no body), so a deploy reaches every page at once.
"""

from __future__ import annotations

from os import PathLike, stat_result
from urllib.parse import parse_qs

from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Scope

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# Smaller files are not worth a compressor's CPU and framing.
GZIP_MIN_BYTES = 1024


class CachedStaticFiles(StaticFiles):
    """``StaticFiles`` with the ``Cache-Control`` of the docstring above."""

    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        versioned = bool(parse_qs(scope.get("query_string", b"").decode("latin-1")).get("v"))
        response.headers["Cache-Control"] = IMMUTABLE if versioned else REVALIDATE
        return response


def static_app(directory: str | PathLike[str]) -> ASGIApp:
    """The ASGI app to mount at ``/static``."""
    return GZipMiddleware(CachedStaticFiles(directory=directory), minimum_size=GZIP_MIN_BYTES)
