"""Search: a query vector against one collection, hits shaped for the wire."""

from __future__ import annotations

from typing import Any

from orchestrator.clients.vectors import VectorStore


def search(
    store: VectorStore, collection: str, vector: list[float], top_k: int, filters: dict[str, Any]
) -> list[dict[str, Any]]:
    """Top `top_k` chunks; `filters` match `document_id` or keys of the upload's metadata."""
    match = {k if k == "document_id" else f"metadata.{k}": v for k, v in filters.items()}
    return [
        {
            "document_id": hit.payload.get("document_id"),
            "chunk_id": hit.id,
            "chunk_index": hit.payload.get("chunk_index"),
            "score": hit.score,
            "text": hit.payload.get("text", ""),
            "filename": hit.payload.get("filename"),
            "metadata": hit.payload.get("metadata", {}),
        }
        for hit in store.search(collection, vector, top_k, match)
    ]
