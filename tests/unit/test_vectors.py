"""The same cases against both adapters: qdrant-edge shards and qdrant-client (local mode
standing in for a Qdrant server)."""

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient

from orchestrator.clients import edge
from orchestrator.clients.edge import EdgeVectors
from orchestrator.clients.qdrant import Layout, ServerVectors
from orchestrator.clients.vectors import SearchMode, VectorModel, VectorPoint, VectorStore
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.pipeline import retrieve
from orchestrator.settings import Settings
from workers.runtime import open_store

DIM = 16
MODEL = VectorModel("test-model", DIM, variants=("int8",))


@pytest.fixture(params=["edge", "server", "edge-int8", "server-int8"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    """Every case holds with Qdrant's int8 scalar quantization on, too; searches use the
    shipped HNSW ef."""
    adapter: VectorStore
    kind, _, quantization = request.param.partition("-")
    ef = Settings().search_hnsw_ef
    if kind == "edge":
        adapter = EdgeVectors(tmp_path / "shards", quantization=quantization or "none", hnsw_ef=ef)
    else:
        client = QdrantClient(location=":memory:")
        adapter = ServerVectors(client, MODEL.name, quantization or "none", ef)
    yield adapter
    adapter.close()


def _points(n: int, docs: int = 3, dim: int = DIM) -> list[VectorPoint]:
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(n, dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return [
        VectorPoint(
            f"00000000-0000-0000-0000-{i:012d}",
            rows[i].tolist(),
            {"document_id": f"doc{i % docs}", "metadata": {"lang": "en" if i % 2 else "fr"}},
        )
        for i in range(n)
    ]


def test_nearest_neighbour_is_the_point_itself(store: VectorStore) -> None:
    points = _points(50)
    store.upsert("c", MODEL, points)
    hits = store.search("c", points[17].vector, 5, {})
    assert hits[0].id == points[17].id and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_filters_match_document_and_nested_metadata(store: VectorStore) -> None:
    points = _points(60)
    store.upsert("c", MODEL, points)
    hits = store.search("c", points[0].vector, 100, {"document_id": "doc1"})
    assert len(hits) == 20 and {h.payload["document_id"] for h in hits} == {"doc1"}
    hits = store.search("c", points[0].vector, 100, {"document_id": "doc1", "metadata.lang": "en"})
    assert len(hits) == 10


def test_upsert_is_idempotent(store: VectorStore) -> None:
    points = _points(30)
    store.upsert("c", MODEL, points)
    store.upsert("c", MODEL, points)
    assert store.count("c") == 30


def test_document_ids_and_deletes(store: VectorStore) -> None:
    points = _points(30)
    store.upsert("c", MODEL, points)
    assert store.document_ids("c", "doc2") == {p.id for p in points[2::3]}
    store.delete_document("c", "doc2")
    assert store.document_ids("c", "doc2") == set() and store.count("c") == 20
    store.delete("c", [points[0].id, points[1].id])
    assert store.count("c") == 18
    assert store.search("c", points[2].vector, 50, {"document_id": "doc2"}) == []


def test_collections_are_separate_and_drop(store: VectorStore) -> None:
    store.upsert("a", MODEL, _points(10))
    store.upsert("b", MODEL, _points(4))
    assert (store.count("a"), store.count("b")) == (10, 4)
    assert store.drop("a") is True
    assert store.count("a") == 0 and store.search("a", _points(1)[0].vector, 3, {}) == []
    assert store.count("b") == 4


def test_unknown_collection_reads_as_empty(store: VectorStore) -> None:
    assert store.count("nope") == 0
    assert store.document_ids("nope", "d") == set()
    assert store.search("nope", [0.1] * DIM, 3, {}) == []
    store.delete("nope", ["00000000-0000-0000-0000-000000000001"])
    store.delete_document("nope", "d")


def test_edge_shard_persists_across_reopen(tmp_path: Path) -> None:
    points = _points(20)
    first = EdgeVectors(tmp_path)
    first.upsert("c", MODEL, points)
    first.close()
    second = EdgeVectors(tmp_path)
    assert second.count("c") == 20
    assert second.search("c", points[3].vector, 1, {})[0].id == points[3].id
    second.close()


def test_edge_indexes_in_the_background_and_keeps_writes_made_meanwhile(tmp_path: Path) -> None:
    store = EdgeVectors(tmp_path, index_threshold=2000)
    points = _points(2500, docs=5)
    try:
        store.upsert("c", MODEL, points[:1000])
        assert not store.indexing("c") and store.unindexed("c") == 1000
        store.upsert("c", MODEL, points[1000:2000])  # crosses the threshold: a child builds HNSW
        assert store.indexing("c")
        store.upsert("c", MODEL, points[2000:])  # while it builds: served and logged
        store.delete_document("c", "doc4")
        hits = store.search("c", points[2001].vector, 1, {})
        assert hits[0].id == points[2001].id
        deadline = time.monotonic() + 120
        while store.indexing("c") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not store.indexing("c")
        assert store.unindexed("c") < 2000  # the swapped-in shard carries an HNSW index
        assert store.count("c") == 2000  # 2500 minus doc4's 500, writes replayed after swap
        assert store.document_ids("c", "doc4") == set()
        assert store.search("c", points[2001].vector, 1, {})[0].id == points[2001].id
    finally:
        store.close()
    reopened = EdgeVectors(tmp_path, index_threshold=2000)
    assert reopened.count("c") == 2000 and not reopened.indexing("c")
    reopened.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [edge.MODELS, ".next", ".old", "c"]


def test_int8_quantization_is_in_a_new_shards_config(tmp_path: Path) -> None:
    store = EdgeVectors(tmp_path, quantization="int8")
    store.upsert("c", MODEL, _points(3))
    store.close()
    vectors = json.loads((tmp_path / "c" / "edge_config.json").read_text())["vectors"][""]
    assert vectors["quantization_config"]["scalar"]["type"] == "int8"
    assert vectors["memory"] == "cold"  # full vectors on disk, for rescoring


def test_a_larger_hnsw_ef_finds_more_exact_neighbours_and_builds_release_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped ef reaches the store; on an HNSW index it decides how many exact
    neighbours a search finds. A build's swap hands freed heap back to the system."""
    released: list[int] = []
    monkeypatch.setattr(edge, "_release_freed_memory", lambda: released.append(1))
    store = open_store(Settings(runtime_dir=tmp_path, qdrant_url=None, edge_index_threshold=7000))
    assert isinstance(store, EdgeVectors) and store.hnsw_ef == Settings().search_hnsw_ef == 256
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(7000, 384))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    points = [VectorPoint(f"{i:032x}", rows[i].tolist(), {}) for i in range(len(rows))]
    try:
        # 10.5 MB of vectors: past Qdrant's full-scan threshold (10 MB), so HNSW answers.
        # Reaches the threshold: every point is indexed.
        store.upsert("c", VectorModel("test-model", 384), points)
        deadline = time.monotonic() + 120
        while store.indexing("c") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.unindexed("c") == 0 and released == [1]
        queries = rng.normal(size=(50, 384))
        exact = [set(np.argsort(-(rows @ q))[:10].tolist()) for q in queries]

        def recall() -> float:
            found = [
                {int(h.id.replace("-", ""), 16) for h in store.search("c", q.tolist(), 10, {})}
                for q in queries
            ]
            return sum(len(f & e) for f, e in zip(found, exact, strict=True)) / 500

        shipped = recall()
        store.hnsw_ef = 10
        # Random 384-dim points are HNSW's hardest case: 0.94 against 0.14 when written.
        assert shipped > 0.9 and recall() < shipped - 0.3
    finally:
        store.close()


WORDS = ["harbour", "lantern", "granite", "orchard", "violet", "compass", "ember", "meadow"]


def _texts(n: int) -> list[VectorPoint]:
    """Random dense vectors, each point's text with one rare word (its index) and common ones:
    only the sparse half can find a point by its word."""
    return [
        VectorPoint(p.id, p.vector, p.payload | {"text": f"the value is {WORDS[i % 8]}{i} here"})
        for i, p in enumerate(_points(n))
    ]


def test_sparse_finds_the_exact_term_and_hybrid_keeps_it(store: VectorStore) -> None:
    points = _texts(40)
    store.upsert("c", MODEL, points)
    assert store.has_sparse("c") and not store.has_sparse("nope")
    query = points[0].vector  # dense: point 0 is nearest; words: point 23 holds meadow23
    found = store.search("c", query, 3, {}, text="which value is meadow23?", mode=SearchMode.SPARSE)
    assert found[0].id == points[23].id
    hybrid = store.search("c", query, 5, {}, text="meadow23", mode=SearchMode.HYBRID)
    assert {points[0].id, points[23].id} <= {h.id for h in hybrid}
    for hit in found + hybrid:  # the cosine with the query, whatever ranked the hit
        row = next(p.vector for p in points if p.id == hit.id)
        assert hit.similarity == pytest.approx(float(np.dot(row, query)), abs=1e-4)
    assert store.search("c", query, 5, {"document_id": "doc1"}, "meadow23", SearchMode.HYBRID)
    assert all(
        h.payload["document_id"] == "doc1"
        for h in store.search("c", query, 5, {"document_id": "doc1"}, "meadow23", SearchMode.HYBRID)
    )


@pytest.mark.parametrize("kind", ["edge", "server"])
def test_hybrid_fuses_by_distribution_when_asked(kind: str, tmp_path: Path) -> None:
    store: VectorStore = (
        EdgeVectors(tmp_path, fusion="dbsf")
        if kind == "edge"
        else ServerVectors(QdrantClient(location=":memory:"), MODEL.name, fusion="dbsf")
    )
    points = _texts(40)
    store.upsert("c", MODEL, points)
    hybrid = store.search("c", points[0].vector, 5, {}, "meadow23", SearchMode.HYBRID)
    assert {points[0].id, points[23].id} <= {h.id for h in hybrid}
    rrf_top = 2 / 61  # the most a point can score by rank fusion: first in both
    assert hybrid[0].score > rrf_top  # normalised scores, not ranks
    store.close()


def test_edge_reindex_adds_sparse_vectors_while_searches_answer(tmp_path: Path) -> None:
    """A shard made before sparse vectors existed: searches answer dense during the rebuild;
    writes made meanwhile are replayed with their sparse vectors; reopened, it stays sparse."""
    legacy = qe.EdgeShard.create(
        str(tmp_path / "c"),
        qe.EdgeConfig(vectors=edge._vector_params(DIM, "none"), wal_enabled=True),
    )
    points = _texts(300)
    legacy.update(
        qe.UpdateOperation.upsert_points(
            [qe.Point(p.id, p.vector, p.payload) for p in points[:200]]
        )
    )
    legacy.close()
    store = EdgeVectors(tmp_path)
    try:
        assert not store.has_sparse("c")
        assert store.reindex("c") and store.indexing("c") and not store.reindex("c")
        store.upsert("c", MODEL, points[200:])  # during the rebuild: logged, replayed
        hit = store.search("c", points[5].vector, 1, {}, "orchard3", SearchMode.HYBRID)[0]
        assert hit.id == points[5].id  # still the dense shard
        deadline = time.monotonic() + 120
        while store.indexing("c") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.has_sparse("c") and store.count("c") == 300
        for i in (3, 250):  # one copied by the child, one written during the rebuild
            term = f"{WORDS[i % 8]}{i}"
            top = store.search("c", points[0].vector, 1, {}, term, SearchMode.SPARSE)[0]
            assert top.id == points[i].id
        assert not store.reindex("c")
    finally:
        store.close()
    reopened = EdgeVectors(tmp_path)
    assert reopened.has_sparse("c")
    reopened.close()


def test_dropping_a_collection_during_its_reindex_leaves_nothing(tmp_path: Path) -> None:
    legacy = qe.EdgeShard.create(
        str(tmp_path / "c"), qe.EdgeConfig(vectors=edge._vector_params(DIM, "none"))
    )
    legacy.update(
        qe.UpdateOperation.upsert_points([qe.Point(p.id, p.vector, p.payload) for p in _texts(50)])
    )
    legacy.close()
    store = EdgeVectors(tmp_path)
    assert store.reindex("c")
    assert store.drop("c") and not store.indexing("c")
    store.close()
    leftovers = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_dir()]
    assert all(p.name in (".next", ".old") for p in leftovers), leftovers


def test_a_collection_records_its_model_and_refuses_another(store: VectorStore) -> None:
    """The first write records the model; another variant of it adds itself; another model
    (or dimension) is refused on write and on search; dropping forgets the record."""
    assert store.model("c") is None
    store.upsert("c", MODEL, _points(4))
    assert store.model("c") == MODEL
    store.upsert("c", VectorModel("test-model", DIM, variants=("openvino-bf16",)), _points(2))
    assert store.model("c") == VectorModel("test-model", DIM, variants=("int8", "openvino-bf16"))
    for other in (VectorModel("other-model", DIM), VectorModel("test-model", DIM + 1)):
        with pytest.raises(TritonRagError) as refused:
            store.upsert("c", other, _points(1, docs=1))
        assert refused.value.code is ErrorCode.MODEL_MISMATCH and "test-model" in str(refused.value)
    assert store.count("c") == 4  # nothing of the refused writes landed
    query = _points(1)[0].vector
    with pytest.raises(TritonRagError) as refused:
        retrieve.search(store, "c", query, 3, {}, model="other-model")
    assert refused.value.code.status == 409
    hits, _ = retrieve.search(store, "c", query, 3, {}, model="test-model")
    assert hits and hits[0]["chunk_id"] == _points(1)[0].id
    assert store.drop("c") and store.model("c") is None
    # Made again by another model (a server keeps it in that model's physical collection).
    store.upsert("c", VectorModel("other-model", DIM + 4), _points(1, dim=DIM + 4))
    assert store.model("c") == VectorModel("other-model", DIM + 4)
    store.upsert("d", MODEL, _points(2))
    recorded = store.model("d")
    assert recorded is not None and recorded.name == MODEL.name
    assert store.count("c") == 1 and store.count("d") == 2
    hits, _ = retrieve.search(store, "d", query, 3, {}, model="test-model")
    assert len(hits) == 2


def test_the_edge_record_survives_a_restart_and_a_collection_without_one_adopts_the_first(
    tmp_path: Path,
) -> None:
    first = EdgeVectors(tmp_path)
    first.upsert("c", MODEL, _points(3))
    first.close()
    again = EdgeVectors(tmp_path)
    assert again.model("c") == MODEL
    # A collection made before models were recorded: searches pass, the next write records.
    (tmp_path / edge.MODELS / "c.json").unlink()
    legacy = EdgeVectors(tmp_path)
    assert legacy.model("c") is None
    assert retrieve.search(legacy, "c", _points(1)[0].vector, 1, {}, model="any-model")[0]
    legacy.upsert("c", MODEL, _points(1))
    assert legacy.model("c") == MODEL
    for store in (again, legacy):
        store.close()


def test_tenants_sharing_a_store_never_see_each_other(store: VectorStore) -> None:
    """Two tenants' collections side by side (on a server: in one physical collection): 1,000
    probe searches by tenant B, in every mode, with tenant A's own vectors and words, never
    return A's points; B's counts, listings, deletes and drop leave A whole."""
    a, b = _texts(40), _texts(40)[:10]
    store.upsert("tenant-a__docs", MODEL, a)
    store.upsert("tenant-b__docs", MODEL, b)  # the same ids as A's first ten
    mine = {p.id for p in b}
    modes = list(SearchMode)
    for k in range(1000):
        point = a[k % len(a)]
        found = store.search(
            "tenant-b__docs", point.vector, 10, {}, str(point.payload["text"]), modes[k % 3]
        )
        assert {h.id for h in found} <= mine
        assert all(h.payload["document_id"] in {"doc0", "doc1", "doc2"} for h in found)
    assert store.document_ids("tenant-b__docs", "doc0") == {p.id for p in b[::3]}
    store.delete("tenant-b__docs", [b[0].id])
    store.delete_document("tenant-b__docs", "doc1")
    assert store.drop("tenant-b__docs") and store.count("tenant-b__docs") == 0
    assert store.count("tenant-a__docs") == 40
    assert store.document_ids("tenant-a__docs", "doc0") == {p.id for p in a[::3]}
    assert store.search("tenant-a__docs", a[0].vector, 1, {})[0].id == a[0].id


def test_a_server_keeps_one_physical_collection_per_model_behind_an_alias(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = QdrantClient(location=":memory:")
    created: list[dict[str, Any]] = []  # local mode ignores the cluster layout: read the request
    create = client.create_collection

    def recorded(*args: Any, **kwargs: Any) -> Any:
        created.append(kwargs)
        return create(*args, **kwargs)

    monkeypatch.setattr(client, "create_collection", recorded)
    layout = Layout(shard_number=3, replication_factor=2, write_consistency_factor=2)
    store = ServerVectors(client, "Org/Some-Model_v2", layout=layout)
    for tenant in ("t1", "t2", "t3"):
        store.upsert(f"{tenant}__docs", VectorModel("Org/Some-Model_v2", DIM), _points(5))
    (alias,) = client.get_aliases().aliases
    assert (alias.alias_name, alias.collection_name) == (
        "tritonrag-org-some-model-v2",
        "tritonrag-org-some-model-v2-1",
    )
    assert [c.name for c in client.get_collections().collections] == [alias.collection_name]
    (request,) = created
    assert (request["shard_number"], request["replication_factor"]) == (3, 2)
    assert request["write_consistency_factor"] == 2
    assert request["metadata"]["tritonrag_model"]["name"] == "Org/Some-Model_v2"
    assert client.count(alias.alias_name, exact=True).count == 15


def test_threads_writing_a_new_collection_at_once_record_its_model_once(tmp_path: Path) -> None:
    """Ingest threads write a new collection's first batches together: every write lands and
    the record holds each variant that wrote."""
    store = EdgeVectors(tmp_path)
    points = _points(64)
    variants = ["int8", "openvino-bf16"] * 4

    def write(k: int) -> None:
        model = VectorModel("test-model", DIM, variants=(variants[k],))
        store.upsert("c", model, points[8 * k : 8 * k + 8])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    assert store.count("c") == 64
    wanted = VectorModel("test-model", DIM, variants=("int8", "openvino-bf16"))
    recorded = store.model("c")
    assert recorded is not None and set(recorded.variants) == set(wanted.variants)
    store.close()
    reopened = EdgeVectors(tmp_path).model("c")
    assert reopened is not None and set(reopened.variants) == set(wanted.variants)
