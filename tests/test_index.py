"""VectorIndex: exact/ANN agreement, add/remove/replace, padding, persistence, switching."""

from __future__ import annotations

import numpy as np
import pytest

from semsearch.errors import CollectionError
from semsearch.index import _ANN_BACKEND, VectorIndex, _PrunedExactBackend

ANN = _ANN_BACKEND.name


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_topk(base: np.ndarray, base_ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = q @ base.T
    return base_ids[np.argsort(-s, axis=1, kind="stable")[:, :k]]


DIM = 16


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def test_exact_search_matches_brute_force(rng):
    base = unit(rng, 500, DIM)
    ids = np.arange(1000, 1500, dtype=np.int64)
    idx = VectorIndex(DIM)
    idx.add(ids, base)
    q = unit(rng, 20, DIM)
    got, scores = idx.search(q, 7)
    assert idx.backend == "exact"
    assert got.dtype == np.int64 and scores.dtype == np.float32
    assert got.shape == scores.shape == (20, 7)
    np.testing.assert_array_equal(got, exact_topk(base, ids, q, 7))
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "best first"
    np.testing.assert_allclose(scores[:, 0], np.max(q @ base.T, axis=1), rtol=1e-5, atol=1e-6)


def test_ann_agrees_with_exact(rng):
    base = unit(rng, 4000, DIM)
    ids = rng.permutation(10**6)[:4000].astype(np.int64)
    idx = VectorIndex(DIM, ann_threshold=1000)
    idx.add(ids, base)
    assert idx.backend == ANN
    q = unit(rng, 200, DIM)
    got, scores = idx.search(q, 10)
    truth = exact_topk(base, ids, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)])
    assert recall >= 0.95, recall
    # Scores are true cosines of the returned ids.
    pos = {int(i): n for n, i in enumerate(ids)}
    want = np.einsum("qd,qkd->qk", q, base[[[pos[int(i)] for i in row] for row in got]])
    np.testing.assert_allclose(scores, want, atol=1e-4)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the 1e30-long query below
def test_queries_are_normalised_inside(rng):
    base = unit(rng, 100, DIM)
    idx = VectorIndex(DIM)
    idx.add(np.arange(100), base)
    q = unit(rng, 3, DIM)
    a_ids, a_sc = idx.search(q, 5)
    b_ids, b_sc = idx.search(q * 7.5, 5)
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_allclose(a_sc, b_sc, rtol=1e-5)
    # One query alone takes a shorter path: same answer, including for huge (float32-overflowing) lengths.
    for scale in (1.0, 7.5, 1e30):
        one_ids, one_sc = idx.search(q[1] * np.float32(scale), 5)
        np.testing.assert_array_equal(one_ids[0], a_ids[1])
        np.testing.assert_allclose(one_sc[0], a_sc[1], rtol=1e-5)
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="NaN or infinity"):
            idx.search(np.where(np.arange(DIM) == 3, bad, q[0]), 5)
        with pytest.raises(ValueError, match="NaN or infinity"):
            idx.search(np.where(np.arange(DIM) == 3, bad, q), 5)


@pytest.mark.parametrize("threshold", [10**9, 50])
def test_add_remove_replace(rng, threshold):
    idx = VectorIndex(DIM, ann_threshold=threshold)
    base = unit(rng, 300, DIM)
    idx.add(np.arange(300), base)
    assert len(idx) == 300
    idx.remove(np.array([5, 6, 7, 999_999]))  # unknown id ignored
    assert len(idx) == 297
    assert set(idx.ids().tolist()) == set(range(300)) - {5, 6, 7}
    # Replace id 10 with a vector equal to a new query: it must come first with score 1.
    v = unit(rng, 1, DIM)
    idx.add(np.array([10]), v)
    assert len(idx) == 297
    got, sc = idx.search(v, 3)
    assert got[0, 0] == 10 and sc[0, 0] == pytest.approx(1.0, abs=1e-5)
    # The old vector of id 10 is gone.
    got, sc = idx.search(base[10:11], 1)
    assert not (got[0, 0] == 10 and sc[0, 0] > 0.999)
    # Re-adding a removed id brings it back.
    idx.add(np.array([5]), base[5:6])
    got, _ = idx.search(base[5:6], 1)
    assert got[0, 0] == 5 and len(idx) == 298


