"""The FastAPI app. ``uvicorn api.main:app`` serves it; :func:`create_app` builds one per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from api.logs import setup_logging
from api.openai_compat import router as openai_router
from api.routes import router
from api.runtime import Runtime, install_uvicorn_shutdown_hook
from api.settings import Settings
from api.ws import websocket_endpoint
from streaming.exceptions import ChatError


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    install_uvicorn_shutdown_hook()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime.build(settings)
        runtime.app = app
        app.state.runtime = runtime
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="brandchat", version="0.1.0", lifespan=lifespan)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.allowed_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
    )

    @app.exception_handler(ChatError)
    async def chat_error(_: Request, exc: ChatError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{loc or 'body'}: {err.get('msg')}")
        return JSONResponse(error_body("bad_request", "; ".join(parts) or "malformed request"), status_code=422)

    app.include_router(router)
    app.include_router(openai_router)
    app.add_api_websocket_route("/v1/ws", websocket_endpoint)
    if settings.static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=settings.static_dir), name="static")
        index = settings.static_dir / "index.html"

        @app.get("/", include_in_schema=False)
        async def demo_page() -> FileResponse:
            return FileResponse(index)

    return app


__all__ = ["create_app"]


_app: FastAPI | None = None


def __getattr__(name: str) -> FastAPI:
    # `uvicorn api.main:app`: built on first access, so importing this module (tests) reads no environment.
    global _app
    if name == "app":
        if _app is None:
            settings = Settings()
            setup_logging(instance=settings.instance_id, level=settings.log_level, fmt=settings.log_format)
            _app = create_app(settings)
        return _app
    raise AttributeError(name)
