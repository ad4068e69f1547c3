"""BM25 sparse vectors, the sparse half of hybrid search, for both store adapters.

qdrant-edge's `Bm25` tokenises, drops stop words and stems as Qdrant's server-side BM25 does;
a document's vector holds its saturated term frequencies and a query's one weight per term.
The inverse document frequency is the store's part (`Modifier.IDF` on the sparse vector), so
it follows the collection as it grows instead of being frozen at indexing time.
"""

from __future__ import annotations

import qdrant_edge as qe

NAME = "bm25"  # the sparse vector's name in every collection that has one
# k 1.2, b 0.75, average length 256 words: a chunk is 200 model tokens, ~150 words.
_MODEL = qe.Bm25(qe.Bm25Config())


def document(text: str) -> tuple[list[int], list[float]]:
    vector = _MODEL.embed_document(text)
    return list(vector.indices), list(vector.values)


def query(text: str) -> tuple[list[int], list[float]]:
    vector = _MODEL.embed_query(text)
    return list(vector.indices), list(vector.values)
