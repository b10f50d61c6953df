"""Nearest-neighbour indexes: one suite asks the same of every backend, then what only one promises.

Backends whose library is not installed are skipped with the reason. Exact backends must give the
brute-force answer; approximate ones a high recall with true cosine scores.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semsearch.errors import CollectionError
from semsearch.index import VectorIndex, canonical_spec, create_index, index_class, names, resolve_spec
from semsearch.index.auto import AutoIndex, default_ann
from semsearch.index.local import SUBSET_SHARE, LocalIndex
from semsearch.index.pruned import PrunedExactIndex

DIM = 16
EXACT = {"exact", "pruned"}
#: Options that make each backend show its behaviour on small data: the pruned search fits its basis at
#: 64 vectors; the policy switches to its ANN backend above 200.
OPTIONS = {"pruned": {"fit_at": 64}, "auto": {"ann_threshold": 200}}
_names = itertools.count()


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_topk(base: np.ndarray, base_ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = q @ base.T
    return base_ids[np.argsort(-s, axis=1, kind="stable")[:, :k]]


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(got, truth)]))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def milvus_lite(tmp_path_factory) -> str:
    """One Milvus Lite file for the session (each index gets its own collection in it)."""
    return str(tmp_path_factory.mktemp("milvus") / "vectors.db")


@pytest.fixture(params=names())
def make(request, milvus_lite):
    """A maker of empty indexes of one backend: make(dim) -> VectorIndex."""
    name = request.param

    def options() -> dict:
        if name == "milvus":
            return {"uri": milvus_lite, "collection": f"test_{next(_names)}"}
        return dict(OPTIONS.get(name, {}))

    reason = index_class(name).unavailable(**options())
    if reason:
        pytest.skip(reason)
    made: list[VectorIndex] = []

    def make_index(dim: int = DIM) -> VectorIndex:
        made.append(create_index(name, dim, **options()))
        return made[-1]

    make_index.name = name
    make_index.exact = name in EXACT
    yield make_index
    for index in made:
        index.close()


def check_answers(make, index, vectors: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> None:
    """Search results against brute force over (ids, vectors): equal for exact backends; otherwise recall
    >= 0.9, and every score the true cosine of its id, best first."""
    got, scores = index.search(q, k)
    assert got.dtype == np.int64 and scores.dtype == np.float32
    assert got.shape == scores.shape == (len(q), k)
    truth = exact_topk(vectors, ids, q, k)
    if make.exact:
        np.testing.assert_array_equal(got, truth)
    else:
        assert recall(got, truth) >= 0.9
    position = {int(i): n for n, i in enumerate(ids)}
    want = np.einsum("qd,qkd->qk", q, vectors[[[position[int(i)] for i in row] for row in got]])
    np.testing.assert_allclose(scores, want, atol=1e-4)
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "best first"


# -- the suite every backend passes -----------------------------------------------------------------
def check_among(index, vectors: np.ndarray, ids: np.ndarray, q: np.ndarray, allowed: np.ndarray, exact: bool):
    """A search among `allowed` ids: only those come back, as many as there are up to k (padded after),
    each with its true cosine; the brute-force answer over the allowed set where `exact`, else recall >= 0.9."""
    got, scores = index.search(q, 10, allowed=np.r_[allowed, [-5, 10**7]])  # ids not held are ignored
    kk = min(10, len(allowed))
    assert np.isin(got[:, :kk], allowed).all()
    assert np.all(got[:, kk:] == -1) and np.all(scores[:, kk:] == -np.inf)
    position = {int(i): n for n, i in enumerate(ids)}
    true = np.einsum("qd,qkd->qk", q, vectors[[[position[int(i)] for i in row] for row in got[:, :kk]]])
    np.testing.assert_allclose(scores[:, :kk], true, atol=1e-4)
    keep = np.isin(ids, allowed)
    want = exact_topk(vectors[keep], ids[keep], q, kk)
    if exact:
        np.testing.assert_array_equal(got[:, :kk], want)
    else:
        assert recall(got[:, :kk], want) >= 0.9


def test_search_among_allowed_ids(make, rng):
    """Filters restrict the search itself: the k best *allowed* vectors, never fewer because the others
    scored higher. Exact where the set is scored directly (small sets; every set with ScaNN, which has no
    filter) or by an exact backend with the rest masked; HNSW's and Milvus's own filters are approximate,
    as their searches are."""
    base = unit(rng, 600)
    ids = rng.permutation(10**6)[:600].astype(np.int64)
    index = make()
    index.add(ids, base)
    q = unit(rng, 12)
    for share in (0.005, 0.1, 0.5, 1.0):
        allowed = np.sort(rng.choice(ids, max(1, int(share * len(ids))), replace=False))
        direct = isinstance(index, LocalIndex) and (not index.filters or len(allowed) <= SUBSET_SHARE * 600)
        check_among(index, base, ids, q, allowed, exact=make.exact or direct)
    got, scores = index.search(q, 3, allowed=np.array([], dtype=np.int64))
    assert got.shape == (12, 3) and np.all(got == -1) and np.all(scores == -np.inf)
    index.remove(ids[:5])
    got, _ = index.search(q[:1], 10, allowed=ids[:7])  # removed ids never come back
    assert set(got[0].tolist()) == {*ids[5:7].tolist(), -1}


def test_search_matches_brute_force(make, rng):
    base = unit(rng, 500)
    ids = rng.permutation(10**6)[:500].astype(np.int64)
    index = make()
    index.add(ids, base)
    assert len(index) == 500
    check_answers(make, index, base, ids, unit(rng, 20), 7)
    check_answers(make, index, base, ids, unit(rng, 64), 50)  # a batch, large k


def test_add_remove_upsert_by_id(make, rng):
    index = make()
    base = unit(rng, 300)
    index.add(np.arange(300), base)
    index.remove(np.array([5, 6, 7, 999_999]))  # the unknown id is ignored
    assert len(index) == 297
    assert set(index.ids().tolist()) == set(range(300)) - {5, 6, 7}
    v = unit(rng, 1)
    index.add(np.array([10]), v)  # an upsert: id 10 now has a vector equal to the query
    assert len(index) == 297
    got, sc = index.search(v, 3)
    assert got[0, 0] == 10 and sc[0, 0] == pytest.approx(1.0, abs=1e-5)
    got, sc = index.search(base[10:11], 1)  # its old vector is gone
    assert not (got[0, 0] == 10 and sc[0, 0] > 0.999)
    index.add(np.array([5]), base[5:6])  # a removed id comes back
    got, _ = index.search(base[5:6], 1)
    assert got[0, 0] == 5 and len(index) == 298


def test_an_id_repeated_in_one_add_keeps_the_last_vector(make, rng):
    index = make()
    v = unit(rng, 2)
    index.add(np.array([3, 3]), v)
    assert len(index) == 1
    got, sc = index.search(v[1:], 1)
    assert got[0, 0] == 3 and sc[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_empty_index_and_k_beyond_the_size_pad_with_minus_one(make, rng):
    index = make()
    got, sc = index.search(unit(rng, 2), 3)
    assert got.tolist() == [[-1] * 3] * 2 and np.all(np.isneginf(sc))
    assert index.search(unit(rng, 2), 0)[0].shape == (2, 0)
    index.add(np.arange(30), unit(rng, 30))
    index.remove(np.arange(25))
    got, sc = index.search(unit(rng, 4), 8)
    assert got.shape == (4, 8)
    assert np.all(got[:, 5:] == -1) and np.all(np.isneginf(sc[:, 5:]))
    assert all(set(row[:5]) == {25, 26, 27, 28, 29} for row in got.tolist())
    assert np.all(np.isfinite(sc[:, :5]))


def test_removed_ids_are_never_returned(make, rng):
    index = make()
    base = unit(rng, 1000)
    index.add(np.arange(1000), base)
    gone = rng.choice(1000, 400, replace=False)
    index.remove(gone)
    got, _ = index.search(base[gone[:50]], 200)  # queries exactly at removed vectors, k beyond ef
    assert not set(got.ravel().tolist()) & set(gone.tolist())
    assert np.all(got >= 0)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the 1e30-long query below
def test_queries_are_normalised_and_nan_or_infinity_refused(make, rng):
    index = make()
    index.add(np.arange(100), unit(rng, 100))
    q = unit(rng, 3)
    a_ids, a_sc = index.search(q, 5)
    b_ids, b_sc = index.search(q * 7.5, 5)
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_allclose(a_sc, b_sc, rtol=1e-5)
    for scale in (1.0, 7.5, 1e30):  # one query alone takes a shorter path: the same answer
        one_ids, one_sc = index.search(q[1] * np.float32(scale), 5)
        np.testing.assert_array_equal(one_ids[0], a_ids[1])
        np.testing.assert_allclose(one_sc[0], a_sc[1], rtol=1e-5)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="NaN or infinity"):
            index.search(np.where(np.arange(DIM) == 3, bad, q[0]), 5)
        with pytest.raises(ValueError, match="NaN or infinity"):
            index.search(np.where(np.arange(DIM) == 3, bad, q), 5)
        with pytest.raises(ValueError, match="NaN or infinity"):
            index.add(np.array([7]), np.where(np.arange(DIM) == 3, bad, q[0]))
    assert len(index) == 100


def test_bad_shapes_are_refused(make):
    index = make(4)
    with pytest.raises(ValueError):
        index.add(np.arange(2), np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError):
        index.add(np.arange(3), np.ones((2, 4), np.float32))
    with pytest.raises(ValueError):
        index.search(np.ones((1, 5), np.float32), 1)
    assert len(index) == 0


def test_save_load_round_trip_keeps_ids_answers_and_updates(make, rng, tmp_path):
    index = make()
    base = unit(rng, 500)
    index.add(np.arange(500) * 3, base)
    index.remove(np.arange(0, 300, 3))
    index.add(np.array([3]), base[7:8])  # replaced
    q = unit(rng, 30)
    want = index.search(q, 10)
    path = tmp_path / "sub" / "index.idx"
    index.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["index.idx"], "no temp file left"
    back = VectorIndex.load(path)
    assert type(back) is type(index) and back.backend == index.backend and len(back) == 401
    assert sorted(back.ids().tolist()) == sorted(index.ids().tolist())
    got = back.search(q, 10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
    back.remove(np.array([3]))  # the loaded index keeps working incrementally
    back.add(np.array([10**6]), base[7:8])
    assert back.search(base[7:8], 1)[0][0, 0] == 10**6
    assert 3 not in set(back.ids().tolist())
    back.close()


def test_updates_to_a_loaded_index_never_write_to_its_file(make, rng, tmp_path):
    """A loaded index reads its vectors from the saved file's pages (see the memory tests below): what
    changes in memory after loading stays there until the next save."""
    if make.name == "milvus":
        pytest.skip("Milvus keeps the vectors in the database")
    index = make(64)
    base = unit(rng, 5000, 64)  # 1.2 MiB of vectors: mapped, not read
    index.add(np.arange(5000), base)
    path = tmp_path / "index.idx"
    index.save(path)
    saved = path.read_bytes()
    back = VectorIndex.load(path)
    fresh = unit(rng, 20, 64)
    back.add(np.arange(20), fresh)  # replaced in place
    back.remove(np.arange(20, 40))
    back.add(np.arange(10**6, 10**6 + 20), fresh)
    assert path.read_bytes() == saved
    top2 = back.search(fresh[:3], 2)[0]
    assert [set(row) for row in top2.tolist()] == [{i, 10**6 + i} for i in range(3)]
    assert VectorIndex.load(path).search(base[:3], 1)[0][:, 0].tolist() == [0, 1, 2]


def _anon_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("RssAnon:"))


def _held_after_load(path) -> tuple[VectorIndex, float]:
    before = _anon_mb()
    index = VectorIndex.load(path)
    return index, _anon_mb() - before


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads /proc")
def test_a_loaded_exact_index_keeps_its_vectors_out_of_private_memory(rng, tmp_path):
    """100 MB of vectors: a reader's private memory does not grow by them (the file's pages are shared and
    evictable), and its answers are the brute-force ones."""
    n, dim = 20000, 1280
    base = unit(rng, n, dim)
    index = create_index("exact", dim)
    index.add(np.arange(n), base)
    index.save(tmp_path / "exact.idx")
    del index
    back, held = _held_after_load(tmp_path / "exact.idx")
    assert held < 10, f"{held:.0f} MB held for {base.nbytes / 2**20:.0f} MB of vectors"
    assert back.store.vecs.ctypes.data % 64 == 0, "mapped aligned (unaligned float32 scans are ~50x slower)"
    q = unit(rng, 5, dim)
    np.testing.assert_array_equal(back.search(q, 10)[0], exact_topk(base, np.arange(n), q, 10))


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads /proc")
@pytest.mark.slow
def test_a_loaded_scann_index_holds_less_than_the_raw_vectors(rng, tmp_path):
    """ScaNN keeps int8 codes for re-ranking, not a second float32 copy: what a loaded index holds is
    well under the vectors' float32 size, and its scores are still the true cosines."""
    scann = index_class("scann")
    if scann.unavailable():
        pytest.skip(scann.unavailable())
    n, dim = 40000, 512
    base = unit(rng, n, dim)
    index = scann(dim)
    index.add(np.arange(n), base)
    index.save(tmp_path / "scann.idx")
    del index
    back, held = _held_after_load(tmp_path / "scann.idx")
    raw = base.nbytes / 2**20
    assert held < 0.75 * raw, f"{held:.0f} MB held for {raw:.0f} MB of vectors"
    q = base[:50] + 0.05 * unit(rng, 50, dim)  # near a stored vector (random ones have no other neighbours)
    got, scores = back.search(q, 10)
    assert got[:, 0].tolist() == list(range(50))
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", q, base[got]), atol=1e-5)


