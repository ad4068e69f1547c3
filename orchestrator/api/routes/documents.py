"""Upload, list, read and delete documents; drop collections."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.datastructures import UploadFile

from orchestrator.api.deps import ServicesDep, TenantDep
from orchestrator.api.schemas import (
    COLLECTION_PATTERN,
    DOCUMENT_ID_PATTERN,
    ERROR_RESPONSES,
    CollectionStatus,
    DocumentPage,
    ReindexRequest,
    ReindexStatus,
    UploadedDocument,
    UploadResponse,
)
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.jobs import require, scoped
from orchestrator.lanes import (
    COLLECTION_INFO,
    DELETE_DOCUMENT,
    DROP_COLLECTION,
    INGEST,
    INGEST_DOCUMENT,
    REBUILD,
    REINDEX,
)
from orchestrator.pipeline import rebuild
from orchestrator.pipeline.parse import sniff

router = APIRouter(prefix="/v1", tags=["documents"], responses=ERROR_RESPONSES)
Collection = Annotated[str, Path(pattern=COLLECTION_PATTERN)]
DocumentIdPath = Annotated[str, Path(min_length=1, max_length=256)]
_DOC_ID = re.compile(DOCUMENT_ID_PATTERN)


# The route reads the form itself (streaming, with limits), so FastAPI cannot infer the body.
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "minItems": 1,
                            "description": "txt, md, html, pdf or docx; the type is read "
                            "from the bytes and must agree with the name's suffix.",
                        },
                        "document_id": {
                            "type": "array",
                            "items": {"type": "string", "pattern": DOCUMENT_ID_PATTERN},
                            "description": "One per file, in order (default: the file name).",
                        },
                        "metadata": {
                            "type": "string",
                            "description": "A JSON object of scalar values, for every file.",
                        },
                    },
                }
            }
        },
    }
}


@router.post("/collections/{collection}/documents", status_code=202, openapi_extra=_UPLOAD_BODY)
async def upload_documents(
    request: Request, collection: Collection, services: ServicesDep, tenant: TenantDep
) -> UploadResponse:
    """Multipart upload of one or many files (field `files`); optional `document_id`
    (one per file, in order) and `metadata` (a JSON object applied to every file)."""
    settings = services.settings
    if await asyncio.to_thread(services.jobs.queue_length, INGEST) >= settings.ingest_queue_limit:
        raise TritonRagError(ErrorCode.OVERLOADED, "ingestion queue is full", retry_after_s=30)
    form = await request.form(max_files=settings.max_files_per_upload, max_fields=200)
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    if not files:
        raise TritonRagError(
            ErrorCode.EMPTY_INPUT, "no files: send them as multipart field `files`"
        )
    ids = [str(v) for v in form.getlist("document_id")]
    if ids and len(ids) != len(files):
        raise TritonRagError(
            ErrorCode.INVALID_INPUT, f"{len(ids)} document_id values for {len(files)} files"
        )
    metadata = _metadata(form.get("metadata"))
    prepared = []
    for i, upload in enumerate(files):
        data = await upload.read()
        filename = PurePath((upload.filename or "").replace("\\", "/")).name or f"upload-{i}"
        document_id = ids[i] if ids else filename
        if not _DOC_ID.match(document_id):
            raise TritonRagError(ErrorCode.INVALID_INPUT, f"bad document_id {document_id!r}")
        # Empty files are accepted and fail in the worker with a reason, like broken ones.
        content_type = sniff(data, filename).value if data else "application/octet-stream"
        record = {
            "document_id": document_id,
            "filename": filename,
            "content_type": content_type,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "metadata": metadata,
        }
        prepared.append((record, data))
    accepted = []
    for record, data in prepared:
        job_id = await asyncio.to_thread(services.jobs.create_job, tenant, collection, record, data)
        await asyncio.to_thread(
            services.celery.send_task, INGEST_DOCUMENT, args=(job_id,), queue=INGEST
        )
        request.app.state.metrics.uploaded.inc()
        accepted.append(UploadedDocument(job_id=job_id, **record))
    return UploadResponse(collection=collection, documents=accepted)


def _metadata(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise TritonRagError(ErrorCode.INVALID_INPUT, f"metadata is not JSON: {exc}") from exc
    if not isinstance(value, dict) or not all(
        isinstance(v, str | int | bool | float) for v in value.values()
    ):
        raise TritonRagError(
            ErrorCode.INVALID_INPUT, "metadata must be a JSON object of scalar values"
        )
    return value


@router.get("/collections/{collection}/documents")
async def list_documents(
    collection: Collection,
    services: ServicesDep,
    tenant: TenantDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DocumentPage:
    data, total = await asyncio.to_thread(
        services.jobs.documents, tenant, collection, offset, limit
    )
    return DocumentPage(data=data, total=total, offset=offset, limit=limit)


@router.get("/collections/{collection}/documents/{document_id:path}")
async def get_document(
    collection: Collection, document_id: DocumentIdPath, services: ServicesDep, tenant: TenantDep
) -> dict[str, Any]:
    record = await asyncio.to_thread(services.jobs.document, tenant, collection, document_id)
    return require(record, f"document {document_id!r} in {collection!r}")


@router.delete("/collections/{collection}/documents/{document_id:path}")
async def delete_document(
    collection: Collection, document_id: DocumentIdPath, services: ServicesDep, tenant: TenantDep
) -> dict[str, Any]:
    """Its chunks are gone from search when this returns."""
    jobs = services.jobs
    require(
        await asyncio.to_thread(jobs.document, tenant, collection, document_id),
        f"document {document_id!r} in {collection!r}",
    )
    timeout = services.settings.search_timeout_s
    name = scoped(tenant, collection)
    await asyncio.to_thread(jobs.mark_deleting, tenant, collection, document_id, True)
    try:
        await services.call(DELETE_DOCUMENT, name, document_id, timeout_s=timeout)
    except BaseException:
        await asyncio.to_thread(jobs.mark_deleting, tenant, collection, document_id, False)
        raise
    await asyncio.to_thread(jobs.remove_document, tenant, collection, document_id)
    return {"document_id": document_id, "deleted": True}


@router.delete("/collections/{collection}")
async def delete_collection(
    collection: Collection, services: ServicesDep, tenant: TenantDep
) -> dict[str, Any]:
    known = collection in await asyncio.to_thread(services.jobs.collections, tenant)
    timeout = services.settings.search_timeout_s
    dropped = await services.call(DROP_COLLECTION, scoped(tenant, collection), timeout_s=timeout)
    if not known and not dropped:
        raise TritonRagError(ErrorCode.NOT_FOUND, f"collection {collection!r} not found")
    await asyncio.to_thread(services.jobs.remove_collection, tenant, collection)
    return {"collection": collection, "deleted": True}


@router.post("/collections/{collection}/reindex", status_code=202)
async def reindex_collection(
    collection: Collection,
    services: ServicesDep,
    tenant: TenantDep,
    body: ReindexRequest | None = None,
) -> ReindexStatus:
    """Re-index a collection in the background; searches keep answering throughout.

    With `model` (or when the collection was made by another model than the served one):
    every chunk is embedded again into a new collection, which is swapped in when complete
    (follow `rebuild`). Otherwise a collection indexed before sparse vectors existed gets its
    BM25 vectors. Call again, or GET the collection, to follow it."""
    await services.require_collection(tenant, collection)
    name, served = scoped(tenant, collection), services.settings.embed_model
    timeout = services.settings.search_timeout_s
    live = await asyncio.to_thread(services.jobs.where, name, served)
    model = (body.model if body else None) or served
    if (body is None or body.model is None) and live.model == served:
        state = await services.call(REINDEX, name, timeout_s=timeout)
        return ReindexStatus(collection=collection, **state)
    if not await services.embedder.ensure_loaded(model):
        raise TritonRagError(ErrorCode.NOT_FOUND, f"Triton has no embedding model {model!r}")
    physical = await asyncio.to_thread(
        rebuild.start, services.jobs, tenant, collection, model, served
    )
    if physical is not None:
        await asyncio.to_thread(
            services.celery.send_task, REBUILD, args=(tenant, collection, physical), queue=INGEST
        )
    state = await services.call(COLLECTION_INFO, name, timeout_s=timeout)
    return ReindexStatus(collection=collection, started=physical is not None, **state)


@router.get("/collections")
async def list_collections(services: ServicesDep, tenant: TenantDep) -> dict[str, list[str]]:
    return {"data": await asyncio.to_thread(services.jobs.collections, tenant)}


@router.get("/collections/{collection}")
async def get_collection(
    collection: Collection, services: ServicesDep, tenant: TenantDep
) -> CollectionStatus:
    """What the store holds: points, sparse vectors, a build running, and the embedding model
    that made the vectors (a search or upload with another model is refused with 409)."""
    await services.require_collection(tenant, collection)
    timeout = services.settings.search_timeout_s
    state = await services.call(COLLECTION_INFO, scoped(tenant, collection), timeout_s=timeout)
    return CollectionStatus(collection=collection, **state)
