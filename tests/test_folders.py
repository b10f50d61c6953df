"""Real-world folders: odd file names, deep trees, links, files that change mid-run, empty collections,
crash leftovers, and a fuzz test of index runs over a folder that keeps changing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from semsearch.collection import Collection
from semsearch.encoders.words import function_words, stop_words, tokenize
from semsearch.errors import DecodeError, EmptyQueryError
from semsearch.media import load_image
from semsearch.paths import shown
from semsearch.query import parse_query
from semsearch.store import Store


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fresh_features(collection: Collection, data: bytes) -> np.ndarray:
    """Features of `data` encoded now, on their own: what the catalog must hold for a file with these bytes."""
    model = collection.model
    return model.encode(load_image(data, model.pixels.size, model.pixels.geometry)[None])["features"][0]


def _stored_features(collection: Collection, path: str) -> np.ndarray:
    record = collection.store.lookup(path)
    assert record is not None, path
    return collection.store.vectors_at("features", [record.row])[0]


# --- names that are not UTF-8 ---------------------------------------------------------------------------
_file_names = st.binary(min_size=1, max_size=60).filter(
    lambda b: b"/" not in b and b"\0" not in b and not b.startswith(b".")
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(_file_names, min_size=1, max_size=5, unique=True))
def test_any_file_name_is_indexed_queried_and_shown(caltech, names):
    """Any bytes a file system allows in a name (here with a name that is not UTF-8 among them) are indexed
    under a path that opens the very file, answer queries, and show as printable, JSON-safe text."""
    photos = sorted((caltech / "laptop").iterdir())[:3]
    names = [b"bad-\xff\xfe", *names]
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.fsencode(tmp) + b"/photos"
        os.mkdir(folder)
        os.mkdir(folder + b"/dir-\xe9")  # a folder name in Latin-1: it becomes the label
        wanted = set()
        for i, name in enumerate(names):
            target = folder + (b"/dir-\xe9/" if i % 2 else b"/") + name + b".jpg"
            shutil.copyfile(photos[i % len(photos)], target)
            wanted.add(target)
        db = Path(tmp) / "db"
        with Collection(db, writable=True) as c:
            report = c.sync(Path(os.fsdecode(folder)))
            assert (report.added, report.skipped) == (len(names), 0), report.skipped_files
            records = list(c.store.records().values())
            stored = [r.path for r in records]
            assert {os.fsencode(p) for p in stored} == wanted  # the stored path round-trips to the file
            for path in stored:
                assert c.image_vectors(path)[1] is not None  # found in the catalog, not re-encoded
                hits = c.similar(path, k=len(names))
                others = [r for r in records if r.path != path]  # byte-identical copies are one hit
                assert len(hits) == len({r.sha256 for r in others})
                assert sorted(p for h in hits for p in (h.path, *h.also)) == sorted(r.path for r in others)
                assert all(os.path.exists(p) for h in hits for p in (h.path, *h.also))
                json.dumps([h.to_dict() for h in hits], ensure_ascii=False).encode("utf-8")  # never raises
            json.dumps(report.to_dict(), ensure_ascii=False).encode("utf-8")
            labels = {r.label for r in c.store.records().values()}
            assert os.fsdecode(b"dir-\xe9") in labels
        with Collection(db, writable=True) as c:
            again = c.sync(Path(os.fsdecode(folder)))
        assert (again.unchanged, again.added, again.removed) == (len(names), 0, 0)


@given(st.binary(), st.lists(st.integers(0, sys.maxunicode)).map(lambda codes: "".join(map(chr, codes))))
def test_shown_text_always_encodes_and_escapes_only_what_is_not_utf8(name, text):
    assert shown(os.fsdecode(name)) == name.decode("utf-8", "backslashreplace")
    shown(text).encode("utf-8")  # even lone surrogates that no file name decodes to


def test_undecodable_names_are_escaped_when_shown(small_photos):
    shutil.copyfile(
        next((small_photos / "laptop").iterdir()), os.fsencode(small_photos) + b"/bad-\xff\xfe.jpg"
    )
    with Collection(small_photos.parent / "db", writable=True) as c:
        c.sync(small_photos)
        hits = c.similar(str(next((small_photos / "laptop").iterdir())), k=20)
    shown = [h.to_dict()["path"] for h in hits]
    assert str(small_photos / "bad-\\xff\\xfe.jpg") in shown


# --- deep trees and links -------------------------------------------------------------------------------
def test_deep_trees_and_links_are_walked_and_bad_links_listed(small_photos, caltech, tmp_path):
    deep = small_photos / "deep"
    deep.mkdir()
    for _ in range(1100):  # one level at a time: Path.mkdir(parents=True) is itself recursive
        deep = deep / "d"
        deep.mkdir()
    try:
        _check_deep_trees_and_links(small_photos, deep, caltech, tmp_path)
    finally:  # bottom up: shutil.rmtree (and so pytest's clean-up of old runs) recurses on Python 3.11
        (deep / "okapi.jpg").unlink(missing_ok=True)
        while deep != small_photos:
            deep.rmdir()
            deep = deep.parent


def _check_deep_trees_and_links(small_photos: Path, deep: Path, caltech: Path, tmp_path: Path) -> None:
    shutil.copy2(sorted((caltech / "okapi").iterdir())[0], deep / "okapi.jpg")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy2(sorted((caltech / "ant").iterdir())[0], outside / "ant.jpg")
    (small_photos / "linked").symlink_to(outside)  # a linked folder is walked, once
    (small_photos / "linked-again").symlink_to(outside)
    (small_photos / "crocodile" / "up").symlink_to("..")  # a loop
    (small_photos / "dangling.jpg").symlink_to(tmp_path / "nothing.jpg")
    (small_photos / "loop-a.jpg").symlink_to("loop-b.jpg")
    (small_photos / "loop-b.jpg").symlink_to("loop-a.jpg")
    with Collection(tmp_path / "db", writable=True) as c:
        report = c.sync(small_photos)
        paths = set(c.store.records())
    assert report.added == 12 + 2
    assert str(deep / "okapi.jpg") in paths
    assert len([p for p in paths if p.endswith("ant.jpg")]) == 1
    reasons = {Path(p).relative_to(small_photos).as_posix(): r for p, r in report.skipped_files}
    assert set(reasons) == {"linked-again", "crocodile/up", "dangling.jpg", "loop-a.jpg", "loop-b.jpg"}
    assert "broken" in reasons["dangling.jpg"]
    assert "loop" in reasons["loop-a.jpg"] and "loop" in reasons["loop-b.jpg"]
    assert "already" in reasons["crocodile/up"] and "already" in reasons["linked-again"]


# --- a file that changes while it is indexed ------------------------------------------------------------
def test_the_recorded_hash_is_the_hash_of_the_embedded_bytes(small_photos, caltech):
    """A file overwritten after the scan and restored later must not keep the other photo's vector."""
    photo = sorted((small_photos / "laptop").iterdir())[0]
    original, before = photo.read_bytes(), photo.stat()
    other = sorted((caltech / "ant").iterdir())[0].read_bytes()

    def overwrite_once_scanned(done: int, total: int, stage: str | None = None) -> None:
        if done == 0 and stage is None:  # called after the scan, before any decoding
            photo.write_bytes(other)

    db = small_photos.parent / "db"
    with Collection(db, writable=True) as c:
        c.sync(small_photos, progress=overwrite_once_scanned)
        assert c.store.lookup(str(photo)).sha256 == _sha256(other)
        np.testing.assert_allclose(_stored_features(c, str(photo)), _fresh_features(c, other), atol=1e-5)
    photo.write_bytes(original)  # restored as a backup tool would: old content, old mtime
    os.utime(photo, ns=(before.st_atime_ns, before.st_mtime_ns))
    with Collection(db, writable=True) as c:
        report = c.sync(small_photos)
        assert report.updated == 1
        assert c.store.lookup(str(photo)).sha256 == _sha256(original)
        np.testing.assert_allclose(_stored_features(c, str(photo)), _fresh_features(c, original), atol=1e-5)


