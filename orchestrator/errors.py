"""One error vocabulary: a code maps to an HTTP status and an OpenAI-style error body."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """What went wrong, independent of transport. The value is the OpenAI `type` field."""

    EMPTY_INPUT = "empty_input"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    UNSUPPORTED_TYPE = "unsupported_type"
    INVALID_INPUT = "invalid_input"
    MODEL_MISMATCH = "model_mismatch"
    OVERLOADED = "overloaded"
    NOT_READY = "dependency_not_ready"
    UPSTREAM_TIMEOUT = "upstream_timeout"

    @property
    def status(self) -> int:
        return _STATUS[self]


_STATUS: dict[ErrorCode, int] = {
    ErrorCode.EMPTY_INPUT: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_TYPE: 415,
    ErrorCode.INVALID_INPUT: 422,
    ErrorCode.MODEL_MISMATCH: 409,
    ErrorCode.OVERLOADED: 429,
    ErrorCode.NOT_READY: 503,
    ErrorCode.UPSTREAM_TIMEOUT: 504,
}

# Codes whose answer tells the caller to come back later.
RETRYABLE = frozenset({ErrorCode.OVERLOADED, ErrorCode.NOT_READY, ErrorCode.UPSTREAM_TIMEOUT})


class TritonRagError(Exception):
    """An error with a code from the vocabulary; the one handler turns it into a response."""

    def __init__(self, code: ErrorCode, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s if code in RETRYABLE else None
        if code in RETRYABLE and self.retry_after_s is None:
            self.retry_after_s = 1

    def body(self) -> dict[str, Any]:
        """OpenAI-style error body."""
        return {
            "error": {"message": self.message, "type": self.code.value, "code": self.code.status}
        }
