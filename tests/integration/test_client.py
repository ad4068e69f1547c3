"""orchestrator.clients.triton against a real server."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from orchestrator.clients.triton import Priority, TritonEmbedder
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.settings import Settings

pytestmark = pytest.mark.integration


async def test_long_lists_are_split_and_rejoined_in_order(triton: Settings) -> None:
    texts = [f"sentence {i}: {'word ' * (i % 37)}" for i in range(150)]  # > max_batch_size 64
    async with TritonEmbedder.connect(triton) as client:
        together = await client.embed(texts, model="embed_fp32", priority=Priority.BULK)
        singles = [
            await client.embed([t], model="embed_fp32", priority=Priority.QUERY)
            for t in texts[::25]
        ]
    assert together.embeddings.shape == (150, 384)
    assert len(together.token_counts) == 150
    for k, single in enumerate(singles):
        np.testing.assert_allclose(together.embeddings[k * 25], single.embeddings[0], atol=1e-5)
    assert together.variant == "fp32"


async def test_a_variant_not_loaded_at_start_loads_on_first_use(triton: Settings) -> None:
    direct = grpcclient.InferenceServerClient(triton.triton_grpc_url)
    direct.unload_model("embed_fp32")
    _wait_unloaded(direct, "embed_fp32")
    async with TritonEmbedder.connect(triton) as client:
        result = await client.embed(["loaded on demand"], model="embed_fp32")
        assert not await client.ensure_loaded("no_such_model")
    assert result.variant == "fp32" and direct.is_model_ready("embed_fp32")


async def test_a_variant_unloaded_after_use_is_loaded_again_by_the_next_request(
    triton: Settings,
) -> None:
    direct = grpcclient.InferenceServerClient(triton.triton_grpc_url)
    async with TritonEmbedder.connect(triton) as client:
        assert (await client.embed(["first"], model="embed_fp32")).variant == "fp32"
        direct.unload_model("embed_fp32")
        _wait_unloaded(direct, "embed_fp32")
        # The client remembers the model as loaded (no readiness call per request); the failed
        # inference tells it otherwise and it loads the model again.
        again = await client.embed(["second"], model="embed_fp32")
    assert again.variant == "fp32" and direct.is_model_ready("embed_fp32")


async def test_client_errors_use_the_project_vocabulary(triton: Settings) -> None:
    async with TritonEmbedder.connect(triton) as client:
        with pytest.raises(TritonRagError) as empty:
            await client.embed([])
        with pytest.raises(TritonRagError) as blank:
            await client.embed(["fine", ""])
        with pytest.raises(TritonRagError) as huge:
            await client.embed(["x" * (triton.embed_max_chars + 1)])
        with pytest.raises(TritonRagError) as missing:
            await client.embed(["hello"], model="no_such_model")
        assert await client.ready()
        assert not await client.ready("no_such_model")
    assert empty.value.code is ErrorCode.EMPTY_INPUT
    assert blank.value.code is ErrorCode.EMPTY_INPUT
    assert huge.value.code is ErrorCode.TOO_LARGE
    assert missing.value.code is ErrorCode.NOT_READY
    assert missing.value.retry_after_s is not None


async def test_an_unreachable_server_is_not_ready(tmp_path: object) -> None:
    from orchestrator.cli.tritonserver import free_port

    settings = Settings(triton_grpc_port=free_port(), embed_timeout_s=2.0)
    async with TritonEmbedder.connect(settings) as client:
        assert not await client.ready()
        with pytest.raises(TritonRagError) as info:
            await client.embed(["hello"])
    assert info.value.code is ErrorCode.NOT_READY


def _wait_unloaded(direct: grpcclient.InferenceServerClient, model: str) -> None:
    for _ in range(100):  # unloading finishes in the background
        if not direct.is_model_ready(model):
            break
        time.sleep(0.1)
    assert not direct.is_model_ready(model)
