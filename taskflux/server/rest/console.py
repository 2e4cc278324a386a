"""The web console (``/ui``): a page, a script and a style sheet served from the package, nothing from outside the
node (it works on an air-gapped network). It calls the documented ``/api/v1`` routes only (docs/console.md)."""

from __future__ import annotations

from pathlib import Path

import bottle

from taskflux.server.rest.base import RestParts
from taskflux.server.rest.requests import error

ASSET_DIRECTORY = Path(__file__).resolve().parent / "console"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
ASSETS = {path.name: (path.read_bytes(), CONTENT_TYPES[path.suffix])
          for path in sorted(ASSET_DIRECTORY.iterdir()) if path.suffix in CONTENT_TYPES}


class ConsoleRoutes(RestParts):
    """``/ui``: the console's files. Mixed into ``RestApi`` (taskflux.server.rest.app)."""

    def console_redirect(self) -> bottle.HTTPResponse:
        return bottle.HTTPResponse(status=301, headers={"Location": "/ui/"})

    def console_page(self) -> bottle.HTTPResponse:
        return self.console_asset("index.html")

    def console_asset(self, asset: str) -> bottle.HTTPResponse:
        found = ASSETS.get(asset)
        if found is None:
            raise error(404, "no_such_route", f"the console has no file {asset!r}")
        data, content_type = found
        headers = {"Content-Type": content_type, "Cache-Control": "no-cache"}
        return bottle.HTTPResponse(data, status=200, headers=headers)