# --- empty collections and any k ------------------------------------------------------------------------
def test_an_empty_collection_answers_with_nothing(caltech, tmp_path):
    """What a kill before the first batch leaves: a catalog with a model and no images."""
    (tmp_path / "empty").mkdir()
    with Collection(tmp_path / "db", writable=True) as c:
        c.sync(tmp_path / "empty")
    photo = str(sorted((caltech / "laptop").iterdir())[0])
    with Collection(tmp_path / "db") as c:
        assert c.similar(photo) == []
        assert c.similar(photo, focus="laptop") == []
        assert c.similar(Path(photo).read_bytes(), k=10**9) == []
        assert c.search("laptop") == []
        assert [w for w, _ in c.tags(photo, k=5)]  # an image's tags need no collection


def test_tags_k_is_clamped_to_the_tag_vocabulary(small_photos):
    """(similar and search with a huge k are tested in a memory-limited process: test_cli.py)"""
    photo = str(sorted((small_photos / "laptop").iterdir())[0])
    with Collection(small_photos.parent / "db", writable=True) as c:
        c.sync(small_photos)
        tags = c.tags(photo, k=10**9)
    assert len(tags) == len({w for w, _ in tags}) > 100
    assert all(a[1] >= b[1] for a, b in zip(tags, tags[1:]))


