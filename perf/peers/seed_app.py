"""The seed documents' design, as a peer for perf/compare.py: FastAPI + sentence-transformers
under gunicorn (one worker per core), an OpenAI-style /v1/embeddings. Runs in its own
virtual environment (.peers/seed); the model folder comes from SEED_MODEL."""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer

model = SentenceTransformer(os.environ["SEED_MODEL"], device="cpu")
app = FastAPI()


class Request(BaseModel):
    input: str | list[str]
    model: str | None = None


@app.post("/v1/embeddings")
def embeddings(body: Request) -> dict[str, object]:
    texts = [body.input] if isinstance(body.input, str) else body.input
    vectors = model.encode(texts, normalize_embeddings=True)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v.tolist()}
            for i, v in enumerate(vectors)
        ],
    }
