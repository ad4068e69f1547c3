"""The one settings class. Every field is also an env var: TRITONRAG_<FIELD>."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


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
    embed_timeout_s: float = Field(30.0, description="Deadline of one embedding call to Triton.")
    embed_max_chars: int = Field(
        200_000, description="Longest text accepted for embedding; longer is an error."
    )
    source_model_dir: Path | None = Field(
        None, description="sentence-transformers model directory to export (default: MiniLM)."
    )
    export_dir: Path = Field(
        ROOT / ".models", description="Where export writes ONNX files and parity reports."
    )

    @property
    def triton_grpc_url(self) -> str:
        return f"{self.triton_host}:{self.triton_grpc_port}"

    @property
    def triton_http_url(self) -> str:
        return f"{self.triton_host}:{self.triton_http_port}"
