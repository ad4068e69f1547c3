"""A real tritonserver, driven with the official tritonclient over HTTP and gRPC."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from export import layout
from export.corpus import parity_texts
from export.onnx_graph import default_model_dir
from export.openvino import candidates
from export.parity import reference
from export.repository import link_or_copy, publish, published
from export.run import INT8_MIN_SPEEDUP, cpu_isa, gate_failures
from model_repository.backend.encoder import Matrix, OnnxEncoder, Variant
from orchestrator.cli.tritonserver import TritonProcess, free_port, startup_models
from orchestrator.settings import Settings

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
    """The export gate's own texts (less the blank ones the API refuses)."""
    texts = [t for t in parity_texts() if t.strip()]
    return texts, reference(default_model_dir(), texts)


def _embed(client: Any, module: Any, model: str, texts: list[str]) -> tuple[Matrix, set[bytes]]:
    """Embeddings and the variants that ran, a request per 60 texts (max batch 64)."""
    results = [
        client.infer(model, [_text_input(module, texts[i : i + 60])])
        for i in range(0, len(texts), 60)
    ]
    got = np.concatenate([r.as_numpy("embedding") for r in results])
    return got, {v for r in results for v in r.as_numpy("variant").reshape(-1).tolist()}


def test_the_served_models_are_ready_and_every_variant_is_in_the_repository(
    triton: Settings,
) -> None:
    client = httpclient.InferenceServerClient(triton.triton_http_url)
    assert client.is_server_ready()
    available = {m["name"] for m in client.get_model_repository_index()}
    assert set(published(triton.model_repository)) <= available
    for model in startup_models(triton):
        assert client.is_model_ready(model), model


def test_the_published_int8_passed_the_retrieval_gate(triton: Settings) -> None:
    """What setup's export decided, read back from the published model's report."""
    folder = triton.model_repository / "embed_int8" / "1"
    report = json.loads((folder / "report.json").read_text())
    assert report["fp32"]["queries"] >= 1000
    published_int8 = report["int8_published"]
    assert published_int8 in report["int8"], report["int8"].keys()
    chosen = report["int8"][published_int8]
    assert chosen["failed"] == [] and gate_failures(chosen) == []
    assert chosen["parity"]["mean_cosine"] >= 0.99
    for metric in ("recall@10_delta", "mrr@10_delta"):
        assert chosen[metric]["low"] >= -0.01, (metric, chosen[metric])
    faster = [r for r in report["int8"].values() if r["texts_per_s"] > chosen["texts_per_s"]]
    assert all(r["judged"] and r["failed"] for r in faster), "a faster one was not published"
    served = json.loads((triton.model_repository / "embed" / "1" / "variant.json").read_text())
    assert served["variant"] == report["embed_serves"]


def test_embed_serves_the_fastest_engine_that_passed_on_this_cpu(triton: Settings) -> None:
    """OpenVINO ran the fp32 graph beside ONNX Runtime (bf16 too where the CPU has it) and NNCF's
    int8 of it, all timed, and judged by the same gate where fast enough to be served; `embed`
    is the fastest that passed, if clearly faster than fp32."""
    report = json.loads((triton.model_repository / "embed" / "1" / "report.json").read_text())
    assert set(report["openvino"]) == {c.name for c in candidates(report["cpu_isa"])}
    assert {"openvino-fp32", "openvino-int8", "openvino-int8-weights"} <= set(report["openvino"])
    speeds = {"fp32": report["fp32"]["texts_per_s"]}
    if report["int8_published"]:
        speeds["int8"] = report["int8"][report["int8_published"]]["texts_per_s"]
    judged = {k: r for k, r in report["openvino"].items() if r["judged"]}
    speeds |= {k: r["texts_per_s"] for k, r in judged.items() if not r["failed"]}
    fastest = max(speeds, key=speeds.__getitem__)
    clearly = speeds[fastest] > INT8_MIN_SPEEDUP * speeds["fp32"]
    # Left unjudged only where it could not have been served: too slow, or a faster one passed.
    bar = max(INT8_MIN_SPEEDUP * speeds["fp32"], speeds[fastest])
    unjudged = [r for k, r in report["openvino"].items() if k not in judged]
    assert all(r["texts_per_s"] <= bar for r in unjudged), (bar, unjudged)
    assert report["embed_serves"] == (fastest if clearly else "fp32"), speeds
    assert Variant.load(triton.model_repository / "embed" / "1").variant == report["embed_serves"]


