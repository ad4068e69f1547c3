"""OpenAI-compatible /v1/embeddings, straight to Triton."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter

from orchestrator.api.deps import ServicesDep, TenantDep
from orchestrator.api.schemas import (
    ERROR_RESPONSES,
    EmbeddingItem,
    EmbeddingRequest,
    EmbeddingResponse,
    Usage,
)
from orchestrator.clients.triton import Priority
from orchestrator.errors import ErrorCode, TritonRagError

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)
MAX_INPUTS = 2048


@router.post("/embeddings")
async def create_embeddings(
    body: EmbeddingRequest, services: ServicesDep, _: TenantDep
) -> EmbeddingResponse:
    texts = [body.input] if isinstance(body.input, str) else body.input
    if len(texts) > MAX_INPUTS:
        raise TritonRagError(ErrorCode.TOO_LARGE, f"at most {MAX_INPUTS} inputs per request")
    settings = services.settings
    model = body.model or settings.embed_model
    if model in settings.embed_model_aliases:  # the model's own name, as other servers take it
        model = settings.embed_model
    if not await services.embedder.ensure_loaded(model):
        raise TritonRagError(ErrorCode.NOT_FOUND, f"model {model!r} is not served here")
    result = await services.embedder.embed(texts, model=model, priority=Priority.QUERY)
    dim = result.embeddings.shape[1]
    if body.dimensions is not None and body.dimensions != dim:
        raise TritonRagError(
            ErrorCode.INVALID_INPUT,
            f"{model} has {dim} dimensions; got dimensions={body.dimensions}",
        )
    rows = np.ascontiguousarray(result.embeddings, dtype=np.float32)
    data = [
        EmbeddingItem(
            index=i,
            embedding=base64.b64encode(row.tobytes()).decode()
            if body.encoding_format == "base64"
            else row.tolist(),
        )
        for i, row in enumerate(rows)
    ]
    tokens = sum(result.token_counts)
    return EmbeddingResponse(
        data=data, model=model, usage=Usage(prompt_tokens=tokens, total_tokens=tokens)
    )
