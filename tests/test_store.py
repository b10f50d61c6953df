"""The on-disk collection: atomic batches, crash leftovers, compaction, one writer at a time."""

from __future__ import annotations

import numpy as np
import pytest

from semsearch.errors import CollectionError
from semsearch.store import Store


def _unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _add(store: Store, names: list[str], seed: int) -> np.ndarray:
    vectors = _unit(len(names), 8, seed)
    first = store.append_vectors({"features": vectors, "logits": vectors[:, :4]})
    store.upsert((name, 1, 1, f"hash-{first + i}", None, first + i) for i, name in enumerate(names))
    return vectors


def test_snapshot_aligns_ids_paths_and_vectors(tmp_path):
    with Store(tmp_path / "db", writable=True, create=True) as store:
        a = _add(store, ["a", "b"], 0)
        c = _add(store, ["c"], 1)
        snap = store.snapshot()
    assert snap.paths == ["a", "b", "c"]
    np.testing.assert_array_equal(snap.vectors["features"], np.vstack([a, c]))
    np.testing.assert_array_equal(snap.vectors["logits"], np.vstack([a, c])[:, :4])


def test_replaced_and_removed_images_leave_the_snapshot(tmp_path):
    with Store(tmp_path / "db", writable=True, create=True) as store:
        _add(store, ["a", "b", "c"], 0)
        new_b = _add(store, ["b"], 1)
        store.remove(["a"])
        snap = store.snapshot(["features"])
    assert sorted(snap.paths) == ["b", "c"]
    np.testing.assert_array_equal(snap.vectors["features"][snap.paths.index("b")], new_b[0])


def test_rows_written_without_a_commit_are_dropped_by_the_next_writer(tmp_path):
    root = tmp_path / "db"
    with Store(root, writable=True, create=True) as store:
        _add(store, ["a"], 0)
        store.append_vectors({"features": _unit(5, 8, 1), "logits": _unit(5, 4, 2)})  # crash before commit
    size_before = (root / "features.0.f32").stat().st_size
    with Store(root, writable=True) as store:
        assert (root / "features.0.f32").stat().st_size == 8 * 4 < size_before
        _add(store, ["b"], 3)
        assert store.snapshot().paths == ["a", "b"]


def test_compaction_keeps_vectors_and_frees_space(tmp_path):
    root = tmp_path / "db"
    with Store(root, writable=True, create=True) as store:
        names = [f"img{i}" for i in range(3000)]
        vectors = _add(store, names, 0)
        store.remove(names[:2500])
        store.compact()
        snap = store.snapshot(["features"])
        assert store.meta()["generation"] == "1"
    assert not (root / "features.0.f32").exists()
    assert (root / "features.1.f32").stat().st_size == 500 * 8 * 4
    np.testing.assert_array_equal(snap.vectors["features"], vectors[2500:])


def test_one_writer_at_a_time(tmp_path):
    with (
        Store(tmp_path / "db", writable=True, create=True),
        pytest.raises(CollectionError, match="being indexed by another process"),
    ):
        Store(tmp_path / "db", writable=True)


def test_missing_collection_is_a_clear_error(tmp_path):
    with pytest.raises(CollectionError, match="no collection at"):
        Store(tmp_path / "nothing-here")


def test_readers_never_see_a_partial_row(tmp_path):
    """A write cut short (full disk, kill -9 inside write()) leaves part of a row; readers map whole rows."""
    root = tmp_path / "db"
    with Store(root, writable=True, create=True) as store:
        a = _add(store, ["a", "b"], 0)
    for name, extra in (("features.0.f32", 13), ("logits.0.f32", 5)):
        with open(root / name, "ab") as f:
            f.write(b"\x7f" * extra)
    with Store(root) as reader:
        snap = reader.snapshot()
        assert snap.paths == ["a", "b"]
        np.testing.assert_array_equal(snap.vectors["features"], a)
        np.testing.assert_array_equal(reader.vectors_at("logits", [1]), a[1:, :4])
    with Store(root, writable=True) as store:  # the next writer cuts the tail, then appends whole rows
        c = _add(store, ["c"], 1)
        np.testing.assert_array_equal(store.snapshot().vectors["features"], np.vstack([a, c]))
    assert (root / "features.0.f32").stat().st_size == 3 * 8 * 4


def test_paths_that_are_not_utf8_round_trip(tmp_path):
    names = [
        "plain.jpg",
        "caf\u00e9.jpg",
        "bad-\udcff\udcfe.jpg",
        "\udce9t\u00e9.jpg",
    ]  # the last two: not UTF-8
    with Store(tmp_path / "db", writable=True, create=True) as store:
        _add(store, names, 0)
        store.mark_skipped([("broken-\udcff.jpg", 1, 1, "truncated image")])
        assert sorted(store.records()) == sorted(names) == sorted(store.snapshot().paths)
        assert all(store.lookup(n).path == n for n in names)
        assert list(store.skipped()) == ["broken-\udcff.jpg"]
        store.remove(names[2:])
        assert sorted(store.records()) == sorted(names[:2])
