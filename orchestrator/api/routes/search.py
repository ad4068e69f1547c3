"""Search a collection: embed the query (Triton, query priority), search on the query lane."""

from __future__ import annotations

from fastapi import APIRouter

from orchestrator.api.deps import ServicesDep, TenantDep
from orchestrator.api.routes.documents import Collection
from orchestrator.api.schemas import ERROR_RESPONSES, SearchHit, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1", tags=["search"], responses=ERROR_RESPONSES)


@router.post("/collections/{collection}/search")
async def search_collection(
    collection: Collection, body: SearchRequest, services: ServicesDep, tenant: TenantDep
) -> SearchResponse:
    vector, live = await services.search_vector(tenant, collection, body.query)
    found = await services.searches.search(
        live.physical,
        vector,
        body.top_k,
        body.filters,
        text=body.query,
        mode=body.mode,
        model=live.model,
    )
    return SearchResponse(
        collection=collection,
        query=body.query,
        mode=found.mode,
        data=[SearchHit(**h) for h in found.hits],
    )
