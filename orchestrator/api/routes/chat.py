"""OpenAI-compatible chat completions over a collection (`model` = collection) and the model
list. Citations and grounding travel in extension fields (`citations`, `grounding`,
`supported`, `answer_mode`, `generated`; on the final chunk when streaming).

Streamed tokens cannot be taken back: when auto mode finds the streamed answer not supported
enough, the stream goes on with FALLBACK_NOTE and the quote, and the final chunk says
`answer_mode: "quote"`. Not streamed, `content` is the quote alone."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from orchestrator.api.answers import answer_events
from orchestrator.api.deps import ServicesDep, TenantDep
from orchestrator.api.passages import Question, check_question
from orchestrator.api.schemas import ERROR_RESPONSES, ChatMessage, ChatRequest
from orchestrator.clients.chat_template import Message
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.jobs import collections_key

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)
FALLBACK_NOTE = "\n\n(Not supported by the sources. What they say:)\n"
EXTENSIONS = ("grounding", "supported", "answer_mode", "generated")


@router.get("/models")
async def list_models(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """The tenant's collections (chat models) and the embedding model with its aliases."""
    s = services.settings
    collections: set[bytes] = await services.redis.smembers(  # type: ignore[assignment]
        collections_key(tenant)
    )
    rows = [_model(c.decode(), tenant, "collection") for c in sorted(collections)]
    rows += [_model(m, "tritonrag", "embedding") for m in [s.embed_model, *s.embed_model_aliases]]
    return {"object": "list", "data": rows}


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatRequest, services: ServicesDep, tenant: TenantDep
) -> dict[str, Any] | EventSourceResponse:
    question, history = _split(body.messages)
    q = Question(
        tenant,
        body.model,
        question,
        body.top_k or services.settings.answer_top_k,
        dict(body.filters),
        history,
        body.mode,
        answer_mode=body.answer_mode,
    )
    await check_question(services, q)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        usage = bool((body.stream_options or {}).get("include_usage"))
        return EventSourceResponse(_chunks(services, q, completion_id, usage), ping=15)
    done: dict[str, Any] = {}
    citations: list[dict[str, Any]] = []
    grounded: dict[str, Any] = {}
    async for event in answer_events(services, q):
        if event["type"] == "done":
            done = event
        elif event["type"] == "citations":
            citations = event["citations"]
        elif event["type"] == "grounding":
            grounded = event
    return {
        **_envelope(completion_id, body.model, "chat.completion"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": done["answer"]},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(done),
        "citations": citations,
        **_extensions(grounded, done),
    }


def _extensions(grounded: dict[str, Any], done: dict[str, Any]) -> dict[str, Any]:
    return {k: grounded.get(k, done.get(k)) for k in EXTENSIONS}


def _split(messages: list[ChatMessage]) -> tuple[str, list[Message]]:
    """The last user message is the question; earlier user/assistant turns are history."""
    if messages[-1].role != "user":
        raise TritonRagError(ErrorCode.INVALID_INPUT, "the last message must be the user's")
    history: list[Message] = [
        {"role": "user" if m.role == "user" else "assistant", "content": m.text()}
        for m in messages[:-1]
        if m.role in ("user", "assistant") and m.text().strip()
    ]
    return messages[-1].text(), history


async def _chunks(
    services: ServicesDep, q: Question, completion_id: str, include_usage: bool
) -> AsyncIterator[dict[str, str]]:
    head = _envelope(completion_id, q.collection, "chat.completion.chunk")

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, str]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"data": json.dumps({**head, "choices": [choice], **extra})}

    yield chunk({"role": "assistant", "content": ""})
    citations: list[dict[str, Any]] = []
    grounded: dict[str, Any] = {}
    try:
        async with aclosing(answer_events(services, q)) as events:
            async for event in events:
                if event["type"] == "token":
                    yield chunk({"content": event["text"]})
                elif event["type"] == "answer":  # auto fallback: the quote follows the tokens
                    yield chunk({"content": FALLBACK_NOTE + event["answer"]})
                elif event["type"] == "grounding":
                    grounded = event
                elif event["type"] == "citations":
                    citations = event["citations"]
                elif event["type"] == "done":
                    extra = _extensions(grounded, event)
                    yield chunk({}, "stop", citations=citations, **extra)
                    if include_usage:
                        yield {"data": json.dumps({**head, "choices": [], "usage": _usage(event)})}
    except TritonRagError as exc:
        yield {"data": json.dumps(exc.body())}
    yield {"data": "[DONE]"}


def _envelope(completion_id: str, model: str, kind: str) -> dict[str, Any]:
    return {"id": completion_id, "object": kind, "created": int(time.time()), "model": model}


def _usage(done: dict[str, Any]) -> dict[str, int]:
    prompt = int(done["usage"].get("prompt_tokens") or 0)
    completion = int(done["usage"].get("completion_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _model(name: str, owner: str, kind: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner, "tritonrag_kind": kind}