def _peak_mb(run) -> float:
    """How far this process's resident memory rose above its start (MB) while `run()` ran: the kernel's
    high-water mark, reset first (``clear_refs`` 5)."""

    def status(field: str) -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = status("VmRSS")
    run()
    return status("VmHWM") - start


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads /proc")
@pytest.mark.slow
def test_building_scann_past_its_training_sample_stays_near_the_raw_size(rng, tmp_path, monkeypatch):
    """ScaNN's build holds several float32 copies of what it is given (measured: ~4x the raw size beyond
    the store at 100k 1,280-d, ~25 GiB at a million): built from its training sample and given the rest by
    upsert, the peak beyond the store stays below twice the raw size, and the index answers as well."""
    scann = index_class("scann")
    if scann.unavailable():
        pytest.skip(scann.unavailable())
    monkeypatch.setattr(scann, "TRAIN_SAMPLE", 10000)
    n, dim = 40000, 512
    base = unit(rng, n, dim)
    raw = base.nbytes / 2**20
    index = scann(dim)
    index.add(np.arange(100), base[:100])
    index.store._grow(n)  # the store's own copy of the vectors is not what is measured
    peak = _peak_mb(lambda: index.add(np.arange(100, n), base[100:]))  # past 4x the trained size: retrained
    assert peak < 2.0 * raw, f"{peak:.0f} MB at the peak beyond the store, {raw:.0f} MB raw"
    assert index.trained_n == n and index.searcher.size() == n
    index.save(tmp_path / "scann.idx")
    q = base[:50] + 0.05 * unit(rng, 50, dim)
    for found in (index, VectorIndex.load(tmp_path / "scann.idx")):
        assert found.search(q, 1)[0][:, 0].tolist() == list(range(50))


