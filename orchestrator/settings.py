"""The one settings class. Every field is also an env var: TRITONRAG_<FIELD>."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


# Every port the embedded stack binds: tests and benchmarks choose free ones for all of them.
PORT_FIELDS = (
    "redis_port",
    "triton_http_port",
    "triton_grpc_port",
    "triton_metrics_port",
    "port",
    "worker_metrics_port",
    "llm_worker_metrics_port",
    "prometheus_port",
)


class Settings(BaseSettings):
    """Runtime configuration, read once at startup and passed down."""

    model_config = SettingsConfigDict(env_prefix="TRITONRAG_", extra="ignore")

    triton_host: str = Field("127.0.0.1", description="Address Triton binds to and clients dial.")
    triton_http_port: int = Field(8000, description="Triton HTTP/REST port.")
    triton_grpc_port: int = Field(8001, description="Triton gRPC port.")
    triton_metrics_port: int = Field(8002, description="Triton Prometheus metrics port.")
    triton_cache_mb: int = Field(
        64, description="Size of Triton's response cache in MiB; 0 turns the cache off."
    )
    triton_ready_timeout_s: float = Field(
        180.0, description="How long `tritonrag triton` waits for /v2/health/ready."
    )
    model_repository: Path = Field(
        ROOT / "model_repository" / "cpu", description="Triton model repository to serve."
    )
    runtime_dir: Path = Field(
        ROOT / ".runtime", description="Logs, pid files and the prepared backend directory."
    )
    embed_model: str = Field("embed", description="Triton model name used for embeddings.")
    triton_load_all: bool = Field(
        False,
        description="Load every published model when Triton starts. Off: only the served ones "
        "(embed_model, and llm_model with the triton LLM backend); the others (embed_fp32, "
        "embed_int8) load on first use through Triton's model control.",
    )
    tokenizer_dir: Path | None = Field(
        None,
        description="Folder with the model's tokenizer.json and variant.json, for chunking "
        "(default: <model_repository>/<embed_model>/1; gpu target: .../tokenize/1).",
    )
    embed_model_aliases: list[str] = Field(
        ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"],
        description="Other names /v1/embeddings accepts for embed_model (OpenAI `model`).",
    )
    embed_timeout_s: float = Field(30.0, description="Deadline of one embedding call to Triton.")
    model_guard_interval_s: float = Field(
        1.0,
        description="Seconds between the API's checks that each loaded python-backend model "
        "still has its stub processes (a dead one is reloaded); 0 turns the guard off. It "
        "watches a tritonserver on the API's own host.",
    )
    embed_max_chars: int = Field(
        200_000, description="Longest text accepted for embedding; longer is an error."
    )
    source_model_dir: Path | None = Field(
        None, description="sentence-transformers model directory to export (default: MiniLM)."
    )
    export_dir: Path = Field(
        ROOT / ".models", description="Where export writes ONNX files and parity reports."
    )
    # --- orchestrator, workers, stores (issue 3) ---
    host: str = Field("127.0.0.1", description="Address the orchestrator binds to.")
    port: int = Field(8080, description="Orchestrator HTTP port.")
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description='API key -> tenant, as JSON ({"key": "tenant"}); empty means no auth.',
    )
    redis_url: str | None = Field(
        None, description="Redis for broker, results, job state; unset: start the embedded one."
    )
    redis_port: int = Field(6390, description="Port of the embedded redis-server.")
    qdrant_url: str | None = Field(
        None, description="Qdrant server for vectors; unset: an embedded qdrant-edge shard."
    )
    qdrant_api_key: str | None = Field(None, description="API key for the Qdrant server.")
    qdrant_shard_number: int | None = Field(
        None,
        ge=1,
        description="Shards of the model's collection on a Qdrant cluster (None: "
        "the server's default, one per node).",
    )
    qdrant_replication_factor: int | None = Field(
        None,
        ge=1,
        description="Copies of each shard on a Qdrant cluster (None: the server's default, 1).",
    )
    qdrant_write_consistency_factor: int | None = Field(
        None,
        ge=1,
        description="Replicas that must apply a write before it is acknowledged "
        "(None: the server's default, 1).",
    )
    qdrant_write_ordering: Literal["weak", "medium", "strong"] = Field(
        "weak",
        description="Qdrant's write ordering: strong routes every write through the "
        "shard's leader, so replicas apply writes in one order (slower).",
    )
    edge_index_threshold: int = Field(
        20_000,
        description="Unindexed points in an edge shard that start a background HNSW build.",
    )
    vector_quantization: Literal["none", "int8"] = Field(
        "none",
        description="int8: Qdrant's scalar quantization for new collections; the int8 copy "
        "(a quarter of the size) is searched in RAM, the full vectors stay on disk to rescore "
        "the best candidates.",
    )
    search_hnsw_ef: int | None = Field(
        256,
        ge=1,
        description="Candidates an HNSW search keeps (Qdrant's hnsw_ef; None: the index's "
        "ef_construct, 100). At 1M points 256 found 0.97-0.98 of the exact top 5 against "
        "0.93-0.95 for 0.2-0.4 ms more per search; at 100k at most 0.2 ms (perf.scale).",
    )
    worker_concurrency: int = Field(8, description="Threads (embedded) or processes per worker.")
    ingest_concurrency: int = Field(
        6,
        description="Ingest tasks one worker process runs at once; its other threads stay "
        "free for the query lane.",
    )
    worker_pool: str = Field(
        "threads", description="Celery pool: threads (embedded edge shard) or prefork (server)."
    )
    visibility_timeout_s: int = Field(
        7 * 24 * 3600,
        description="Backstop only: an unacked task is redelivered after this long (Redis "
        "broker). A dead worker's tasks come back within ~30 s by heartbeat (workers/liveness.py).",
    )
    max_deliveries: int = Field(
        3, description="A document task delivered more often than this ends `failed`."
    )
    parse_timeout_s: float = Field(
        120.0, description="A document's parsing is stopped after this long (it fails)."
    )
    parse_memory_mb: int = Field(
        1024,
        description="Memory a document's parser (its own process) may take above an idle "
        "parser; past it the document fails.",
    )
    reindex_grace_s: float = Field(
        30.0,
        description="After a re-index swaps a collection, how long its old physical collection "
        "stays for searches in flight before it is dropped.",
    )
    task_retries: int = Field(4, description="Retries with backoff on Triton/Qdrant errors.")
    outage_wait_s: float = Field(
        600.0,
        description="How long an ingest task waits for Triton or the store to be ready again "
        "before its document fails.",
    )
    max_upload_mb: float = Field(20.0, description="Largest request body for uploads, in MiB.")
    max_files_per_upload: int = Field(100, description="Most files in one upload request.")
    ingest_queue_limit: int = Field(
        5000, description="Queued ingest tasks above which uploads answer 429."
    )
    max_searches: int = Field(
        64, description="Searches one API process serves at once; more are refused with 429."
    )
    max_embeddings: int = Field(
        64, description="/v1/embeddings requests one API process serves at once; more: 429."
    )
    max_answers: int = Field(
        8,
        description="Answers one API process has generating at once (identical questions in "
        "flight share one generation, and count once); more: 429.",
    )
    max_answer_requests: int = Field(
        64,
        description="Answer requests (ask, chat) one API process serves at once, those sharing "
        "another's generation included; more: 429.",
    )
    rate_limit: str = Field(
        "100/second",
        description='Requests per API key (when keys are set), e.g. "100/second" or '
        '"5000/minute"; "" turns it off. Counted in Redis, so it holds across API replicas.',
    )
    chunk_tokens: int = Field(
        200, description="Chunk length in model tokens (capped at the model's max length)."
    )
    chunk_overlap: int = Field(32, description="Tokens shared by consecutive chunks.")
    embed_batch: int = Field(32, description="Chunks per embedding request from the worker.")
    search_timeout_s: float = Field(10.0, description="Deadline for a search on the query lane.")
    search_batches_in_flight: int = Field(
        2,
        description="Search batches one API process keeps out (and search threads per "
        "worker process); more wait and go together in the next one.",
    )
    search_transport: Literal["redis", "celery"] = Field(
        "redis",
        description='How searches reach a worker: "redis", a list its search threads pop '
        '(perf/search_hop.py: less CPU and latency), or "celery", tasks on the query lane.',
    )
    search_mode: Literal["dense", "sparse", "hybrid"] = Field(
        "hybrid",
        description="Retrieval when a request names none: dense (embedding), sparse (BM25) or "
        "hybrid (both, fused inside the store).",
    )
    search_fusion: Literal["rrf", "dbsf"] = Field(
        "rrf",
        description="How hybrid search fuses the dense and sparse candidates: rrf (reciprocal "
        "rank) or dbsf (scores normalised by their distribution); perf/retrieval_modes.py "
        "measures both.",
    )
    query_cache_ttl_s: int = Field(
        3600, description="Seconds a query embedding stays cached in Redis; 0 disables."
    )
    # --- monitoring ---
    worker_metrics_port: int = Field(
        9101, description="Port of a worker's Prometheus metrics (the embedded ingest/query one)."
    )
    llm_worker_metrics_port: int = Field(
        9102, description="Port of the embedded llm-lane worker's Prometheus metrics."
    )
    metrics_host: str = Field("127.0.0.1", description="Address workers serve their metrics on.")
    prometheus_port: int = Field(
        9090, description="Port of the embedded Prometheus (`tritonrag up` starts it)."
    )
    otlp_endpoint: str = Field(
        "",
        description="OTLP/HTTP collector (e.g. http://127.0.0.1:4318): the API, workers and "
        "Triton send one trace per request there. Empty: tracing off.",
    )
    # --- answers: the LLM and the answer pipeline (issue 7) ---
    llm_backend: Literal["triton", "openai"] = Field(
        "triton", description="LLM adapter: Triton's `llm` model, or an OpenAI-compatible API."
    )
    llm_model: str = Field(
        "llm", description="Triton model name, or the model the OpenAI-compatible API serves."
    )
    llm_gguf: str = Field(
        "smollm2",
        description="Model `tritonrag publish-llm` serves: smollm2, gemma3 or a GGUF path.",
    )
    llm_engine: Literal["auto", "llama.cpp", "openvino"] = Field(
        "auto",
        description="Engine `tritonrag publish-llm` serves the model with: auto tries both on "
        "this CPU and keeps llama.cpp unless OpenVINO GenAI gives the first token 1.15x sooner.",
    )
    llm_tokenizer: Path | None = Field(
        None,
        description="GGUF whose tokenizer and chat template count and build prompts "
        "(default: <model_repository>/llm/1/model.gguf; unset with openai: estimated).",
    )
    llm_base_url: str | None = Field(
        None, description="Base URL of the OpenAI-compatible API (llm_backend=openai)."
    )
    llm_api_key: str | None = Field(None, description="API key for the OpenAI-compatible API.")
    llm_context_tokens: int = Field(
        2048, description="The LLM's context window: prompt plus answer, in its tokens."
    )
    # perf/results/decoding.md: the default model stated every fact it stated by its 63rd
    # token, and 20 of 33 answers ran on to 256 tokens; a repeat penalty of 1.1 kept the fact
    # rate (55 %) but cut the right citation from 55 % to 30 % (it avoids the sources' words).
    llm_max_tokens: int = Field(160, description="Longest answer, in tokens.")
    llm_repeat_penalty: float = Field(
        1.0,
        ge=1.0,
        le=2.0,
        description="llama.cpp's penalty on tokens the answer already used (1.0: off).",
    )
    llm_temperature: float = Field(0.0, description="Sampling temperature (0 = greedy).")
    llm_first_token_timeout_s: float = Field(
        30.0, description="No first token by then: 504 (or an SSE `error` event)."
    )
    llm_timeout_s: float = Field(120.0, description="Longest a whole answer may take.")
    llm_retries: int = Field(
        2, description="Retries of a failed call to the OpenAI-compatible API."
    )
    llm_concurrency: int = Field(
        2, description="Answers the llm lane generates at once (threads of the llm worker)."
    )
    answer_top_k: int = Field(
        5,
        description="Chunks retrieved for an answer by default (each one adds ~200 prompt "
        "tokens, and a 2-core CPU reads ~180 prompt tokens/s before the first answer token).",
    )
    answer_min_score: float = Field(
        0.3, description="Hits under this cosine similarity are not given to the LLM."
    )
    answer_cache_ttl_s: int = Field(
        3600, description="Seconds an answer stays cached in Redis; 0 disables."
    )
    answer_evidence_sentences: int = Field(
        6,
        ge=0,
        description="Sentences of the retrieved chunks that go into the prompt (the best by "
        "embedding similarity and word overlap with the question, each with its neighbours); "
        "0 sends whole chunks.",
    )
    answer_uncovered_ttl_s: int = Field(
        60,
        description="Seconds a question the collection does not cover is remembered (no search "
        "or prompt for its repeats); indexing any document of the collection forgets it. "
        "0 disables.",
    )
    answer_mode: Literal["generate", "quote", "auto"] = Field(
        "auto",
        description="How answers are made by default: generate (the LLM, each sentence "
        "checked against the sources), quote (the best evidence sentences, no LLM) or auto "
        "(generate; quote instead when too few of its sentences are supported).",
    )
    # perf/results/grounding.md, re-scored: keeping a generated answer only when all its
    # sentences are supported puts the fact in 80 % of answers (88 % quote, 47 % generate),
    # against 66 % when any one supported sentence keeps it.
    answer_auto_min_supported: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Share of a generated answer's sentences that must be supported for "
        "answer_mode auto to keep it; below, the best evidence sentences are quoted instead.",
    )
    answer_quote_sentences: int = Field(
        2,
        ge=1,
        le=10,
        description="Evidence sentences a quoted answer gives (answer_mode quote, or auto's "
        "fallback), best first, each with its [n].",
    )
    max_question_chars: int = Field(4000, description="Longest question accepted.")

    @property
    def llm_tokenizer_path(self) -> Path | None:
        if self.llm_tokenizer is not None:
            return self.llm_tokenizer
        return self.model_repository / "llm" / "1" / "model.gguf"

    @property
    def triton_grpc_url(self) -> str:
        return f"{self.triton_host}:{self.triton_grpc_port}"

    @property
    def triton_http_url(self) -> str:
        return f"{self.triton_host}:{self.triton_http_port}"

    @property
    def embedded_redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def broker_url(self) -> str:
        return self.redis_url or self.embedded_redis_url

    @property
    def chunking_model_dir(self) -> Path:
        return self.tokenizer_dir or self.model_repository / self.embed_model / "1"

    @property
    def vectors_dir(self) -> Path:
        return self.runtime_dir / "qdrant"
