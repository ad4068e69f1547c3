"""Triton python-backend model for the gpu target: validated UTF-8 text -> padded token ids.

The encoder after it (TensorRT or onnxruntime backend) runs on the GPU. Export copies this
file as `model.py`, with `encoder.py`, `startup.py`, `tokenizer.json` and `variant.json`,
into `tokenize/1/`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import triton_python_backend_utils as pb_utils  # provided by the stub at run time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder import Variant, decode_texts, pad
from startup import model_args
from tokenizers import Tokenizer


class TritonPythonModel:
    """Tokeniser step of the gpu `embed` ensembles."""

    def initialize(self, args: dict[str, Any]) -> None:
        folder, params = model_args(args)
        self.max_chars = int(params.get("max_chars", "200000"))
        self.meta = Variant.load(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.meta.max_seq_length)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            texts = decode_texts(raw, self.max_chars)
            if isinstance(texts, str):
                error = pb_utils.TritonError(texts, pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
            ids, mask = pad(encodings, self.meta.pad_token_id)
            counts = mask.sum(axis=1, dtype="int32").reshape(-1, 1)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("input_ids", ids),
                        pb_utils.Tensor("attention_mask", mask),
                        pb_utils.Tensor("token_count", counts),
                    ]
                )
            )
        return responses
