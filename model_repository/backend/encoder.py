"""Tokenise + ONNX Runtime or OpenVINO, the exact code Triton's python backend runs.

Shared by the served model (export copies this file next to `model.py`), the parity gate
and the raw in-process benchmark, so "raw vs served" compares the same work.
Texts that are encoded together are regrouped by token length, so a short text is not padded
to a long neighbour: padding is what separates served from raw throughput on real text.
`variant.json` names the engine export chose on this CPU: ONNX Runtime (fp32, int8) or
OpenVINO running the fp32 graph (at fp32, or bf16 where the CPU has it); both sit behind one
`run(feeds)`, so grouping, threads and batching are the same whichever won.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import LifoQueue
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from tokenizers import Encoding, Tokenizer

Matrix = NDArray[np.float32]  # rows of embeddings


@dataclass(frozen=True)
class Variant:
    """What `variant.json` in a model version folder says."""

    variant: str
    onnx_file: str
    max_seq_length: int
    pad_token_id: int
    dim: int
    # Padded tokens one ONNX Runtime call may take, measured on this CPU by export/layout.py.
    max_group_tokens: int | None = None
    engine: str = "onnxruntime"  # or "openvino"
    precision: str | None = None  # OpenVINO's inference precision: "f32" or "bf16"

    @property
    def per_call_scales(self) -> bool:
        """Dynamic int8: activations get one scale per call, so texts sharing a call would
        change each other's vectors (by ~0.01 per dimension)."""
        return self.engine == "onnxruntime" and self.variant == "int8"

    @classmethod
    def load(cls, folder: Path) -> Variant:
        return cls(**json.loads((folder / "variant.json").read_text()))

    def save(self, folder: Path) -> None:
        (folder / "variant.json").write_text(json.dumps(self.__dict__, indent=2) + "\n")


def plan_groups(
    lengths: list[int], max_waste: float, max_group: int, max_tokens: int = 1 << 30
) -> list[list[int]]:
    """Split indices into groups of similar length.

    Indices are sorted by length; a group closes when padding it to the next length would
    add more than `max_waste` (a fraction of real tokens), when it holds `max_group` items,
    or when its padded size would pass `max_tokens` (one long text is its own group).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        n = lengths[i]
        if current and (
            len(current) >= max_group
            or n * (len(current) + 1) > (real + n) * (1.0 + max_waste)
            or n * (len(current) + 1) > max_tokens
        ):
            groups.append(current)
            current, real = [], 0
        current.append(i)
        real += n
    if current:
        groups.append(current)
    return groups


def pad(encodings: list[Encoding], pad_id: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """input_ids and attention_mask, padded to the longest encoding (never to the maximum)."""
    width = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        ids[row, : len(enc.ids)] = enc.ids
        mask[row, : len(enc.ids)] = 1
    return ids, mask


def decode_texts(raw: Iterable[object], max_chars: int) -> list[str] | str:
    """One request's texts as str, or the message saying why the request is refused."""
    texts = []
    for k, item in enumerate(raw):
        data = item if isinstance(item, bytes) else str(item).encode()
        if not data:
            return f"text[{k}] is empty"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"text[{k}] is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        if len(text) > max_chars:
            return f"text[{k}] has {len(text)} characters; the limit is {max_chars}"
        texts.append(text)
    return texts


