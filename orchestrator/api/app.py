"""create_app(): the FastAPI orchestrator, its lifespan clients, one error handler."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator import tracing
from orchestrator.api.admission import Admission, KeyLimiter, lanes
from orchestrator.api.errors import error_response
from orchestrator.api.metrics import Metrics, MetricsMiddleware
from orchestrator.api.routes import answers, chat, documents, embeddings, health, jobs, search, web
from orchestrator.api.services import Services
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.settings import Settings


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or Settings()
    check_bind(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            yield
            return
        async with Services.open(settings) as opened:
            app.state.services = opened
            yield

    app = FastAPI(title="tritonrag", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    metrics = Metrics()
    app.state.metrics = metrics
    routers = (documents, jobs, search, answers, chat, embeddings)
    for router in (r.router for r in routers):
        app.include_router(router)
    app.include_router(health.router)
    app.include_router(web.router)
    app.mount("/ui", StaticFiles(directory=web.WEB), name="ui")
    app.state.limiter = KeyLimiter(settings)
    # Outermost last: metrics see every answer, 413 and 429 included.
    app.add_middleware(Admission, lanes=lanes(settings), metrics=metrics)
    app.add_middleware(BodyLimit, limit=int(settings.max_upload_mb * 1024 * 1024))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _add_handlers(app)
    tracing.instrument_app(app, settings)
    return app


def check_bind(settings: Settings) -> None:
    """Refuse a non-loopback address unless API keys are configured."""
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if not loopback and not settings.api_keys:
        raise SystemExit(
            f"refusing to bind {settings.host} without API keys: set TRITONRAG_API_KEYS "
            '(JSON {"key": "tenant"}) or bind 127.0.0.1'
        )


def _add_handlers(app: FastAPI) -> None:
    async def rag_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TritonRagError)
        return error_response(exc)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        return error_response(TritonRagError(ErrorCode.INVALID_INPUT, where or "invalid request"))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        # Starlette's own answers (no such route, wrong method) in the same error body.
        assert isinstance(exc, StarletteHTTPException)
        code = next((c for c in ErrorCode if c.status == exc.status_code), None)
        body = {
            "error": {
                "message": str(exc.detail),
                "type": code.value if code else "invalid_request",
                "code": exc.status_code,
            }
        }
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def redis_down(_: Request, exc: Exception) -> JSONResponse:
        return error_response(
            TritonRagError(ErrorCode.NOT_READY, f"Redis is unavailable: {exc}", 5)
        )

    app.add_exception_handler(TritonRagError, rag_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for kind in (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OperationalError):
        app.add_exception_handler(kind, redis_down)


class BodyLimit:
    """413 before a large body is buffered: by Content-Length up front, else while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_large = TritonRagError(
            ErrorCode.TOO_LARGE, f"request body is larger than {self.limit} bytes"
        )
        if length is not None and length.isdigit() and int(length) > self.limit:
            await error_response(too_large)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise too_large
            return message

        await self.app(scope, limited, send)


def run(settings: Settings, **uvicorn_args: Any) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, **uvicorn_args)
