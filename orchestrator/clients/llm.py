"""LLM adapters behind one protocol: `triton` (gRPC stream to a decoupled model speaking the
vLLM/TensorRT-LLM tensor names) and `openai` (any OpenAI-compatible chat endpoint).

Both take chat messages; the Triton adapter renders them with the model's own chat template
(the model takes a finished prompt, as Triton's vLLM backend does). Errors come out in the
project's vocabulary (orchestrator/errors.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import openai
import tritonclient.grpc.aio as grpcclient

from orchestrator.clients.chat_template import ChatTokenizer, Message, open_tokenizer
from orchestrator.clients.triton import map_error
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.settings import Settings
from orchestrator.tracing import grpc_headers


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    repeat_penalty: float = 1.0  # llama.cpp's; 1.0 is off

    def as_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.stop:
            values["stop"] = list(self.stop)
        if self.repeat_penalty != 1.0:
            values["repeat_penalty"] = self.repeat_penalty
        return values


@dataclass(frozen=True)
class Delta:
    """A piece of the answer; the last one also carries token counts when the LLM gave them."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class LLM(Protocol):
    name: str
    tokenizer: ChatTokenizer

    def stream(self, messages: list[Message], sampling: Sampling) -> AsyncGenerator[Delta, None]:
        """Yield the answer as it is generated; closing the iterator cancels generation."""
        ...

    async def aclose(self) -> None: ...


class TritonLLM:
    """Triton's `llm` model over gRPC streaming (one stream per answer, cancelled on close)."""

    def __init__(self, url: str, model: str, tokenizer: ChatTokenizer) -> None:
        self._client = grpcclient.InferenceServerClient(url)
        self.name = model
        self.tokenizer = tokenizer

    async def stream(
        self, messages: list[Message], sampling: Sampling
    ) -> AsyncGenerator[Delta, None]:
        prompt = self.tokenizer.render(messages)
        request = {
            "model_name": self.name,
            "inputs": _inputs(prompt, sampling),
            "request_id": uuid.uuid4().hex,
            # Marks the last response of the stream (the aio client has no flag for it).
            "parameters": {"triton_enable_empty_final_response": True},
        }

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield request

        responses = self._client.stream_infer(requests(), headers=grpc_headers())
        try:
            async for result, error in responses:
                if error is not None:
                    raise map_error(error, self.name)
                yield _delta(result)
                if _final(result):
                    return
        finally:
            responses.cancel()  # the gRPC stream, and with it the request inside Triton
        raise TritonRagError(ErrorCode.NOT_READY, "Triton closed the stream early", 2)

    async def aclose(self) -> None:
        await self._client.close()


class OpenAILLM:
    """Any OpenAI-compatible chat endpoint (vLLM, NIM, llama.cpp server, a hosted API)."""

    def __init__(self, settings: Settings, tokenizer: ChatTokenizer) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key or "none",
            timeout=settings.llm_timeout_s,
            max_retries=settings.llm_retries,
        )
        self.name = settings.llm_model
        self.tokenizer = tokenizer

    async def stream(
        self, messages: list[Message], sampling: Sampling
    ) -> AsyncGenerator[Delta, None]:
        try:
            chunks = await self._client.chat.completions.create(
                model=self.name,
                messages=cast(Any, messages),
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                stop=list(sampling.stop) or None,
                # Not in OpenAI's API: vLLM's name for it, sent only when it is on.
                extra_body={"repetition_penalty": sampling.repeat_penalty}
                if sampling.repeat_penalty != 1.0
                else None,
                stream=True,
                stream_options={"include_usage": True},
            )
            async with chunks:
                async for chunk in chunks:
                    text = "".join(c.delta.content or "" for c in chunk.choices)
                    usage = chunk.usage
                    if usage is not None:
                        yield Delta(text, usage.prompt_tokens, usage.completion_tokens)
                    elif text:
                        yield Delta(text)
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from exc

    async def aclose(self) -> None:
        await self._client.close()


async def openai_ready(settings: Settings) -> bool:
    """The OpenAI-compatible endpoint lists its models."""
    client = openai.AsyncOpenAI(
        base_url=settings.llm_base_url, api_key=settings.llm_api_key or "none", timeout=5
    )
    try:
        await client.models.list()
    except openai.OpenAIError:
        return False
    finally:
        await client.close()
    return True


def open_llm(settings: Settings) -> LLM:
    """The adapter the settings choose."""
    tokenizer = open_tokenizer(settings)
    if settings.llm_backend == "openai":
        if not settings.llm_base_url:
            raise SystemExit("llm_backend=openai needs TRITONRAG_LLM_BASE_URL")
        return OpenAILLM(settings, tokenizer)
    return TritonLLM(settings.triton_grpc_url, settings.llm_model, tokenizer)


def map_openai_error(exc: openai.OpenAIError) -> TritonRagError:
    if isinstance(exc, openai.APITimeoutError):
        return TritonRagError(ErrorCode.UPSTREAM_TIMEOUT, f"the LLM did not answer in time: {exc}")
    if isinstance(exc, openai.RateLimitError):
        return TritonRagError(ErrorCode.OVERLOADED, f"the LLM is overloaded: {exc}", 5)
    if isinstance(exc, openai.APIStatusError) and 400 <= exc.status_code < 500:
        return TritonRagError(ErrorCode.INVALID_INPUT, f"the LLM refused the request: {exc}")
    return TritonRagError(ErrorCode.NOT_READY, f"the LLM is unavailable: {exc}", 5)


def _inputs(prompt: str, sampling: Sampling) -> list[grpcclient.InferInput]:
    values = {
        "text_input": ("BYTES", np.array([prompt.encode()], dtype=np.object_)),
        "stream": ("BOOL", np.array([True])),
        "sampling_parameters": (
            "BYTES",
            np.array([json.dumps(sampling.as_dict()).encode()], dtype=np.object_),
        ),
        "exclude_input_in_output": ("BOOL", np.array([True])),
    }
    inputs = []
    for name, (dtype, data) in values.items():
        tensor = grpcclient.InferInput(name, [1], dtype)
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def _delta(result: grpcclient.InferResult) -> Delta:
    text = result.as_numpy("text_output")
    pieces = [] if text is None else [bytes(t).decode("utf-8", "replace") for t in text.ravel()]
    prompt = result.as_numpy("num_input_tokens")
    produced = result.as_numpy("num_output_tokens")
    return Delta(
        "".join(pieces),
        None if prompt is None else int(prompt.ravel()[0]),
        None if produced is None else int(produced.ravel()[0]),
    )


def _final(result: grpcclient.InferResult) -> bool:
    parameters = result.get_response().parameters
    return "triton_final_response" in parameters and bool(
        parameters["triton_final_response"].bool_param
    )