@st.composite
def operations(draw):
    """A sequence of adds (ids with fresh vectors, repeats allowed) and removals over a small id range."""
    ids = st.lists(st.integers(0, 40), min_size=1, max_size=12)
    return draw(st.lists(st.tuples(st.sampled_from(["add", "remove"]), ids), min_size=1, max_size=8))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations())
def test_any_sequence_of_updates_leaves_exactly_the_expected_vectors(make, ops):
    """Whatever the order of adds, upserts and removals, the index holds the last vector of each live id,
    and a search for that vector finds it first."""
    rng = np.random.default_rng(len(ops))
    index = make(8)
    model: dict[int, np.ndarray] = {}
    for kind, ids in ops:
        if kind == "add":
            vectors = unit(rng, len(ids), 8)
            index.add(np.array(ids), vectors)
            model.update(zip(ids, vectors))
        else:
            index.remove(np.array(ids))
            for i in ids:
                model.pop(i, None)
    assert sorted(index.ids().tolist()) == sorted(model) and len(index) == len(model)
    if model:
        keys = sorted(model)
        got, scores = index.search(np.stack([model[i] for i in keys]), 1)
        assert got[:, 0].tolist() == keys
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


# -- registry and files ----------------------------------------------------------------------------
def test_unknown_backend_and_missing_library_are_refused_with_a_reason(monkeypatch):
    with pytest.raises(CollectionError, match="unknown index backend 'faiss'"):
        create_index("faiss", DIM)
    with pytest.raises(CollectionError, match="unknown --vectors"):
        canonical_spec("qdrant://localhost")
    from semsearch.index.hnsw import HnswIndex

    monkeypatch.setattr(HnswIndex, "requires", ("hnswlib_not_installed",))
    with pytest.raises(CollectionError, match="needs hnswlib_not_installed"):
        create_index("hnsw", DIM)
    with pytest.raises(CollectionError, match="needs hnswlib_not_installed"):
        canonical_spec("hnsw")


