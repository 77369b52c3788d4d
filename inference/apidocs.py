"""``GET /docs``: Swagger UI served by the service itself, nothing from a CDN.

FastAPI's own page loads Swagger UI from cdn.jsdelivr.net and its favicon from
fastapi.tiangolo.com, so on a private network it stays blank. The
``fastapi-offline`` package (pinned in the ``inference`` extra) ships Swagger
UI 5's files; only those are used: they are served under ``/docs/assets/`` and
the page points there. (``swagger-ui-bundle`` on PyPI holds Swagger UI 4, which
cannot render the OpenAPI 3.1 document FastAPI writes.) The online validator is
off: its badge would send the schema's URL to validator.swagger.io.

No ``/redoc``: ReDoc's bundle fetches its logo from cdn.redoc.ly whatever it is
told. No OAuth2 redirect page: the service's keys are bearer tokens.

``DOCS_ACCESS`` covers the assets like the page: ``off`` mounts none of this,
``keys`` puts everything under ``/docs/`` behind the keys (``inference/front.py``).
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"


def add_api_docs(app: FastAPI, openapi_url: str) -> None:
    """Serve Swagger UI for ``openapi_url`` at ``/docs``, its files under ``/docs/assets/``."""
    # StaticFiles checks the folder now: a missing package fails startup, not a page view.
    assets = StaticFiles(directory=str(files("fastapi_offline") / "static"))
    app.mount(ASSETS_URL, assets, name="api-docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )


def _root(request: Request) -> str:
    # Behind a proxy that strips a path prefix, as FastAPI's own pages do.
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")
