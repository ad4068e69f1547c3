"""Ask a collection: one JSON answer, or server-sent events as it is written."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from orchestrator.api.answers import answer_events
from orchestrator.api.deps import ServicesDep, TenantDep
from orchestrator.api.passages import Question, check_question
from orchestrator.api.routes.documents import Collection
from orchestrator.api.schemas import ERROR_RESPONSES, AskRequest, AskResponse
from orchestrator.errors import TritonRagError

router = APIRouter(prefix="/v1", tags=["answers"], responses=ERROR_RESPONSES)


@router.post("/collections/{collection}/ask", response_model=None)
async def ask_collection(
    collection: Collection, body: AskRequest, services: ServicesDep, tenant: TenantDep
) -> AskResponse | EventSourceResponse:
    """JSON: answer, citations, grounding, usage, timings. SSE (`stream: true`): `token`
    events, `grounding`, on an auto fallback `answer` (the quote that replaces the tokens), one
    `citations` event, `done`; an error after the stream began is an `error` event."""
    q = Question(
        tenant,
        collection,
        body.question,
        body.top_k or services.settings.answer_top_k,
        dict(body.filters),
        [{"role": t.role, "content": t.content} for t in body.history if t.content.strip()],
        body.mode,
        answer_mode=body.answer_mode,
    )
    await check_question(services, q)
    if body.stream:
        return EventSourceResponse(_sse(services, q), ping=15)
    answer: dict[str, Any] = {}
    async for event in answer_events(services, q):
        answer.update({k: v for k, v in event.items() if k not in ("type", "text")})
    return AskResponse(collection=collection, question=body.question, **answer)


async def _sse(services: ServicesDep, q: Question) -> AsyncIterator[dict[str, str]]:
    try:
        # aclosing: when the client goes away this generator is closed, and so is the answer
        # (which tells the llm lane to stop).
        async with aclosing(answer_events(services, q)) as events:
            async for event in events:
                kind = event.pop("type")
                yield {"event": kind, "data": json.dumps(event)}
    except TritonRagError as exc:
        yield {"event": "error", "data": json.dumps(exc.body()["error"])}