def test_load_corrupt_file_raises_collection_error(tmp_path):
    p = tmp_path / "index.idx"
    p.write_bytes(b"not an index")
    with pytest.raises(CollectionError):
        VectorIndex.load(p)


def test_files_from_before_the_registry_load_as_the_auto_policy(rng, tmp_path):
    """Index files written before backends had names (no "index" key, the pruned stage called "exact")."""
    base = unit(rng, 300)
    index = AutoIndex(DIM, ann_threshold=10**6)
    index.stage = PrunedExactIndex(DIM, store=index.store, fit_at=64)
    index.add(np.arange(300), base)
    index.save(tmp_path / "new.idx")
    with np.load(tmp_path / "new.idx") as z:
        arrays = {k: z[k] for k in z.files if k not in ("index", "ann")}
    arrays["backend"] = np.array("exact")
    np.savez(tmp_path / "old.npz", **arrays)
    back = VectorIndex.load(tmp_path / "old.npz")
    assert isinstance(back, AutoIndex) and back.backend == "pruned" and back.stage.basis is not None
    q = unit(rng, 10)
    np.testing.assert_array_equal(back.search(q, 5)[0], exact_topk(base, np.arange(300), q, 5))


# -- the auto policy ---------------------------------------------------------------------------------
def test_auto_switches_to_its_ann_backend_and_back_transparently(rng):
    idx = AutoIndex(DIM, ann_threshold=200)
    base = unit(rng, 400)
    idx.add(np.arange(200), base[:200])
    assert idx.backend == "exact"
    idx.add(np.arange(200, 201), base[200:201])
    assert idx.backend == default_ann() and len(idx) == 201
    idx.add(np.arange(201, 400), base[201:])
    got, _ = idx.search(base[[0, 200, 399]], 1)
    assert got[:, 0].tolist() == [0, 200, 399]
    idx.remove(np.arange(350))  # well below the threshold: exact again
    assert idx.backend == "exact" and len(idx) == 50
    assert idx.search(base[[360]], 1)[0][0, 0] == 360


