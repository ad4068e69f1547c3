"""Triton python-backend model: UTF-8 text in, L2-normalised embedding out.

Thin: it validates each request, hands every text of the dynamic batch to one
`OnnxEncoder.encode` call (which regroups them by length) and splits the result back.
Export copies this file, `encoder.py`, `startup.py`, the ONNX graph, `tokenizer.json` and
`variant.json` into each model's version folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

# Rayon's tokenizer threads would fight ONNX Runtime for the same cores.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import triton_python_backend_utils as pb_utils  # provided by the stub at run time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder import OnnxEncoder, decode_texts
from startup import model_args


class TritonPythonModel:
    """Text embedding model served by Triton's python backend."""

    def initialize(self, args: dict[str, Any]) -> None:
        folder, params = model_args(args)
        self.max_chars = int(params.get("max_chars", "200000"))
        self.encoder = OnnxEncoder(
            folder,
            threads=int(params.get("intra_op_threads", "1")),
            parallel=int(params.get("parallel_runs", "1")),
            max_waste=float(params.get("max_padding_waste", "0.1")),
            max_group=int(params.get("max_group", "64")),
            # Unset: the value export measured on this CPU (variant.json).
            max_group_tokens=int(t) if (t := params.get("max_group_tokens")) else None,
        )
        self.variant = self.encoder.meta.variant.encode()

    def execute(self, requests: list[Any]) -> list[Any]:
        texts: list[str] = []
        spans: list[Any] = []  # (start, end) into texts, or the request's TritonError
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            decoded = decode_texts(raw, self.max_chars)
            if isinstance(decoded, list):
                spans.append((len(texts), len(texts) + len(decoded)))
                texts.extend(decoded)
            else:
                spans.append(_invalid(decoded))

        embeddings, counts = self.encoder.encode(texts)
        return [
            self._respond(request, span, embeddings, counts)
            for request, span in zip(requests, spans, strict=True)
        ]

    def _respond(self, request: Any, span: Any, embeddings: np.ndarray, counts: np.ndarray) -> Any:
        if not isinstance(span, tuple):
            return pb_utils.InferenceResponse(output_tensors=[], error=span)
        start, end = span
        outputs = [
            pb_utils.Tensor("embedding", embeddings[start:end]),
            pb_utils.Tensor("token_count", counts[start:end].reshape(-1, 1)),
            pb_utils.Tensor("variant", np.full((end - start, 1), self.variant, dtype=np.object_)),
        ]
        wanted = set(request.requested_output_names())
        return pb_utils.InferenceResponse(
            output_tensors=[t for t in outputs if not wanted or t.name() in wanted]
        )

    def finalize(self) -> None:
        del self.encoder


def _invalid(message: str) -> Any:
    return pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
