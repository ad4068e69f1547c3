"""Search: a query against one collection, hits shaped for the wire."""

from __future__ import annotations

from typing import Any

from orchestrator.clients.vectors import SearchMode, VectorStore, check_model
from orchestrator.errors import ErrorCode, TritonRagError


def search(
    store: VectorStore,
    collection: str,
    vector: list[float],
    top_k: int,
    filters: dict[str, Any],
    text: str = "",
    mode: str = SearchMode.DENSE,
    strict: bool = False,
    model: str = "",
) -> tuple[list[dict[str, Any]], str]:
    """Top `top_k` chunks and the mode that found them; `filters` match `document_id` or keys
    of the upload's metadata. A collection without sparse vectors searches dense, unless the
    caller named a sparse or hybrid `mode` (`strict`): that is refused, with the way out. A
    query vector of another `model` than the collection's is refused (empty: not checked, a
    request from an API of the version before)."""
    if model:
        check_model(store.model(collection), model, len(vector))
    wanted = SearchMode(mode)
    if wanted is not SearchMode.DENSE and not store.has_sparse(collection):
        if strict and store.count(collection):
            raise TritonRagError(
                ErrorCode.INVALID_INPUT,
                f"this collection was indexed before sparse vectors existed: {mode} search "
                "needs `tritonrag reindex COLLECTION` first (dense works now)",
            )
        wanted = SearchMode.DENSE
    match = {k if k == "document_id" else f"metadata.{k}": v for k, v in filters.items()}
    hits = [
        {
            "document_id": hit.payload.get("document_id"),
            "chunk_id": hit.id,
            "chunk_index": hit.payload.get("chunk_index"),
            "score": hit.score,
            "similarity": hit.similarity,
            "text": hit.payload.get("text", ""),
            "filename": hit.payload.get("filename"),
            "metadata": hit.payload.get("metadata", {}),
        }
        for hit in store.search(collection, vector, top_k, match, text, wanted)
    ]
    return hits, wanted.value
