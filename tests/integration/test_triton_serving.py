"""A real tritonserver, driven with the official tritonclient over HTTP and gRPC."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from export.corpus import parity_texts
from export.onnx_graph import default_model_dir
from export.parity import reference
from export.repository import published
from orchestrator.encoder import Matrix
from orchestrator.settings import Settings
from orchestrator.tritonserver import startup_models

pytestmark = pytest.mark.integration


def _text_input(module: object, texts: list[str]) -> object:
    data = np.array([[t.encode()] for t in texts], dtype=np.object_)
    tensor = module.InferInput("text", list(data.shape), "BYTES")  # type: ignore[attr-defined]
    tensor.set_data_from_numpy(data)
    return tensor


def _metric(settings: Settings, name: str, model: str) -> float:
    url = f"http://{settings.triton_host}:{settings.triton_metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    match = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.M)
    assert match, f"{name} for {model} not in metrics"
    return float(match.group(1))


@pytest.fixture(scope="module")
def texts_and_reference() -> tuple[list[str], Matrix]:
    texts = [t for t in parity_texts(60) if t.strip()][:40]
    return texts, reference(default_model_dir(), texts)


def test_the_served_models_are_ready_and_every_variant_is_in_the_repository(
    triton: Settings,
) -> None:
    client = httpclient.InferenceServerClient(triton.triton_http_url)
    assert client.is_server_ready()
    available = {m["name"] for m in client.get_model_repository_index()}
    assert set(published(triton.model_repository)) <= available
    for model in startup_models(triton):
        assert client.is_model_ready(model), model


@pytest.fixture
def fp32(triton: Settings) -> Settings:
    """embed_fp32 loaded, as a client talking to Triton directly loads a variant."""
    grpcclient.InferenceServerClient(triton.triton_grpc_url).load_model("embed_fp32")
    return triton


def test_fp32_over_http_equals_sentence_transformers(
    fp32: Settings, texts_and_reference: tuple[list[str], Matrix]
) -> None:
    texts, ref = texts_and_reference
    client = httpclient.InferenceServerClient(fp32.triton_http_url)
    result = client.infer("embed_fp32", [_text_input(httpclient, texts)])
    got = result.as_numpy("embedding")
    assert got.shape == ref.shape
    assert np.min(np.sum(got * ref, axis=1)) >= 0.9999
    assert set(result.as_numpy("variant").reshape(-1).tolist()) == {b"fp32"}


def test_embed_over_grpc_matches_reference_and_says_which_variant(
    triton: Settings, texts_and_reference: tuple[list[str], Matrix]
) -> None:
    texts, ref = texts_and_reference
    client = grpcclient.InferenceServerClient(triton.triton_grpc_url)
    result = client.infer("embed", [_text_input(grpcclient, texts)])
    got = result.as_numpy("embedding")
    variant = result.as_numpy("variant").reshape(-1)[0].decode()
    cosine = np.sum(got * ref, axis=1)
    assert variant in {"fp32", "int8"}
    assert (cosine.min() >= 0.9999) if variant == "fp32" else (cosine.mean() >= 0.99)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


async def test_dynamic_batching_groups_concurrent_requests(fp32: Settings) -> None:
    triton, model = fp32, "embed_fp32"
    before_exec = _metric(triton, "nv_inference_exec_count", model)
    before_req = _metric(triton, "nv_inference_request_success", model)
    client = grpcaio.InferenceServerClient(triton.triton_grpc_url)
    try:
        texts = [f"concurrent request number {i} about batching" for i in range(48)]
        await asyncio.gather(*(client.infer(model, [_text_input(grpcaio, [t])]) for t in texts))
    finally:
        await client.close()
    executions = _metric(triton, "nv_inference_exec_count", model) - before_exec
    requests = _metric(triton, "nv_inference_request_success", model) - before_req
    assert requests == 48
    assert executions < requests


def test_model_readiness_follows_load_and_unload(fp32: Settings) -> None:
    client = grpcclient.InferenceServerClient(fp32.triton_grpc_url)
    client.unload_model("embed_fp32")
    try:
        assert not client.is_model_ready("embed_fp32")
        with pytest.raises(InferenceServerException):
            client.infer("embed_fp32", [_text_input(grpcclient, ["hello"])])
    finally:
        client.load_model("embed_fp32")
    assert client.is_model_ready("embed_fp32")
    result = client.infer("embed_fp32", [_text_input(grpcclient, ["hello"])])
    assert result.as_numpy("embedding").shape == (1, 384)
