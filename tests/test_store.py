"""The on-disk collection: atomic batches, crash leftovers, compaction, one writer at a time."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch.errors import CollectionError
from semsearch.query import Filters, split_filters
from semsearch.store import SCHEMA_VERSION, Store


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


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=40))
def test_rows_of_any_ids_agree_with_the_snapshot(tmp_path_factory, asked):
    """Search candidates' rows without reading the whole catalog: any ids, known or not, repeated."""
    with Store(tmp_path_factory.mktemp("db") / "db", writable=True, create=True) as store:
        _add(store, [f"p{i}" for i in range(12)], 0)
        _add(store, ["p3", "p7"], 1)  # replaced: new rows
        store.remove(["p5"])
        snap = store.snapshot([])
        asked = np.array(asked + [int(i) for i in snap.ids[::3]], dtype=np.int64)
        ids, rows = store.rows_of(asked)
    keep = np.isin(snap.ids, asked)
    np.testing.assert_array_equal(ids, snap.ids[keep])
    np.testing.assert_array_equal(rows, snap.rows[keep])


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


# ------------------------------------------------------------------ schema 2: photo details and OCR text

_V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, label TEXT, row INTEGER NOT NULL);
CREATE INDEX images_sha256 ON images(sha256);
CREATE TABLE skipped (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, reason TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO images (path, size, mtime_ns, sha256, label, row) VALUES ('/p/Trips/a.jpg', 1, 1, 'h', NULL, 0);
"""


def _v1_catalog(root):
    """A catalog exactly as semsearch with schema 1 left it."""
    import sqlite3

    root.mkdir()
    db = sqlite3.connect(root / "catalog.sqlite")
    db.executescript(_V1_SCHEMA)
    db.close()


def test_a_schema_1_catalog_is_migrated_keeping_its_images(tmp_path):
    root = tmp_path / "db"
    _v1_catalog(root)
    with Store(root) as reader:  # before any index run: readable, with no details yet
        assert not reader.has_details and [r.path for r in reader.records().values()] == ["/p/Trips/a.jpg"]
        with pytest.raises(CollectionError, match="run `semsearch index"):
            reader.matching(Filters(after=datetime(2020, 1, 1)))
    with Store(root, writable=True) as store:
        assert store.meta()["schema_version"] == str(SCHEMA_VERSION) and store.has_details
        assert [r.path for r in store.missing_details(1)] == ["/p/Trips/a.jpg"]
        assert [r.path for r in store.missing_text()] == ["/p/Trips/a.jpg"]
        (image_id,) = [r.id for r in store.records().values()]
        store.set_details([(image_id, {"taken": 1_560_506_587, "taken_source": "exif", "details": 1})])
        assert store.missing_details(1) == [] and [r.id for r in store.missing_details(2)] == [image_id]
        assert list(store.matching(Filters(after=datetime(2019, 6, 1)))) == [image_id]
    with Store(root, writable=True) as store:  # migrating again changes nothing
        assert store.details_of([image_id])[image_id]["taken"] == 1_560_506_587


def _details(taken: str, **more) -> dict:
    seconds = int((datetime.fromisoformat(taken) - datetime(1970, 1, 1)).total_seconds())
    return {"taken": seconds, "taken_source": "exif", "details": 1, **more}


def test_filters_select_ids_in_sqlite(tmp_path):
    names = ["/p/Trips/Paris/a.jpg", "/p/Trips/b.jpg", "/p/home/c.jpg", "/p/trips-not/d.jpg", "/p/e.jpg"]
    with Store(tmp_path / "db", writable=True, create=True) as store:
        _add(store, names, 0)
        ids = {r.path: r.id for r in store.records().values()}
        store.set_details(
            [
                (
                    ids[names[0]],
                    _details(
                        "2019-06-14T10:00", camera_make="Canon", camera_model="EOS 5D", lat=48.85, lon=2.35
                    ),
                ),
                (
                    ids[names[1]],
                    _details(
                        "2019-12-31T23:59", camera_make="Google", camera_model="Pixel 7", lat=48.9, lon=2.4
                    ),
                ),
                (ids[names[2]], _details("2020-01-01T00:00", camera_make="Canon", lat=-33.9, lon=151.2)),
                (ids[names[3]], _details("2018-01-01T00:00", lat=0.0, lon=179.9)),
                (ids[names[4]], _details("2021-01-01T00:00", lat=0.0, lon=-179.9)),
            ]
        )

        names_of = {r.id: Path(r.path).name for r in store.records().values()}

        def found(query: str) -> list[str]:
            return sorted(names_of[i] for i in store.matching(split_filters(query)[1]).tolist())

        assert found("after:2019-06 before:2020") == ["a.jpg", "b.jpg"]
        assert found("after:2020") == ["c.jpg", "e.jpg"]
        assert found("in:trips") == ["a.jpg", "b.jpg"]  # folder names, any case; not 'trips-not'
        assert found("in:Trips/Paris") == ["a.jpg"]
        assert found("in:Paris in:home") == ["a.jpg", "c.jpg"]
        assert found("camera:canon") == ["a.jpg", "c.jpg"]
        assert found("camera:pixel camera:eos") == ["a.jpg", "b.jpg"]
        assert found("camera:canon after:2020") == ["c.jpg"]
        assert found("near:48.85,2.35,1km") == ["a.jpg"]
        assert found("near:48.85,2.35,10km") == ["a.jpg", "b.jpg"]
        assert found("near:0,180,50km") == ["d.jpg", "e.jpg"]  # across the antimeridian
        assert found("near:90,0,20000km") == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
        assert found("in:100%_trips") == []  # LIKE's wildcards are plain characters
        newest = store.matching(split_filters("after:2019")[1], newest_first=True, limit=2)
        assert [names_of[i] for i in newest.tolist()] == ["e.jpg", "c.jpg"]


def test_recognised_text_follows_its_image(tmp_path):
    with Store(tmp_path / "db", writable=True, create=True) as store:
        _add(store, ["a", "b", "c"], 0)
        ids = {r.path: r.id for r in store.records().values()}
        store.set_text([(ids["a"], "TOTAL 12.50\nThank you"), (ids["b"], "Rue de Rivoli"), (ids["c"], "")])
        assert store.missing_text() == []
        assert store.text_of(ids["b"]) == "Rue de Rivoli"
        assert store.text_matches(["total"]) == {ids["a"]: 1}
        assert store.text_matches(["rivoli", "rue", "thank"]) == {ids["b"]: 2, ids["a"]: 1}
        assert store.text_matches(["rivoli"], allowed=np.array([ids["a"]])) == {}
        assert store.text_matches(['"', "AND", "*", "NEAR("]) == {}  # FTS5 syntax is plain text here
        _add(store, ["a"], 1)  # re-embedded: a new id, and the old text leaves with the old row
        store.remove(["b"])
        assert store.text_matches(["total", "rivoli"]) == {}
        assert [r.path for r in store.missing_text()] == ["a"]
