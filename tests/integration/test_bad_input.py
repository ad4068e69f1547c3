"""Bad input gets a clear error or documented truncation, never a crash or a hang."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from orchestrator.settings import Settings

pytestmark = pytest.mark.integration


def _bytes_input(items: list[bytes], shape: list[int] | None = None) -> grpcclient.InferInput:
    data = np.array(items, dtype=np.object_).reshape(shape or [len(items), 1])
    tensor = grpcclient.InferInput("text", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


@pytest.fixture(scope="module")
def client(triton: Settings) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(triton.triton_grpc_url)


def _error(client: grpcclient.InferenceServerClient, tensor: grpcclient.InferInput) -> str:
    with pytest.raises(InferenceServerException) as info:
        client.infer("embed", [tensor], client_timeout=30)
    return str(info.value.message())


def test_empty_string_is_a_clear_error(client: grpcclient.InferenceServerClient) -> None:
    assert "text[0] is empty" in _error(client, _bytes_input([b""]))


def test_long_text_is_truncated_to_the_model_max_length(
    client: grpcclient.InferenceServerClient,
) -> None:
    text = ("tokens " * 20_000)[:100_000].encode()
    result = client.infer("embed", [_bytes_input([text])], client_timeout=30)
    assert result.as_numpy("token_count").reshape(-1).tolist() == [256]
    assert result.as_numpy("embedding").shape == (1, 384)


def test_text_over_the_character_limit_is_refused(client: grpcclient.InferenceServerClient) -> None:
    message = _error(client, _bytes_input([b"x" * 200_001]))
    assert "200001 characters; the limit is 200000" in message


def test_invalid_utf8_is_a_clear_error(client: grpcclient.InferenceServerClient) -> None:
    assert "not valid UTF-8" in _error(client, _bytes_input([b"ok \xff\xfe broken"]))


def test_wrong_dtype_is_refused_by_triton(client: grpcclient.InferenceServerClient) -> None:
    tensor = grpcclient.InferInput("text", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.array([[7]], dtype=np.int32))
    assert "data-type" in _error(client, tensor) or "datatype" in _error(client, tensor).lower()


def test_wrong_shape_is_refused_by_triton(client: grpcclient.InferenceServerClient) -> None:
    message = _error(client, _bytes_input([b"a", b"b", b"c", b"d"], shape=[2, 2]))
    assert "shape" in message


def test_batch_over_the_limit_is_refused(client: grpcclient.InferenceServerClient) -> None:
    assert "batch" in _error(client, _bytes_input([b"t"] * 65)).lower()


def test_one_bad_request_does_not_fail_its_batch_neighbours(triton: Settings) -> None:
    http = httpclient.InferenceServerClient(triton.triton_http_url, concurrency=4)
    good = httpclient.InferInput("text", [1, 1], "BYTES")
    good.set_data_from_numpy(np.array([[b"fine text"]], dtype=np.object_))
    bad = httpclient.InferInput("text", [1, 1], "BYTES")
    bad.set_data_from_numpy(np.array([[b""]], dtype=np.object_))
    pending = [http.async_infer("embed", [t]) for t in (good, bad, good, bad)]
    outcomes = []
    for p in pending:
        try:
            outcomes.append(p.get_result().as_numpy("embedding").shape)
        except InferenceServerException as exc:
            outcomes.append(str(exc.message()))
    assert outcomes[0] == outcomes[2] == (1, 384)
    assert "is empty" in str(outcomes[1]) and "is empty" in str(outcomes[3])


def test_a_repeated_bad_request_gets_the_same_error(
    client: grpcclient.InferenceServerClient,
) -> None:
    # Triton 2.51's response cache would answer the repeat with an empty success.
    assert "is empty" in _error(client, _bytes_input([b""]))
    assert "is empty" in _error(client, _bytes_input([b""]))


def test_server_is_alive_after_bad_input(triton: Settings) -> None:
    assert httpclient.InferenceServerClient(triton.triton_http_url).is_server_live()
