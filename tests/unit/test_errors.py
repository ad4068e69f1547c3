import pytest
from tritonclient.utils import InferenceServerException

from orchestrator.clients.triton import map_error
from orchestrator.errors import ErrorCode, TritonRagError


def test_every_code_has_the_documented_status() -> None:
    expected = {
        "empty_input": 400,
        "unauthorized": 401,
        "forbidden": 403,
        "not_found": 404,
        "too_large": 413,
        "unsupported_type": 415,
        "invalid_input": 422,
        "model_mismatch": 409,
        "overloaded": 429,
        "dependency_not_ready": 503,
        "upstream_timeout": 504,
    }
    assert {c.value: c.status for c in ErrorCode} == expected


def test_retryable_errors_carry_retry_after() -> None:
    assert TritonRagError(ErrorCode.OVERLOADED, "busy").retry_after_s == 1
    assert TritonRagError(ErrorCode.NOT_READY, "down", retry_after_s=7).retry_after_s == 7
    assert TritonRagError(ErrorCode.INVALID_INPUT, "bad", retry_after_s=7).retry_after_s is None


def test_body_is_openai_shaped() -> None:
    body = TritonRagError(ErrorCode.TOO_LARGE, "too big").body()
    assert body == {"error": {"message": "too big", "type": "too_large", "code": 413}}


@pytest.mark.parametrize(
    ("status", "message", "code"),
    [
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", ErrorCode.UPSTREAM_TIMEOUT),
        ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size", ErrorCode.OVERLOADED),
        ("StatusCode.UNAVAILABLE", "Request timeout expired", ErrorCode.NOT_READY),
        ("StatusCode.INVALID_ARGUMENT", "text[0] is empty", ErrorCode.EMPTY_INPUT),
        ("StatusCode.INVALID_ARGUMENT", "unexpected datatype", ErrorCode.INVALID_INPUT),
        ("StatusCode.NOT_FOUND", "Request for unknown model", ErrorCode.NOT_READY),
        ("StatusCode.RESOURCE_EXHAUSTED", "message larger than max", ErrorCode.TOO_LARGE),
        ("StatusCode.INTERNAL", "stub crashed", ErrorCode.NOT_READY),
    ],
)
def test_triton_errors_map_to_codes(status: str, message: str, code: ErrorCode) -> None:
    error = map_error(InferenceServerException(msg=message, status=status), "embed")
    assert error.code is code
    assert message in error.message
