"""Wire models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, WithJsonSchema

# One definition each, used by the routes' path and form validation.
COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
DOCUMENT_ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,256}$"
FilterValue = str | int | bool
MAX_TOP_K = 100  # chunks one search or answer may ask for
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K)]
# The route answers an empty string 400 (empty input), so the schema says it, not pydantic.
NonEmptyText = Annotated[str, WithJsonSchema({"type": "string", "minLength": 1})]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: int


class ErrorBody(BaseModel):
    """The one error body (OpenAI-style), whatever the status."""

    error: ErrorDetail


# Documented on every /v1 route: the vocabulary of orchestrator/errors.py.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Empty input",
        401: "Missing or unknown API key",
        404: "No such collection, document or job for this tenant",
        409: "The collection holds vectors of another embedding model",
        413: "Body or text too large",
        415: "Unsupported or mismatched file type",
        422: "Invalid input",
        429: "Overloaded: retry after Retry-After seconds",
        503: "A dependency is not ready: retry after Retry-After seconds",
        504: "Upstream timeout",
    }.items()
}


class UploadedDocument(BaseModel):
    document_id: str
    job_id: str
    filename: str
    content_type: str
    bytes: int


class UploadResponse(BaseModel):
    collection: str
    documents: list[UploadedDocument]


class DocumentPage(BaseModel):
    data: list[dict[str, Any]]
    total: int
    offset: int
    limit: int


class Job(BaseModel):
    id: str
    state: str
    collection: str
    document_id: str
    filename: str
    reason: str | None = None
    chunks_total: int
    chunks_reused: int
    chunks_embedded: int
    chunks_removed: int
    deliveries: int
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    chunks_per_s: float | None = Field(None, description="Embedding throughput so far.")
    eta_s: float | None = Field(None, description="Seconds left at the current throughput.")


# At least one character that is not whitespace as Python's str.isspace sees it (a plain \S
# differs on \x1c-\x1f between regex engines: schemathesis found a query of "\x1f" valid
# by the schema and refused as blank). A blank query or question is then a validation error (422).
NOT_BLANK = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


SearchMode = Literal["dense", "sparse", "hybrid"]
MODE_DESCRIPTION = (
    "dense (embedding), sparse (BM25 over the words) or hybrid (both, fused by rank); "
    "default: the search_mode setting. A collection indexed before sparse vectors existed "
    "searches dense until `tritonrag reindex`."
)


class SearchRequest(BaseModel):
    query: Annotated[str, StringConstraints(min_length=1, max_length=8192, pattern=NOT_BLANK)]
    top_k: TopK = 5
    filters: dict[str, FilterValue] = Field(
        default_factory=dict, description="Exact matches on document_id or metadata keys."
    )
    mode: SearchMode | None = Field(None, description=MODE_DESCRIPTION)


class CollectionModel(BaseModel):
    name: str = Field(description="The embedding model that made the collection's vectors.")
    dim: int
    distance: str
    variants: list[str] = Field(description="The variants (engine, precision) that wrote.")


class RebuildProgress(BaseModel):
    """A re-index into a new physical collection (`tritonrag reindex --model`)."""

    state: str = Field(
        "running", description="running, swapped (old one kept a grace period), done, failed"
    )
    model: str | None = Field(None, description="The embedding model it re-embeds with.")
    source_model: str | None = Field(None, description="The model the collection had before.")
    documents_total: int = 0
    documents_copied: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    reason: str | None = Field(None, description="Why it failed.")


class CollectionStatus(BaseModel):
    collection: str
    reindexing: bool = Field(description="A background build is running; searches answer.")
    sparse: bool = Field(description="The collection has BM25 vectors: every mode works.")
    points: int
    model: CollectionModel | None = Field(
        description="Recorded at the first write; none for a collection made before that."
    )
    rebuild: RebuildProgress | None = Field(None, description="The last re-index, if any.")


class ReindexRequest(BaseModel):
    model: str | None = Field(
        None,
        max_length=200,
        description="Re-embed every chunk with this Triton embedding model into a new "
        "collection, swapped in when done. Without it: the served model, if the collection "
        "has another; else only BM25 vectors are added where missing.",
    )


class ReindexStatus(CollectionStatus):
    started: bool = Field(description="This call started the re-index.")


class SearchHit(BaseModel):
    document_id: str
    chunk_id: str
    chunk_index: int
    score: float = Field(description="The mode's own score: cosine, BM25 or fused rank.")
    similarity: float = Field(description="Cosine with the query's embedding, in every mode.")
    text: str
    filename: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    collection: str
    query: str
    mode: SearchMode = Field(description="The mode the search ran in.")
    data: list[SearchHit]


class EmbeddingRequest(BaseModel):
    """OpenAI /v1/embeddings; token-id inputs are not supported (we tokenize in Triton)."""

    input: (
        NonEmptyText
        | Annotated[
            list[NonEmptyText],
            WithJsonSchema(
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
            ),
        ]
    )
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class Turn(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=100_000)


AnswerMode = Literal["generate", "quote", "auto"]
ANSWER_MODE_DESCRIPTION = (
    "generate (the LLM; each sentence checked against the sources), quote (the best evidence "
    "sentences with their [n], no LLM) or auto (generate; unless enough of its sentences are "
    "supported (answer_auto_min_supported: all), the quote instead, the generated text kept in "
    "`generated`); default: the answer_mode setting."
)


class AskRequest(BaseModel):
    question: Annotated[str, StringConstraints(min_length=1, max_length=100_000, pattern=NOT_BLANK)]
    history: list[Turn] = Field(
        default_factory=list,
        max_length=40,
        description="Earlier turns of this conversation, oldest first: a follow-up is "
        "retrieved with the earlier questions and answered with the turns as context.",
    )
    top_k: TopK | None = Field(None, description="Chunks to retrieve (default: answer_top_k).")
    filters: dict[str, FilterValue] = Field(
        default_factory=dict, description="Exact matches on document_id or metadata keys."
    )
    mode: SearchMode | None = Field(None, description="Retrieval mode: " + MODE_DESCRIPTION)
    answer_mode: AnswerMode | None = Field(None, description=ANSWER_MODE_DESCRIPTION)
    stream: bool = Field(False, description="Server-sent events instead of one JSON answer.")


class Citation(BaseModel):
    number: int = Field(description="The source's number in the prompt ([n]).")
    by: Literal["marker", "overlap"] | None = Field(
        None,
        description="How the answer cites it: an [n] marker, or (no marker in the answer) "
        "most of the answer's words come from it. None in `sources`.",
    )
    document_id: str
    chunk_id: str
    chunk_index: int
    score: float
    filename: str | None = None
    snippet: str
    text: str | None = Field(None, description="The whole chunk (in `sources` only).")


class GroundedSentence(BaseModel):
    """One sentence of the answer checked against the sources the model was given."""

    text: str
    supported: bool
    sources: list[int] = Field(description="Numbers of the sources that support it.")
    score: float = Field(description="Cosine with the best-matching source sentence.")
    overlap: float = Field(description="Share of its content words in that sentence.")
    missing: list[str] = Field(
        description="Its numbers and identifiers that sentence lacks (any: unsupported)."
    )


class AnswerTimings(BaseModel):
    retrieve_ms: float
    first_token_ms: float
    total_ms: float
    llm_first_token_ms: float | None = None


class AnswerUsage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class AskResponse(BaseModel):
    collection: str
    question: str
    answer: str
    covered: bool = Field(description="False: no passage was relevant; the LLM was not asked.")
    cached: bool
    citations: list[Citation] = Field(description="Sources the answer cites, in order of use.")
    sources: list[Citation] = Field(description="Every source the LLM was given.")
    answer_mode: Literal["generate", "quote"] | None = Field(
        None, description="How `answer` was made (None: not covered, nothing to answer from)."
    )
    grounding: list[GroundedSentence] = Field(
        default_factory=list,
        description="Each sentence of the generated text (of the quote in quote mode) and the "
        "sources that support it.",
    )
    supported: float | None = Field(
        None, description="Share of those sentences supported (None: none to check)."
    )
    generated: str | None = Field(
        None, description="auto mode, nothing supported: the generated text `answer` replaced."
    )
    usage: AnswerUsage
    timings: AnswerTimings


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI content parts: keep the text ones
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    """OpenAI chat completions; `model` names the collection. Sampling comes from the server's
    settings; `top_k` and `filters` are extensions."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    n: int = Field(1, ge=1, le=1)
    stream_options: dict[str, Any] | None = None
    top_k: TopK | None = None
    filters: dict[str, FilterValue] = Field(default_factory=dict)
    mode: SearchMode | None = Field(None, description="Retrieval mode: " + MODE_DESCRIPTION)
    answer_mode: AnswerMode | None = Field(None, description=ANSWER_MODE_DESCRIPTION)
