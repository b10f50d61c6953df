"""Collection behaviour on real photos: incremental indexing, bad files, focus search, retrieval quality."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semsearch.collection import Collection
from semsearch.errors import CollectionError, UnknownClassError


def _class_of(path: str) -> str:
    return Path(path).parent.name


def test_reindex_embeds_only_new_and_changed_files_and_drops_deleted(small_photos, caltech):
    db = small_photos.parent / "db"
    with Collection(db, writable=True) as c:
        first = c.sync(small_photos)
    assert (first.added, first.updated, first.unchanged, first.removed, first.skipped) == (12, 0, 0, 0, 0)

    crocs = sorted((small_photos / "crocodile").iterdir())
    laptops = sorted((small_photos / "laptop").iterdir())
    shutil.copy2(sorted((caltech / "ant").iterdir())[0], small_photos / "crocodile" / "new.jpg")  # added
    os.utime(crocs[0], ns=(crocs[0].stat().st_atime_ns, crocs[0].stat().st_mtime_ns + 10**9))  # touched only
    shutil.copyfile(sorted((caltech / "ant").iterdir())[1], laptops[0])  # content changed
    crocs[1].unlink()  # deleted
    with Collection(db, writable=True) as c:
        second = c.sync(small_photos)
        assert (second.added, second.updated, second.unchanged, second.removed) == (1, 1, 10, 1)
        assert c.store.count() == 12
        hits = c.similar(str(small_photos / "crocodile" / "new.jpg"), k=1)
    assert hits[0].path == str(laptops[0])  # the two ant photos now find each other

    with Collection(db, writable=True) as c:
        third = c.sync(small_photos)
    assert (third.added, third.updated, third.removed, third.unchanged) == (0, 0, 0, 12)


def test_moved_file_keeps_its_vectors(small_photos):
    db = small_photos.parent / "db"
    with Collection(db, writable=True) as c:
        c.sync(small_photos)
        photo = sorted((small_photos / "laptop").iterdir())[0]
        before = c.image_vectors(str(photo))[0]["features"]
    moved = small_photos / "laptop" / "renamed.jpg"
    photo.rename(moved)
    with Collection(db, writable=True) as c:
        report = c.sync(small_photos)
        after = c.image_vectors(str(moved))[0]["features"]
    assert (report.added, report.moved, report.removed, report.unchanged) == (0, 1, 0, 11)
    assert report.to_dict()["moved"] == 1
    np.testing.assert_array_equal(before, after)


def _write_bad_files(folder: Path, good: Path) -> dict[str, str]:
    """Bad files of every kind, with a word their skip reason must contain."""
    data = good.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "corrupt.jpg").write_bytes(
        bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))
    )
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("just some text, not a photo")
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")  # 400 Mpx, a few KB on disk
    return {
        "truncated.jpg": "truncated",
        "corrupt.jpg": "",
        "empty.png": "empty",
        "notes.jpg": "",
        "bomb.png": "large",
    }


def test_bad_files_are_skipped_with_reasons_and_the_rest_is_indexed(small_photos):
    expected = _write_bad_files(small_photos, sorted((small_photos / "laptop").iterdir())[0])
    db = small_photos.parent / "db"
    with Collection(db, writable=True) as c:
        report = c.sync(small_photos)
        assert report.added == 12 and c.store.count() == 12
    reasons = {Path(p).name: r for p, r in report.skipped_files}
    assert set(reasons) == set(expected)
    for name, word in expected.items():
        assert word in reasons[name].lower() and reasons[name]
    with Collection(db, writable=True) as c:  # known-bad unchanged files are reported again, not re-decoded
        again = c.sync(small_photos)
    assert {Path(p).name for p, _ in again.skipped_files} == set(expected) and again.unchanged == 12


def test_missing_folder_and_foreign_model_leave_collection_intact(small_photos):
    db = small_photos.parent / "db"
    with Collection(db, writable=True) as c:
        c.sync(small_photos)
    with Collection(db, writable=True) as c, pytest.raises(CollectionError, match="does not exist"):
        c.sync(small_photos / "no-such-folder")
    with pytest.raises(CollectionError, match="made with efficientnet-lite0"):
        Collection(db, writable=True, model="lite2")
    with Collection(db) as c:
        assert c.store.count() == 12


def _precision_at_10(db: Path) -> dict[str, float]:
    with Collection(db) as c:
        snap = c.store.snapshot(["features"])
        labels = np.array([_class_of(p) for p in snap.paths])
        features = snap.vectors["features"]
        scores = features @ features.T
        np.fill_diagonal(scores, -np.inf)
        top = np.argsort(-scores, axis=1)[:, :10]
    hits = labels[top] == labels[:, None]
    return {label: float(hits[labels == label].mean()) for label in np.unique(labels)}


def test_image_to_image_precision_on_caltech(caltech_collection):
    by_class = _precision_at_10(caltech_collection)
    mean = float(np.mean(list(by_class.values())))
    print(f"\nimage->image precision@10, class-averaged: {mean:.3f}")
    for label, p in sorted(by_class.items(), key=lambda kv: kv[1]):
        print(f"  {label:15s} {p:.2f}")
    assert mean > 0.8
    for label in ("accordion", "soccer_ball", "okapi", "revolver"):
        assert by_class[label] > 0.7, label


def test_similar_by_indexed_photo_returns_its_class(caltech_collection, caltech):
    query = sorted((caltech / "menorah").iterdir())[0]
    with Collection(caltech_collection) as c:
        hits = c.similar(str(query), k=10)
    assert len(hits) == 10 and str(query) not in {h.path for h in hits}
    assert [h.rank for h in hits] == list(range(1, 11))
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    assert Counter(_class_of(h.path) for h in hits)["menorah"] >= 7


def test_focus_moves_results_towards_the_focus_class(caltech_collection, caltech, tmp_path):
    """A photo holding a laptop and a crocodile side by side: the focus class decides which one counts."""
    laptop = Image.open(sorted((caltech / "laptop").iterdir())[2]).convert("RGB").resize((240, 240))
    croc = Image.open(sorted((caltech / "crocodile").iterdir())[2]).convert("RGB").resize((240, 240))
    both = Image.new("RGB", (480, 240))
    both.paste(laptop, (0, 0))
    both.paste(croc, (240, 0))
    query = tmp_path / "both.jpg"
    both.save(query)
    with Collection(caltech_collection) as c:
        on_laptop = Counter(_class_of(h.path) for h in c.similar(str(query), k=20, focus="laptop"))
        on_croc = Counter(_class_of(h.path) for h in c.similar(str(query), k=20, focus="African crocodile"))
        with pytest.raises(UnknownClassError, match="did you mean"):
            c.similar(str(query), focus="crocodil")
        # everyday words name WordNet groups of classes: 'computers' (laptop, desktop, notebook...), 'reptiles'
        on_computers = Counter(_class_of(h.path) for h in c.similar(str(query), k=20, focus="computers"))
        on_reptiles = Counter(_class_of(h.path) for h in c.similar(str(query), k=20, focus="reptiles"))
    assert on_laptop["laptop"] > on_croc["laptop"]
    assert on_croc["crocodile"] > on_laptop["crocodile"]
    assert on_computers["laptop"] > on_reptiles["laptop"]
    assert on_reptiles["crocodile"] > on_computers["crocodile"]
