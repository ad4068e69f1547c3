"""The `llm` model's engines: llama.cpp or OpenVINO GenAI, both reading the same GGUF.

One interface, so the Triton model (`llm.py`) streams, counts and cancels the same way
whichever engine publish-llm chose for this CPU (`engine.json` in the version folder). Copied
beside `model.py`; imports nothing of ours, so the tests load it as it is served.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

ENGINES = ("llama.cpp", "openvino")
# llama.cpp's sampling defaults, given to OpenVINO too so temperature > 0 samples alike.
TOP_P, TOP_K = 0.95, 40
# OpenVINO GenAI's own form of the GGUF (with its tokenizer models), saved beside it.
OPENVINO_IR = "openvino_model.xml"

# Gets each piece of text as it is generated; returns False to stop generating.
OnPiece = Callable[[str], bool]


class Engine(Protocol):
    name: str
    n_ctx: int

    def count(self, prompt: str) -> int:
        """Tokens the prompt takes, counted as generation will read it."""
        ...

    def generate(self, prompt: str, sampling: dict[str, Any], on_piece: OnPiece) -> int:
        """Generate for an already-templated prompt; returns the tokens generated."""
        ...

    def close(self) -> None: ...


class LlamaCpp:
    name = "llama.cpp"

    def __init__(
        self, gguf: Path, n_ctx: int, threads: int, n_batch: int, flash_attn: bool
    ) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(gguf),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=n_batch,
            flash_attn=flash_attn,
            verbose=False,
        )
        self.n_ctx = self.llm.n_ctx()

    def count(self, prompt: str) -> int:
        # As create_completion counts it: BOS added, special tokens parsed.
        return len(self.llm.tokenize(prompt.encode(), special=True))

    def generate(self, prompt: str, sampling: dict[str, Any], on_piece: OnPiece) -> int:
        pieces = self.llm.create_completion(prompt, stream=True, **sampling)
        produced = 0
        try:
            for piece in pieces:
                choice = piece["choices"][0]
                produced += choice["finish_reason"] is None  # the closing piece is no token
                if not on_piece(choice["text"]):
                    break
        finally:
            pieces.close()  # stops llama.cpp when we leave early
        return produced

    def close(self) -> None:
        self.llm.close()


class OpenVINOGenAI:
    """OpenVINO GenAI's LLMPipeline on the IR publish-llm converted beside the GGUF, or on
    the GGUF itself (converted again at every load, about twice as slow to load)."""

    name = "openvino"

    def __init__(self, gguf: Path, n_ctx: int, threads: int) -> None:
        import openvino_genai as og

        self.og = og
        self.source = gguf.parent if (gguf.parent / OPENVINO_IR).is_file() else gguf
        self.pipe = og.LLMPipeline(str(self.source), "CPU", INFERENCE_NUM_THREADS=threads)
        self.tokenizer = self.pipe.get_tokenizer()
        self.n_ctx = n_ctx  # OpenVINO has no fixed window: keep llama.cpp's, the same contract

    def count(self, prompt: str) -> int:
        return int(self.tokenizer.encode(prompt).input_ids.get_shape()[1])

    def generate(self, prompt: str, sampling: dict[str, Any], on_piece: OnPiece) -> int:
        og = self.og

        def streamer(text: str) -> Any:
            go = on_piece(text)
            return og.StreamingStatus.RUNNING if go else og.StreamingStatus.STOP

        # A list in, DecodedResults out (a plain string would return only the text).
        result = self.pipe.generate([prompt], self._config(sampling), streamer)
        return int(result.perf_metrics.get_num_generated_tokens())

    def _config(self, sampling: dict[str, Any]) -> Any:
        config = self.og.GenerationConfig()
        config.apply_chat_template = False  # the orchestrator sends the templated prompt
        config.max_new_tokens = int(sampling["max_tokens"])
        config.repetition_penalty = float(sampling.get("repeat_penalty", 1.0))
        stop = sampling.get("stop") or []
        if stop:
            config.stop_strings = set(stop)
            config.include_stop_str_in_output = False
        temperature = float(sampling.get("temperature", 0))
        if temperature > 0:
            config.do_sample = True
            config.temperature = temperature
            config.top_p = float(sampling.get("top_p", TOP_P))
            config.top_k = int(sampling.get("top_k", TOP_K))
            if "seed" in sampling:
                config.rng_seed = int(sampling["seed"])
        return config

    def close(self) -> None:
        del self.pipe


def open_engine(folder: Path, params: dict[str, str]) -> Engine:
    """The engine publish-llm chose, named in `folder/engine.json` (llama.cpp if none)."""
    choice = folder / "engine.json"
    name = json.loads(choice.read_text())["engine"] if choice.is_file() else "llama.cpp"
    return load(name, folder / params.get("gguf", "model.gguf"), params)


def load(name: str, gguf: Path, params: dict[str, str]) -> Engine:
    threads = int(params.get("n_threads", "0")) or (os.cpu_count() or 1)
    n_ctx = int(params.get("n_ctx", "2048"))
    if name == "llama.cpp":
        n_batch = int(params.get("n_batch", "512"))
        flash_attn = params.get("flash_attn", "on") == "on"
        return LlamaCpp(gguf, n_ctx, threads, n_batch, flash_attn)
    if name == "openvino":
        return OpenVINOGenAI(gguf, n_ctx, threads)
    raise ValueError(f"unknown LLM engine {name!r}: one of {', '.join(ENGINES)}")