def test_duplicate_ids_in_one_add_last_wins(rng):
    idx = VectorIndex(DIM)
    v = unit(rng, 2, DIM)
    idx.add(np.array([3, 3]), v)
    assert len(idx) == 1
    got, sc = idx.search(v[1:], 1)
    assert got[0, 0] == 3 and sc[0, 0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("threshold", [10**9, 20])
def test_padding_when_k_exceeds_size(rng, threshold):
    idx = VectorIndex(DIM, ann_threshold=threshold)
    assert idx.search(unit(rng, 2, DIM), 3)[0].tolist() == [[-1] * 3] * 2
    idx.add(np.arange(30), unit(rng, 30, DIM))
    idx.remove(np.arange(25))
    got, sc = idx.search(unit(rng, 4, DIM), 8)
    assert got.shape == (4, 8)
    assert np.all(got[:, 5:] == -1) and np.all(np.isneginf(sc[:, 5:]))
    assert all(set(row[:5]) == {25, 26, 27, 28, 29} for row in got.tolist())
    assert np.all(np.isfinite(sc[:, :5]))


@pytest.mark.parametrize("threshold", [10**9, 100])
def test_removed_ids_never_returned(rng, threshold):
    idx = VectorIndex(DIM, ann_threshold=threshold)
    base = unit(rng, 1000, DIM)
    idx.add(np.arange(1000), base)
    gone = rng.choice(1000, 400, replace=False)
    idx.remove(gone)
    # Query exactly at removed vectors, with k larger than ef.
    got, _ = idx.search(base[gone[:50]], 200)
    assert not set(got.ravel().tolist()) & set(gone.tolist())
    assert np.all(got >= 0)


def test_transparent_switch_at_threshold(rng):
    idx = VectorIndex(DIM, ann_threshold=200)
    base = unit(rng, 400, DIM)
    idx.add(np.arange(200), base[:200])
    assert idx.backend == "exact"
    idx.add(np.arange(200, 201), base[200:201])
    assert idx.backend == ANN and len(idx) == 201
    idx.add(np.arange(201, 400), base[201:])
    got, sc = idx.search(base[[0, 200, 399]], 1)
    assert got[:, 0].tolist() == [0, 200, 399]
    # Shrinking well below the threshold goes back to exact search.
    idx.remove(np.arange(350))
    assert idx.backend == "exact" and len(idx) == 50
    got, _ = idx.search(base[[360]], 1)
    assert got[0, 0] == 360


@pytest.mark.parametrize("threshold", [10**9, 100])
def test_save_load_round_trip(rng, tmp_path, threshold):
    idx = VectorIndex(DIM, ann_threshold=threshold)
    base = unit(rng, 500, DIM)
    idx.add(np.arange(500) * 3, base)
    idx.remove(np.arange(0, 300, 3))
    idx.add(np.array([3]), base[7:8])  # replaced
    q = unit(rng, 30, DIM)
    want = idx.search(q, 10)
    path = tmp_path / "sub" / "index.npz"
    idx.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["index.npz"], "no temp file left"
    back = VectorIndex.load(path)
    assert back.backend == idx.backend and len(back) == len(idx) == 401
    assert sorted(back.ids().tolist()) == sorted(idx.ids().tolist())
    got = back.search(q, 10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    # The loaded index keeps working incrementally.
    back.remove(np.array([3]))
    back.add(np.array([10**6]), base[7:8])
    assert back.search(base[7:8], 1)[0][0, 0] == 10**6
    assert 3 not in set(back.ids().tolist())


def test_load_corrupt_file_raises_collection_error(tmp_path):
    p = tmp_path / "index.npz"
    p.write_bytes(b"not an index")
    with pytest.raises(CollectionError):
        VectorIndex.load(p)


def test_batch_and_large_k(rng):
    idx = VectorIndex(DIM, ann_threshold=10**9)
    base = unit(rng, 3000, DIM)
    idx.add(np.arange(3000), base)
    q = unit(rng, 64, DIM)
    got, sc = idx.search(q, 300)
    np.testing.assert_array_equal(got, exact_topk(base, np.arange(3000), q, 300))


def test_bad_shapes_rejected():
    idx = VectorIndex(4)
    with pytest.raises(ValueError):
        idx.add(np.arange(2), np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError):
        idx.add(np.arange(3), np.ones((2, 4), np.float32))


def _recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(got, truth)]))


def test_ann_incremental_add_remove_replace_agrees_with_exact(rng):
    """The ANN backend is trained once at the switch and then only updated in place."""
    idx = VectorIndex(DIM, ann_threshold=1500)
    base = unit(rng, 6000, DIM)
    idx.add(np.arange(2000), base[:2000])
    assert idx.backend == ANN
    first = idx._backend
    idx.add(np.arange(2000, 5000), base[2000:5000])  # 2.5x growth: updated, not retrained
    idx.remove(np.arange(0, 5000, 7))
    repl = np.arange(1, 5000, 11)
    new_vecs = unit(rng, len(repl), DIM)
    idx.add(repl, new_vecs)
    assert idx._backend is first
    live = np.setdiff1d(np.arange(5000), np.arange(0, 5000, 7))
    live = np.union1d(live, repl)
    truth_vecs = base[:5000].copy()
    truth_vecs[repl] = new_vecs
    q = unit(rng, 200, DIM)
    got, scores = idx.search(q, 10)
    truth = exact_topk(truth_vecs[live], live, q, 10)
    assert _recall(got, truth) >= 0.9
    assert not set(got.ravel().tolist()) & (set(range(0, 5000, 7)) - set(repl.tolist()))
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", q, truth_vecs[got]), atol=1e-4)
    # A replaced vector is found at its new place, not its old one.
    g, s = idx.search(new_vecs[:5], 1)
    assert g[:, 0].tolist() == repl[:5].tolist() and np.allclose(s[:, 0], 1.0, atol=1e-4)


