"""The web app over one collection: a thin HTTP edge over `Collection`, like the CLI.

The app is assembled here (middleware, token, page, static files); the state kept between requests is in
`semsearch.server.state`, the API's endpoints in `semsearch.server.routes`, the collection's map in
`semsearch.server.maps`.

Security
--------
Only images in the catalog are served, addressed by integer id (never by path), and image terms in a
query are ids too (``id:12``): no request makes the server read a file outside the catalog or tells
whether one exists. Uploads are capped (413; multipart: at most `routes.MAX_PARTS` parts, parsed in a worker
thread), decoded with `semsearch.media.load_image` within its memory bound (400 on anything that is not an
image) entirely in memory, and at most a few at once (`semsearch.server.guards.Gate`: 503 with
Retry-After beyond). The only files written are thumbnails under ``<collection>/thumbs``. The Host header
must name this server (DNS rebinding), POSTs must come from its own page or a non-browser client; with a
token, every ``/api`` call needs ``Authorization: Bearer <token>`` (or ``?token=`` for ``<img>`` URLs).
"""

from __future__ import annotations

import hmac
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.datastructures import MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware

from semsearch.errors import CollectionError, SemsearchError
from semsearch.server.guards import Gate, SameOriginWrites
from semsearch.server.maps import prepare as prepare_map
from semsearch.server.messages import bad_parameter, document_errors
from semsearch.server.routes import api_router
from semsearch.server.state import Served

STATIC_DIR = Path(__file__).with_name("static")
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
UPLOAD_WORKERS, UPLOAD_WAITING = 2, 14  # uploads decoded and encoded at once, and queued behind them
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
DOCS_ASSETS = "/docs-assets"  # Swagger UI's script and stylesheet (fastapi-offline ships them)


def _one_blas_thread() -> None:
    """Concurrency comes from requests (threads + micro-batching), not from BLAS threads inside one product:
    nested BLAS threads oversubscribe the cores and, on a loaded 2-core machine, made a 1x50 @ 50x10000
    product take 20 ms instead of 0.2 ms."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"


class _SecurityHeaders:
    """Adds the browser hardening headers to every response.

    A plain ASGI middleware: Starlette's ``@app.middleware("http")`` wraps each response in a stream and
    task, which cost more per request than a whole cached text query."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope["path"].startswith("/docs")

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if not docs:
                    headers.setdefault("Content-Security-Policy", _CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    db: Path,
    *,
    token: str | None = None,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    hosts: tuple[str, ...] = (),
    uploads: Gate | None = None,
) -> FastAPI:
    """The FastAPI app serving the collection at `db` (page at `/`, API under `/api`, schema at `/openapi.json`).

    `hosts`: Host header names accepted besides loopback ones (the address served on; "*" for any).
    `uploads`: how many uploads are processed at once and queued (default `UPLOAD_WORKERS`, `UPLOAD_WAITING`).
    """
    if token is not None and not token.strip():
        raise ValueError("the token is empty: give a real token or none")
    _one_blas_thread()
    served = Served(db)
    expected = token.encode() if token else None
    gate = uploads or Gate(UPLOAD_WORKERS, UPLOAD_WAITING)

    def check_token(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        given = (
            header[7:].strip() if header[:7].lower() == "bearer " else request.query_params.get("token", "")
        )
        if not given or not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(401, "missing or wrong token", headers={"WWW-Authenticate": "Bearer"})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=prepare_map, name="semsearch-map-imports", daemon=True).start()
        yield
        served.close()

    app = FastAPIOffline(  # /docs with Swagger UI's files from the package, not a CDN: works offline
        lifespan=lifespan,
        title="semsearch",
        summary="Semantic search over a photo collection and words.",
        version="1",
        docs_url="/docs",
        redoc_url=None,
        static_url=DOCS_ASSETS,
        favicon_url="/static/favicon.svg",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from swagger.io
    )
    app.state.served = served

    @app.exception_handler(SemsearchError)
    async def _user_error(request: Request, exc: SemsearchError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    app.add_exception_handler(RequestValidationError, bad_parameter)

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    app.add_middleware(SameOriginWrites)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=[*LOOPBACK_HOSTS, *hosts], www_redirect=False)
    app.add_middleware(_SecurityHeaders)
    app.include_router(api_router(served, gate=gate, max_upload=max_upload, guard=Depends(check_token)))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


__all__ = ["CollectionError", "Served", "create_app", "loopback"]
