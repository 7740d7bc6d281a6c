"""The FastAPI app: :func:`create_app` builds one from :class:`Settings` (one per test; ``api.main`` for
``uvicorn api.main:app``; ``python -m api``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException

from api.body_limit import BodyLimitMiddleware
from api.exceptions import RateLimited, error_body
from api.openai_compat import http_error_response
from api.openai_compat import router as openai_router
from api.openai_responses import router as responses_router
from api.openapi import install_openapi
from api.routes import router
from api.runtime import Runtime
from api.settings import Settings
from api.static_files import static_app
from api.ws import websocket_endpoint
from streaming.codes import WireError


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.check_secrets()  # fail closed before serving anything (InsecureSettings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime.build(settings)
        app.state.runtime = runtime
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="brandchat", version="0.1.0", lifespan=lifespan)
    # Added first, so it runs inside CORS (a browser can read the 413) and before anything reads a body.
    app.add_middleware(
        BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.http_body_timeout_s
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.allowed_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        expose_headers=["Retry-After"],
    )

    @app.exception_handler(WireError)
    async def wire_error(_: Request, exc: WireError) -> JSONResponse:
        if isinstance(exc, RateLimited):
            return JSONResponse(
                error_body(exc.code, exc.message, retry_after_ms=exc.retry_after_ms),
                status_code=exc.http_status,
                headers={"Retry-After": str(exc.retry_after_s)},
            )
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.http_status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # No route, no such method, no static file: our error body, OpenAI's under /v1/.
        return http_error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{loc or 'body'}: {err.get('msg')}")
        return JSONResponse(error_body("bad_request", "; ".join(parts) or "malformed request"), status_code=422)

    app.include_router(router)
    app.include_router(openai_router)
    app.include_router(responses_router)
    # A plain Starlette route: FastAPI's websocket route solves dependencies (this endpoint has
    # none) and keeps two exit stacks per connection for it (docs/performance.md, "Idle memory").
    app.router.add_websocket_route("/v1/ws", websocket_endpoint)
    if settings.static_dir.is_dir():
        app.mount("/static", static_app(settings.static_dir), name="static")  # gzip + Cache-Control
        index = settings.static_dir / "index.html"

        @app.get("/", include_in_schema=False)
        async def demo_page() -> FileResponse:
            return FileResponse(index)

    install_openapi(app)

    return app


__all__ = ["create_app"]