def test_ann_retrains_after_growth_and_many_removals(rng):
    idx = VectorIndex(DIM, ann_threshold=500)
    base = unit(rng, 4000, DIM)
    idx.add(np.arange(600), base[:600])
    b1 = idx._backend
    idx.add(np.arange(600, 4000), base[600:])  # > 4x the trained size: retrained
    got, _ = idx.search(base[[0, 3999]], 1)
    assert got[:, 0].tolist() == [0, 3999] and len(idx) == 4000
    if ANN == "scann":
        assert idx._backend.trained_n == 4000 and b1 is idx._backend
        idx.remove(np.arange(1500))  # tombstones past the limit: retrained on what is left
        assert idx._backend.dead == 0 and idx._backend.trained_n == 2500
    got, _ = idx.search(base[[1500, 2000]], 1)
    assert got[:, 0].tolist() == [1500, 2000]


def test_ann_save_load_keeps_tombstones_and_keeps_updating(rng, tmp_path):
    idx = VectorIndex(DIM, ann_threshold=1000)
    base = unit(rng, 3000, DIM)
    idx.add(np.arange(3000), base)
    idx.remove(np.arange(0, 3000, 10))
    idx.add(np.array([1]), base[:1])  # replace: tombstone + insert
    q = unit(rng, 50, DIM)
    want = idx.search(q, 10)
    idx.save(tmp_path / "i.npz")
    back = VectorIndex.load(tmp_path / "i.npz")
    assert back.backend == ANN == idx.backend
    got = back.search(q, 10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
    back.add(np.array([10**7]), base[5:6])
    back.remove(np.array([5]))
    assert back.search(base[5:6], 1)[0][0, 0] == 10**7
    one_ids, one_sc = back.search(q[:1], 10)  # single-query path == batched path
    np.testing.assert_array_equal(one_ids, back.search(q[:3], 10)[0][:1])


@pytest.fixture(scope="module")
def photo_features(caltech_collection) -> np.ndarray:
    """Real image features (EfficientNet-Lite0 on caltech-dev), the data the pruned exact search is for."""
    from semsearch.store import Store

    with Store(caltech_collection) as store:
        return np.array(store.snapshot(["features"]).vectors["features"])


def test_pruned_exact_search_is_exact_on_photo_features(photo_features, rng, tmp_path, monkeypatch):
    monkeypatch.setattr(_PrunedExactBackend, "MIN_VECTORS", 500)
    feats = photo_features
    n, dim = feats.shape
    idx = VectorIndex(dim)
    idx.add(np.arange(n), feats)
    assert isinstance(idx._backend, _PrunedExactBackend) and idx._backend.prunes
    # Queries: the photos themselves and noisy versions of them (new photos of the same scenes).
    q = np.concatenate([feats[::5], np.abs(feats[::7] + rng.normal(0, 0.01, feats[::7].shape))])
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    got, scores = idx.search(q, 10)
    np.testing.assert_array_equal(got, exact_topk(feats, np.arange(n), q, 10))
    np.testing.assert_allclose(scores, np.sort(q @ feats.T, axis=1)[:, ::-1][:, :10], atol=1e-5)
    # It is exact because it prunes by a bound, and it does prune: most vectors are never scored in full.
    scored = [n if c is None else len(c) for c in idx._backend._candidates(q, 10)]
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
    idx.save(tmp_path / "i.npz")
    back = VectorIndex.load(tmp_path / "i.npz")
    assert isinstance(back._backend, _PrunedExactBackend)
    np.testing.assert_array_equal(back._backend.basis, idx._backend.basis)  # restored, not refitted
    np.testing.assert_array_equal(back.search(q, 10)[0], want)


def test_pruned_exact_search_falls_back_where_the_bound_cannot_prune(rng):
    """Random long vectors share no directions: the fit notices and every query is a plain scan."""
    dim, n = 512, _PrunedExactBackend.MIN_VECTORS + 100
    base = unit(rng, n, dim)
    idx = VectorIndex(dim)
    idx.add(np.arange(n), base)
    assert isinstance(idx._backend, _PrunedExactBackend) and not idx._backend.prunes
    q = unit(rng, 20, dim)
    np.testing.assert_array_equal(idx.search(q, 5)[0], exact_topk(base, np.arange(n), q, 5))