def test_auto_picks_the_pruned_search_for_long_vectors(rng):
    assert AutoIndex(512).backend == "pruned" and AutoIndex(DIM).backend == "exact"


def test_auto_ann_agrees_with_exact(rng):
    base = unit(rng, 4000)
    ids = rng.permutation(10**6)[:4000].astype(np.int64)
    idx = AutoIndex(DIM, ann_threshold=1000)
    idx.add(ids, base)
    assert idx.backend == default_ann()
    q = unit(rng, 200)
    got, scores = idx.search(q, 10)
    assert recall(got, exact_topk(base, ids, q, 10)) >= 0.95
    pos = {int(i): n for n, i in enumerate(ids)}
    want = np.einsum("qd,qkd->qk", q, base[[[pos[int(i)] for i in row] for row in got]])
    np.testing.assert_allclose(scores, want, atol=1e-4)


def test_auto_ann_is_updated_in_place_not_retrained(rng):
    idx = AutoIndex(DIM, ann_threshold=1500)
    base = unit(rng, 6000)
    idx.add(np.arange(2000), base[:2000])
    first = idx.stage
    idx.add(np.arange(2000, 5000), base[2000:5000])  # 2.5x growth: updated, not retrained
    idx.remove(np.arange(0, 5000, 7))
    repl = np.arange(1, 5000, 11)
    new_vecs = unit(rng, len(repl))
    idx.add(repl, new_vecs)
    assert idx.stage is first
    live = np.union1d(np.setdiff1d(np.arange(5000), np.arange(0, 5000, 7)), repl)
    truth_vecs = base[:5000].copy()
    truth_vecs[repl] = new_vecs
    q = unit(rng, 200)
    got, scores = idx.search(q, 10)
    assert recall(got, exact_topk(truth_vecs[live], live, q, 10)) >= 0.9
    assert not set(got.ravel().tolist()) & (set(range(0, 5000, 7)) - set(repl.tolist()))
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", q, truth_vecs[got]), atol=1e-4)
    g, s = idx.search(new_vecs[:5], 1)  # a replaced vector is found at its new place, not its old one
    assert g[:, 0].tolist() == repl[:5].tolist() and np.allclose(s[:, 0], 1.0, atol=1e-4)