# --- crash leftovers ------------------------------------------------------------------------------------
def _killed_while_saving(path: Path) -> None:
    """Run write_atomically(path) in a process that is killed (SIGKILL) half-way through writing."""
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from semsearch.paths import write_atomically\n"
        "def write(tmp):\n"
        "    tmp.write_bytes(b'half' * 1000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "write_atomically(Path(sys.argv[1]), write)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL


def test_the_next_writer_sweeps_what_killed_writers_left(tmp_path):
    root = tmp_path / "db"
    with Store(root, writable=True, create=True) as store:
        vectors = np.eye(8, dtype=np.float32)[[0] * 3000]
        first = store.append_vectors({"features": vectors, "logits": vectors[:, :4]})
        store.upsert((f"img{i}", 1, 1, "h", None, first + i) for i in range(3000))
        store.remove([f"img{i}" for i in range(2500)])
        store.compact()  # generation 1
    _killed_while_saving(root / "index" / "features.idx")
    _killed_while_saving(root / "index" / "joint-0123456789abcdef.idx")
    (root / "logits.0.f32").write_bytes(b"\0" * 64)  # killed after compaction's commit, before its unlink
    (root / "features.2.f32").write_bytes(b"\0" * 64)  # killed while writing the next generation
    mine = [root / "notes.tmp", root / "index" / "readme.txt", root / "backup.f32", root / "other.0.f32"]
    for path in mine:
        path.write_text("the user's own file")

    def leftovers() -> list[str]:
        return sorted(
            p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p not in mine
        )

    assert len(leftovers()) == 8  # catalog, lock, two vector files, two temp files, two orphans
    with Store(root) as reader:  # readers never delete anything
        assert len(reader.snapshot(["features"])) == 500
    assert len(leftovers()) == 8
    with Store(root, writable=True):
        pass
    assert [p for p in leftovers() if not p.startswith("catalog.sqlite")] == [
        ".lock",
        "features.1.f32",
        "logits.1.f32",
    ]
    assert all(p.read_text() == "the user's own file" for p in mine)