def session_options(threads: int) -> ort.SessionOptions:
    """Explicit threads: ONNX Runtime's default takes every core, per session."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn the cores that other instances need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class Session(Protocol):
    input_names: list[str]

    def run(self, feeds: dict[str, NDArray[np.int64]]) -> Matrix: ...


class OrtSession:
    def __init__(self, path: Path, threads: int) -> None:
        self.session = ort.InferenceSession(
            str(path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, NDArray[np.int64]]) -> Matrix:
        (out,) = self.session.run(["embedding"], feeds)
        return np.asarray(out, dtype=np.float32)


class OpenVinoSession:
    """One infer request of a model compiled once per encoder: the weights are shared by
    every parallel run. The compiled blob is cached next to the model, so a restart of Triton
    skips compilation."""

    def __init__(self, compiled: Any) -> None:
        self.request = compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in compiled.inputs]

    def run(self, feeds: dict[str, NDArray[np.int64]]) -> Matrix:
        out = self.request.infer(feeds, share_inputs=True)  # releases the GIL while it runs
        return np.asarray(out["embedding"], dtype=np.float32)


def compile_openvino(path: Path, threads: int, precision: str) -> Any:
    import openvino as ov  # only where OpenVINO won: ~180 MB of libraries stay unloaded

    cache = path.parent / "openvino_cache"
    cache.mkdir(exist_ok=True)
    core = ov.Core()
    core.set_property({"CACHE_DIR": str(cache)})
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": precision,
    }
    # Triton starts the instances side by side: compiling at once, they wrote the same cache
    # blob and one failed to load. One at a time, the first writes it and the rest read it.
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return core.compile_model(core.read_model(str(path)), "CPU", config)


def open_sessions(folder: Path, meta: Variant, threads: int, count: int) -> list[Session]:
    path = folder / meta.onnx_file
    if meta.engine == "openvino":
        compiled = compile_openvino(path, threads, meta.precision or "f32")
        return [OpenVinoSession(compiled) for _ in range(count)]
    # One session per parallel run: sessions shared across threads contend on their arena.
    return [OrtSession(path, threads) for _ in range(count)]


class OnnxEncoder:
    """Texts in, L2-normalised float32 embeddings out (pooling is inside the graph), on the
    engine `variant.json` names."""

    def __init__(
        self,
        folder: Path,
        threads: int = 1,
        parallel: int = 1,
        max_waste: float = 0.1,
        max_group: int = 64,
        max_group_tokens: int | None = None,
    ) -> None:
        self.meta = Variant.load(folder)
        # Groups run side by side on `parallel` threads (ONNX Runtime releases the GIL), so one
        # Triton instance keeps every core busy whatever batch the dynamic batcher hands it.
        self.pool = ThreadPoolExecutor(parallel, "ort") if parallel > 1 else None
        self.max_waste = max_waste
        self.max_group = 1 if self.meta.per_call_scales else max_group
        self.parallel = parallel
        # Given, else what export measured on this CPU, else bounded by padding waste only.
        self.max_group_tokens = max_group_tokens or self.meta.max_group_tokens or 1 << 30
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.meta.max_seq_length)
        # LIFO: when idle, the session that ran last (its memory still in cache) runs next.
        self.sessions: LifoQueue[Session] = LifoQueue()
        for session in open_sessions(folder, self.meta, threads, parallel):
            self.sessions.put(session)
        self.needs_token_types = "token_type_ids" in self.sessions.queue[0].input_names

    def encode(self, texts: list[str]) -> tuple[Matrix, NDArray[np.int32]]:
        """Embeddings `[n, dim]` and token counts `[n]` (after truncation)."""
        if not texts:
            return np.zeros((0, self.meta.dim), np.float32), np.zeros(0, np.int32)
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        lengths = [len(e.ids) for e in encodings]
        result = np.empty((len(texts), self.meta.dim), dtype=np.float32)
        # At least one group per parallel run, or a batch of similar texts keeps one core busy.
        per_run = -(-len(texts) // self.parallel)
        groups = plan_groups(
            lengths, self.max_waste, min(self.max_group, per_run), self.max_group_tokens
        )
        # Longest work first, so the parallel runs finish close together.
        groups.sort(key=lambda g: -max(lengths[i] for i in g) * len(g))
        batches = [[encodings[i] for i in g] for g in groups]
        # A lone group (a query) runs on this thread: the hand-off cost it ~0.5 ms.
        pool = self.pool if len(batches) > 1 else None
        outputs = pool.map(self.run, batches) if pool else map(self.run, batches)
        for group, out in zip(groups, outputs, strict=True):
            result[group] = out
        return result, np.asarray(lengths, dtype=np.int32)

    def run(self, encodings: list[Encoding]) -> Matrix:
        """One engine call on texts padded to the longest of them."""
        ids, mask = pad(encodings, self.meta.pad_token_id)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self.needs_token_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        session = self.sessions.get()
        try:
            return session.run(feeds)
        finally:
            self.sessions.put(session)
