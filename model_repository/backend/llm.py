"""Triton python-backend model `llm`: a small instruct model, decoupled, run by the engine
publish-llm chose for this CPU (llama.cpp or OpenVINO GenAI, `llm_engine.py`).

It speaks the tensor contract of Triton's vLLM and TensorRT-LLM backends, so clients and
Triton's generate endpoints work unchanged when the gpu target swaps one of those in:
inputs `text_input` (the prompt, already templated), `stream`, `sampling_parameters` (JSON),
`exclude_input_in_output`, `max_tokens`, `temperature`; output `text_output`, plus
`num_input_tokens` / `num_output_tokens` on the final response.

Streaming sends the first token at once, then one response per `stream_tokens` tokens, then
an empty final response. A cancelled request (client gone, gRPC stream cancelled) stops at
the next token. Publishing (`tritonrag publish-llm`) copies this file to `llm/1/model.py`,
with `startup.py` and `llm_engine.py`, beside `model.gguf` and `engine.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the stub at run time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_engine import open_engine
from startup import model_args

SAMPLING_KEYS = {"max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "repeat_penalty"}
MAX_PROMPT_CHARS = 200_000


class TritonPythonModel:
    """An LLM engine behind Triton's LLM tensor names."""

    def initialize(self, args: dict[str, Any]) -> None:
        folder, params = model_args(args)
        self.engine = open_engine(folder, params)
        pb_utils.Logger.log_info(f"llm: engine {self.engine.name}")
        self.defaults = {
            "max_tokens": int(params.get("max_tokens", "256")),
            "temperature": float(params.get("temperature", "0")),
        }
        self.group = max(1, int(params.get("stream_tokens", "4")))

    def execute(self, requests: list[Any]) -> None:
        # One instance, one generation at a time: llama.cpp's context is not shared.
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._generate(request, sender)
            except _BadRequest as exc:
                _fail(sender, str(exc), pb_utils.TritonError.INVALID_ARG)
            except Exception as exc:  # engine errors must still close the stream
                _fail(sender, f"{type(exc).__name__}: {exc}", pb_utils.TritonError.INTERNAL)
        return None

    def _generate(self, request: Any, sender: Any) -> None:
        prompt = _text(request)
        stream = _flag(request, "stream", False)
        exclude = _flag(request, "exclude_input_in_output", stream)
        sampling = self._sampling(request)
        prompt_tokens = self.engine.count(prompt)
        window = self.engine.n_ctx
        if prompt_tokens >= window:
            raise _BadRequest(f"prompt has {prompt_tokens} tokens; the context window is {window}")
        sampling["max_tokens"] = min(int(sampling["max_tokens"]), window - prompt_tokens)
        pending: list[str] = []
        sent = 0
        cancelled = False

        def on_piece(text: str) -> bool:
            nonlocal pending, sent, cancelled
            if request.is_cancelled():
                cancelled = True
                return False
            pending.append(text)
            if stream and (sent == 0 or len(pending) >= self.group):
                sender.send(_response("".join(pending)))
                pending, sent = [], sent + 1
            return True

        produced = self.engine.generate(prompt, sampling, on_piece)
        if cancelled:
            pb_utils.Logger.log_info(f"llm: request cancelled after {produced} tokens")
            _fail(sender, "request cancelled", pb_utils.TritonError.CANCELLED)
            return
        text = "".join(pending)
        if not stream and not exclude:
            text = prompt + text
        final = _response(text, prompt_tokens, produced)
        sender.send(final, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _sampling(self, request: Any) -> dict[str, Any]:
        values: dict[str, Any] = dict(self.defaults)
        raw = _optional(request, "sampling_parameters")
        if raw is not None:
            try:
                values.update(json.loads(_decode(raw)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise _BadRequest(f"sampling_parameters is not a JSON object: {exc}") from exc
        # Triton's generate endpoint passes JSON "parameters" as request parameters.
        values.update(json.loads(request.parameters() or "{}"))
        for name in ("max_tokens", "temperature"):
            tensor = _optional(request, name)
            if tensor is not None:
                values[name] = tensor.item()
        values = {k: v for k, v in values.items() if k in SAMPLING_KEYS}
        if int(values["max_tokens"]) < 1:
            raise _BadRequest("max_tokens must be at least 1")
        if isinstance(values.get("stop"), str):
            values["stop"] = [values["stop"]]
        return values

    def finalize(self) -> None:
        self.engine.close()


class _BadRequest(ValueError):
    """The request itself is wrong: INVALID_ARG, not INTERNAL."""


def _optional(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)[0]


def _decode(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _text(request: Any) -> str:
    raw = _optional(request, "text_input")
    if raw is None:
        raise _BadRequest("text_input is required")
    try:
        text = _decode(raw)
    except UnicodeDecodeError as exc:
        raise _BadRequest("text_input is not valid UTF-8") from exc
    if not text.strip():
        raise _BadRequest("text_input is empty")
    if len(text) > MAX_PROMPT_CHARS:
        raise _BadRequest(f"text_input has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
    return text


def _flag(request: Any, name: str, default: bool) -> bool:
    value = _optional(request, name)
    return default if value is None else bool(value)


def _response(text: str, prompt_tokens: int | None = None, produced: int | None = None) -> Any:
    tensors = [pb_utils.Tensor("text_output", np.array([text.encode()], dtype=np.object_))]
    if prompt_tokens is not None and produced is not None:
        tensors += [
            pb_utils.Tensor("num_input_tokens", np.array([prompt_tokens], dtype=np.int32)),
            pb_utils.Tensor("num_output_tokens", np.array([produced], dtype=np.int32)),
        ]
    return pb_utils.InferenceResponse(output_tensors=tensors)


def _fail(sender: Any, message: str, code: Any) -> None:
    error = pb_utils.TritonError(message, code)
    sender.send(
        pb_utils.InferenceResponse(output_tensors=[], error=error),
        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
    )