def test_a_killed_save_of_a_model_is_swept_by_the_next_save(tmp_path):
    from semsearch.encoders.head import save_head

    out = tmp_path / "model.npz"
    _killed_while_saving(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.npz.")]
    (tmp_path / ".other.npz.x.tmp").write_text("not ours to delete")
    save_head(out, {"w": np.zeros((2, 2), np.float32)}, {"note": "test"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.npz.x.tmp", "model.npz"]


# --- queries with nothing to search for, images that are not images ---------------------------------------
_stops = sorted(w for w in function_words() if tokenize(w) == [w])


@given(st.lists(st.sampled_from(_stops), min_size=1, max_size=6), st.sampled_from(["", "2:", "-"]))
def test_a_query_of_stop_words_only_is_empty(words, prefix):
    with pytest.raises(EmptyQueryError, match="stop words"):
        parse_query(prefix + " ".join(words))
    assert parse_query(" ".join([*words, "boat"]))  # one real word makes it a query
    assert parse_query(" ".join([*words, "people"]))  # never a tag, but something to search for


def test_function_words_are_stop_words():
    assert {
        "the",
        "a",
        "of",
    } <= function_words() < stop_words() and "people" in stop_words() - function_words()


def test_a_file_that_is_not_an_image_is_named_in_the_error(small_photos, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with Collection(small_photos.parent / "db", writable=True) as c:
        c.sync(small_photos)
        with pytest.raises(DecodeError, match=f"^{notes}: not an image$"):
            c.similar(str(notes))
        with pytest.raises(DecodeError, match=f"^{notes}: not an image$"):
            c.search(f"cat + {notes}")


# --- fuzzing sequences of folder changes and index runs ---------------------------------------------------
_MEMORY_DISK = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # fsync is free there: more runs


class IndexRuns(RuleBasedStateMachine):
    """Files (with any names) are added, replaced, deleted, renamed and truncated between index runs, in any
    order; after each run the catalog must describe the folder exactly: the same paths, the hash of each file's current bytes,
    the vectors of a fresh encoding of that content, and the corrupt files (only those) listed as skipped."""

    pool: list[bytes] = []  # real photos, set by the test below
    fresh: dict[str, np.ndarray] = {}  # sha256 -> features encoded on their own

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory(dir=_MEMORY_DISK)
        self.folder = Path(self.tmp.name) / "photos"
        (self.folder / "sub").mkdir(parents=True)
        self.db = Path(self.tmp.name) / "db"
        self.content: dict[Path, bytes] = {}  # what the folder holds, as this test believes
        self.made = 0

    def teardown(self) -> None:
        self.tmp.cleanup()

    def _new_path(self, sub: bool, name: bytes) -> Path:
        self.made += 1
        return self.folder / ("sub" if sub else "") / os.fsdecode(b"%d-%s.jpg" % (self.made, name))

    def _pick(self, i: int) -> Path:
        return sorted(self.content)[i % len(self.content)]

    def _write(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)
        self.content[path] = data

    @initialize(photos=st.lists(st.integers(0, 5), min_size=1, max_size=4))
    def start(self, photos: list[int]) -> None:
        for photo in photos:
            self._write(self._new_path(photo % 2 == 1, b"start"), self.pool[photo])

    @rule(photo=st.integers(0, 5), sub=st.booleans(), name=_file_names)
    def add(self, photo: int, sub: bool, name: bytes) -> None:
        self._write(self._new_path(sub, name), self.pool[photo])

    @precondition(lambda self: self.content)
    @rule(i=st.integers(0, 99), photo=st.integers(0, 5))
    def replace(self, i: int, photo: int) -> None:
        self._write(self._pick(i), self.pool[photo])

    @precondition(lambda self: len(self.content) > 2)  # keeps the folder from staying empty
    @rule(i=st.integers(0, 99))
    def delete(self, i: int) -> None:
        path = self._pick(i)
        path.unlink()
        del self.content[path]

    @precondition(lambda self: self.content)
    @rule(i=st.integers(0, 99), sub=st.booleans(), name=_file_names)
    def rename(self, i: int, sub: bool, name: bytes) -> None:
        path, target = self._pick(i), self._new_path(sub, name)
        path.rename(target)
        self.content[target] = self.content.pop(path)

    @precondition(lambda self: self.content)
    @rule(i=st.integers(0, 99))
    def truncate(self, i: int) -> None:
        path = self._pick(i)
        self._write(path, self.content[path][: len(self.content[path]) // 2])

    @rule()
    def index(self) -> None:
        with Collection(self.db, writable=True) as c:
            report = c.sync(self.folder)
            records = c.store.records()
            good = {str(p): data for p, data in self.content.items() if _sha256(data) in self.fresh}
            assert set(records) == set(good)
            assert (
                {p for p, _ in report.skipped_files}
                == set(c.store.skipped())
                == {str(p) for p in self.content if str(p) not in good}
            )
            for path, record in records.items():
                assert (record.sha256, record.size) == (_sha256(good[path]), len(good[path]))
                np.testing.assert_allclose(_stored_features(c, path), self.fresh[record.sha256], atol=1e-5)
            assert set(c.vector_index(c.image_space).ids().tolist()) == {r.id for r in records.values()}


def test_any_sequence_of_folder_changes_and_index_runs_keeps_the_catalog_exact(caltech, tmp_path):
    photos = [
        sorted((caltech / name).iterdir())[0] for name in ("ant", "laptop", "okapi", "ferry", "ibis", "llama")
    ]
    pool = [p.read_bytes() for p in photos]
    sizes = [len(d) >> shift for d in pool for shift in range(8)]
    assert len(set(sizes)) == len(
        sizes
    )  # a change of content always changes the size: mtime ticks are coarse
    with Collection(tmp_path / "db", writable=True) as c:
        fresh = {_sha256(d): _fresh_features(c, d) for d in pool}
    IndexRuns.pool, IndexRuns.fresh = pool, fresh
    run_state_machine_as_test(
        IndexRuns,
        settings=settings(
            max_examples=40, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )
