"""The one place errors become HTTP: a code's status, its OpenAI-style body, Retry-After."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from orchestrator.errors import TritonRagError


def error_response(exc: TritonRagError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
    return JSONResponse(exc.body(), status_code=exc.code.status, headers=headers)
