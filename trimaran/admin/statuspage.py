"""The live status page of the deployment (SPEC OPS-3), served by the admin API of every
Front End server, every Director and the witness (a third site: the page stays up when
a data center is lost).

=============================  ===========================================================
``GET /status/page``           the page (plain HTML, no build step)
``GET /status/page/{asset}``   its script and style sheet, shipped in the package
                               (`trimaran/admin/static/`)
``GET /status/deployment``     the overview document the page polls every second
                               (`trimaran.admin.overview_model`)
=============================  ===========================================================

All three are read-only and carry no secret. The page puts data into the DOM only as
text (never as markup) and its Content-Security-Policy allows nothing but its own
script, style sheet and requests to this server.
"""

from __future__ import annotations

import json
from importlib import resources

from aiohttp import web

from trimaran.admin.http import Route
from trimaran.admin.overview import Overview

#: The page's files and their content types (nothing else is served from static/).
ASSETS = {"status.html": "text/html", "status.js": "text/javascript",
          "status.css": "text/css"}
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _load_assets() -> dict[str, bytes]:
    folder = resources.files("trimaran.admin").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in ASSETS}


class StatusPage:
    """The handlers of the status page over one `Overview`."""

    def __init__(self, overview: Overview) -> None:
        self.overview = overview
        self._assets = _load_assets()

    def routes(self) -> tuple[Route, ...]:
        """The endpoints, for `AdminContext.routes` or `trimaran.admin.http.add_routes`."""
        return (("/status/page", "status-page", (("GET", self._page),)),
                ("/status/page/{asset}", "status-page-asset", (("GET", self._asset),)),
                ("/status/deployment", "status-deployment", (("GET", self._deployment),)))

    def _file(self, name: str) -> web.Response:
        return web.Response(body=self._assets[name], content_type=ASSETS[name],
                            charset="utf-8", headers=PAGE_HEADERS)

    async def _page(self, request: web.Request) -> web.Response:
        return self._file("status.html")

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["asset"]
        if name not in ASSETS or name == "status.html":
            return web.json_response({"error": f"no such asset: {name[:60]!r}"}, status=404)
        return self._file(name)

    async def _deployment(self, request: web.Request) -> web.Response:
        document = await self.overview.document()
        return web.Response(text=json.dumps(document), content_type="application/json",
                            headers={"Cache-Control": "no-store",
                                     "X-Content-Type-Options": "nosniff"})