def test_an_openvino_variant_serves_through_triton(
    tmp_path: Path, texts_and_reference: tuple[list[str], Matrix]
) -> None:
    """Whichever engine won here, the other one must serve too: an OpenVINO `embed`, published
    as export publishes it, answers through Triton like the reference."""
    source = Settings().model_repository
    repo = tmp_path / "repository"
    shutil.copytree(source / "embed", repo / "embed", ignore=shutil.ignore_patterns("1"))
    variant = tmp_path / "openvino"
    variant.mkdir()
    for name in ("model.onnx", "tokenizer.json"):
        link_or_copy(source / "embed_fp32" / "1" / name, variant / name)
    meta = Variant.load(source / "embed_fp32" / "1")
    replace(meta, variant="openvino-fp32", engine="openvino", precision="f32").save(variant)
    publish(variant, repo / "embed", {"engine": "openvino"})
    settings = Settings(
        runtime_dir=tmp_path / "runtime",
        model_repository=repo,
        triton_http_port=free_port(),
        triton_grpc_port=free_port(),
        triton_metrics_port=free_port(),
    )
    texts, ref = texts_and_reference
    with TritonProcess.start(settings) as server:
        server.wait_ready()
        client = httpclient.InferenceServerClient(settings.triton_http_url)
        got, variants = _embed(client, httpclient, "embed", texts)
    assert variants == {b"openvino-fp32"}
    assert np.min(np.sum(got * ref, axis=1)) >= 0.9999
    assert (repo / "embed" / "1" / "openvino_cache").is_dir()  # a restart skips compiling


def test_grouping_was_measured_on_this_cpu_and_the_fp32_model_uses_it(triton: Settings) -> None:
    """export/layout.py timed each budget here; the fastest is in the served variant.json."""
    folder = triton.model_repository / "embed_fp32" / "1"
    grouping = json.loads((folder / "report.json").read_text())["grouping"]
    speeds = {int(k): v for k, v in grouping["texts_per_s"].items()}
    assert set(speeds) == set(layout.CANDIDATES)
    assert all(v[w] > 0 for v in speeds.values() for w in layout.WORKLOADS)
    assert grouping["max_group_tokens"] == layout.choose(speeds)
    served = Variant.load(folder)
    assert served.max_group_tokens == grouping["max_group_tokens"]
    assert OnnxEncoder(folder).max_group_tokens == served.max_group_tokens


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
    got, variants = _embed(client, httpclient, "embed_fp32", texts)
    assert got.shape == ref.shape
    assert np.min(np.sum(got * ref, axis=1)) >= 0.9999
    assert variants == {b"fp32"}


def test_embed_over_grpc_matches_reference_and_says_which_variant(
    triton: Settings, texts_and_reference: tuple[list[str], Matrix]
) -> None:
    texts, ref = texts_and_reference
    client = grpcclient.InferenceServerClient(triton.triton_grpc_url)
    got, variants = _embed(client, grpcclient, "embed", texts)
    (variant,) = {v.decode() for v in variants}
    cosine = np.sum(got * ref, axis=1)
    assert variant in {"fp32", "int8"} | {c.name for c in candidates(cpu_isa())}
    # The export gate's bounds, on its own texts, now through Triton.
    bound = {"fp32": 0.9999, "openvino-fp32": 0.9999, "openvino-bf16": 0.999}
    assert (cosine.min() >= bound[variant]) if variant in bound else (cosine.mean() >= 0.99)
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