def test_scann_retrains_after_growth_and_many_removals(rng):
    scann = index_class("scann")
    if scann.unavailable():
        pytest.skip(scann.unavailable())
    idx = scann(DIM)
    base = unit(rng, 4000)
    idx.add(np.arange(600), base[:600])
    assert idx.trained_n == 600
    idx.add(np.arange(600, 4000), base[600:])  # > 4x the trained size: retrained
    assert idx.trained_n == 4000 and idx.search(base[[0, 3999]], 1)[0][:, 0].tolist() == [0, 3999]
    idx.remove(np.arange(1500))  # tombstones past the limit: retrained on what is left
    assert idx.dead == 0 and idx.trained_n == 2500
    assert idx.search(base[[1500, 2000]], 1)[0][:, 0].tolist() == [1500, 2000]


def test_auto_save_load_keeps_ann_tombstones_and_keeps_updating(rng, tmp_path):
    idx = AutoIndex(DIM, ann_threshold=1000)
    base = unit(rng, 3000)
    idx.add(np.arange(3000), base)
    idx.remove(np.arange(0, 3000, 10))
    idx.add(np.array([1]), base[:1])  # replace: tombstone + insert
    q = unit(rng, 50)
    want = idx.search(q, 10)
    idx.save(tmp_path / "i.idx")
    back = VectorIndex.load(tmp_path / "i.idx")
    assert back.backend == default_ann() == idx.backend
    got = back.search(q, 10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
    back.add(np.array([10**7]), base[5:6])
    back.remove(np.array([5]))
    assert back.search(base[5:6], 1)[0][0, 0] == 10**7
    np.testing.assert_array_equal(back.search(q[:1], 10)[0], back.search(q[:3], 10)[0][:1])


# -- the pruned exact search on the data it is for ---------------------------------------------------
@pytest.fixture(scope="module")
def photo_features(caltech_collection) -> np.ndarray:
    """Real image features (EfficientNet-Lite0 on caltech-dev), the data the pruned exact search is for."""
    from semsearch.store import Store

    with Store(caltech_collection) as store:
        return np.array(store.snapshot(["features"]).vectors["features"])


def test_pruned_exact_search_is_exact_on_photo_features(photo_features, rng, tmp_path):
    feats = photo_features
    n, dim = feats.shape
    idx = PrunedExactIndex(dim, fit_at=500)
    idx.add(np.arange(n), feats)
    assert idx.prunes
    # Queries: the photos themselves and noisy versions of them (new photos of the same scenes).
    q = np.concatenate([feats[::5], np.abs(feats[::7] + rng.normal(0, 0.01, feats[::7].shape))])
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    got, scores = idx.search(q, 10)
    np.testing.assert_array_equal(got, exact_topk(feats, np.arange(n), q, 10))
    np.testing.assert_allclose(scores, np.sort(q @ feats.T, axis=1)[:, ::-1][:, :10], atol=1e-5)
    # It is exact because it prunes by a bound, and it does prune: most vectors are never scored in full.
    scored = [n if c is None else len(c) for c in idx._candidates(q, 10)]
    assert np.mean(scored) < 0.2 * n, np.mean(scored)
    # Removals and replacements keep it exact, and so does a saved and reloaded copy.
    idx.remove(np.arange(0, n, 3))
    moved = np.abs(feats[n - 67 :] + rng.normal(0, 0.02, (67, dim))).astype(np.float32)  # no exact ties
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    idx.add(np.arange(1, 200, 3), moved)
    live = feats.copy()
    live[np.arange(1, 200, 3)] = moved
    keep = np.setdiff1d(np.arange(n), np.arange(0, n, 3))
    want = exact_topk(live[keep], keep, q, 10)
    np.testing.assert_array_equal(idx.search(q, 10)[0], want)
    # Vectors unlike anything the basis was fitted on live almost wholly in the residual: only the bound's
    # residual term keeps them findable.
    strangers = unit(rng, 40, dim)
    idx.add(10**6 + np.arange(40), strangers)
    near = strangers + 0.3 * unit(rng, 40, dim)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    truth = exact_topk(np.concatenate([live[keep], strangers]), np.r_[keep, 10**6 + np.arange(40)], near, 10)
    np.testing.assert_array_equal(idx.search(near, 10)[0], truth)
    idx.remove(10**6 + np.arange(40))
    idx.save(tmp_path / "i.idx")
    back = VectorIndex.load(tmp_path / "i.idx")
    assert isinstance(back, PrunedExactIndex)
    np.testing.assert_array_equal(back.basis, idx.basis)  # restored, not refitted
    np.testing.assert_array_equal(back.search(q, 10)[0], want)


def test_pruned_search_among_allowed_ids_is_exact_on_photo_features(photo_features, rng):
    """The masked pruned search (allowed sets over SUBSET_SHARE) keeps pruning and stays exact."""
    n = len(photo_features)
    idx = PrunedExactIndex(photo_features.shape[1], fit_at=500)
    idx.add(np.arange(n), photo_features)
    assert idx.prunes
    q = np.concatenate([photo_features[::97], unit(rng, 3, photo_features.shape[1])])
    for share in (0.3, 0.6, 1.0):
        allowed = np.sort(rng.choice(n, int(share * n), replace=False))
        check_among(idx, photo_features, np.arange(n), q, allowed, exact=True)


def test_pruned_exact_search_falls_back_where_the_bound_cannot_prune(rng):
    """Random long vectors share no directions: the fit notices and every query is a plain scan."""
    dim, n = 512, PrunedExactIndex.FIT_AT + 100
    base = unit(rng, n, dim)
    idx = PrunedExactIndex(dim)
    idx.add(np.arange(n), base)
    assert idx.basis is not None and not idx.prunes
    q = unit(rng, 20, dim)
    np.testing.assert_array_equal(idx.search(q, 5)[0], exact_topk(base, np.arange(n), q, 5))


# -- Milvus ----------------------------------------------------------------------------------------
@pytest.fixture
def milvus(milvus_lite):
    from semsearch.index.milvus import MilvusIndex

    if MilvusIndex.unavailable(uri=milvus_lite):
        pytest.skip(MilvusIndex.unavailable(uri=milvus_lite))
    return MilvusIndex


def test_milvus_ids_are_read_back_where_the_saved_file_lags_the_database(milvus, milvus_lite, rng, tmp_path):
    """A crash between writing to Milvus and saving the file: the count disagrees, the ids are re-read."""
    name = f"lag_{next(_names)}"
    index = milvus(DIM, uri=milvus_lite, collection=name)
    index.add(np.arange(100), unit(rng, 100))
    index.save(tmp_path / "m.idx")
    index.add(np.arange(100, 130), unit(rng, 30))  # reaches the database, never the saved file
    index.remove(np.arange(10))
    back = VectorIndex.load(tmp_path / "m.idx")
    assert sorted(back.ids().tolist()) == list(range(10, 130))
    fresh = milvus(DIM, uri=milvus_lite, collection=name)  # no file at all: read from the database
    assert sorted(fresh.ids().tolist()) == list(range(10, 130))


def test_milvus_lite_held_by_another_process_is_a_clear_error(milvus, tmp_path, monkeypatch):
    path = str(tmp_path / "held.db")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from pymilvus import MilvusClient; MilvusClient({path!r}); print(1, flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "1"
        monkeypatch.setattr(milvus, "LITE_WAIT_S", 0.5)
        start = time.monotonic()
        with pytest.raises(CollectionError, match="in use by another process"):
            milvus(DIM, uri=path, collection="x")
        assert time.monotonic() - start >= 0.5  # it waited for the other process first
    finally:
        holder.communicate("\n", timeout=30)


@given(text=st.text(max_size=40))
def test_any_vectors_value_is_accepted_or_refused_with_a_collection_error(text):
    for spec in (text, "milvus://" + text, "milvus-lite:" + text):
        try:
            canonical = canonical_spec(spec)
        except CollectionError:
            continue
        assert canonical_spec(canonical, canonical) == canonical  # recorded form is stable
        name, options = resolve_spec(canonical, "joint-0123")
        assert name in names()


def test_milvus_specs_name_their_collections():
    assert resolve_spec("milvus://db.example:1234/photos", "joint-ab12") == (
        "milvus",
        {"uri": "http://db.example:1234", "collection": "photos_joint_ab12"},
    )
    first = canonical_spec("milvus://db.example")
    assert first.startswith("milvus://db.example:19530/semsearch_")
    assert canonical_spec("milvus://db.example", first) == first  # the generated name is kept
    assert canonical_spec("milvus://db.example/other", first) == "milvus://db.example:19530/other"
    with pytest.raises(CollectionError, match="ends in .db"):
        canonical_spec("milvus-lite:/tmp/vectors")
    with pytest.raises(CollectionError, match="bad Milvus address"):
        canonical_spec("milvus://host:99999999")
