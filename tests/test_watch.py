"""`semsearch watch`: real file system events on real photos in a temporary folder, short debounce."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semsearch.collection import Collection
from semsearch.errors import CollectionError
from semsearch.watch import Batch, watch

FAST = {"debounce_ms": 100, "full_every": 600.0, "tick": 0.1}


class Watching:
    """`watch` running in a thread on its own writable collection; batches (or its error) in a queue."""

    def __init__(self, db: Path, folder: Path, **options: float) -> None:
        self.stop = threading.Event()
        self.batches: queue.Queue[Batch | BaseException] = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(db, folder, options), daemon=True)
        self.thread.start()

    def _run(self, db: Path, folder: Path, options: dict) -> None:
        try:
            with Collection(db, writable=True) as collection:
                for batch in watch(collection, folder, stop=self.stop, **{**FAST, **options}):
                    self.batches.put(batch)
        except BaseException as exc:  # handed to the test thread
            self.batches.put(exc)

    def next(self, timeout: float = 15) -> Batch:
        item = self.batches.get(timeout=timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    def until(self, done, timeout: float = 15) -> list[Batch]:
        """Batches until `done(batches)` holds."""
        batches: list[Batch] = []
        deadline = time.monotonic() + timeout
        while not done(batches):
            batches.append(self.next(max(0.1, deadline - time.monotonic())))
        return batches


@contextmanager
def watching(db: Path, folder: Path, **options: float) -> Iterator[Watching]:
    running = Watching(db, folder, **options)
    try:
        yield running
    finally:
        running.stop.set()
        running.thread.join(timeout=15)
        assert not running.thread.is_alive()


def counts(batch: Batch) -> tuple[int, int, int, int, int]:
    r = batch.report
    return r.added, r.updated, r.moved, r.removed, r.skipped


def place(source: Path | bytes, target: Path) -> None:
    """Put a file in place at once, as most copying tools do (a hidden temporary file, then a rename), so a
    loaded machine never shows the watcher a half-copied file (that case has a test of its own)."""
    part = target.with_name(f".{target.name}.part")
    part.write_bytes(source if isinstance(source, bytes) else source.read_bytes())
    os.replace(part, target)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def catalog(db: Path) -> dict[str, tuple[str, int, str | None]]:
    """path -> (content hash, vector row, label) as the collection records them."""
    with Collection(db) as c:
        return {p: (r.sha256, r.row, r.label) for p, r in c.store.records().items()}


# --- one watcher through a photo library's life ---------------------------------------------------------
def test_added_changed_moved_and_deleted_photos_are_synced_as_they_happen(small_photos, caltech, tmp_path):
    db = tmp_path / "db"
    ants = sorted((caltech / "ant").iterdir())
    with watching(db, small_photos) as w:
        start = w.next()
        assert start.full and counts(start) == (12, 0, 0, 0, 0)

        new = small_photos / "laptop" / "ant.jpg"
        place(ants[0], new)
        batch = w.next()
        assert not batch.full and counts(batch) == (1, 0, 0, 0, 0)
        assert catalog(db)[str(new)][0] == sha256(new)

        changed = sorted((small_photos / "crocodile").iterdir())[0]
        place(ants[1], changed)
        assert counts(w.next()) == (0, 1, 0, 0, 0)
        assert catalog(db)[str(changed)][0] == sha256(changed)

        before = catalog(db)
        renamed = new.with_name("renamed.jpg")
        new.rename(renamed)  # within its folder
        assert counts(w.next()) == (0, 0, 1, 0, 0)
        sub = small_photos / "laptop" / "trip"
        sub.mkdir()
        renamed.rename(sub / "ant.jpg")  # into a new subfolder
        assert counts(w.next()) == (0, 0, 1, 0, 0)
        after = catalog(db)
        assert after[str(sub / "ant.jpg")][:2] == before[str(new)][:2]  # same vectors, nothing embedded
        assert after[str(sub / "ant.jpg")][2] == "trip" and str(new) not in after

        balls = small_photos / "balls"
        (small_photos / "soccer_ball").rename(balls)  # a whole folder: one event for it, four moves
        assert counts(w.next()) == (0, 0, 4, 0, 0)
        assert {Path(p).parent for p in catalog(db)} >= {balls}

        changed.unlink()
        assert counts(w.next()) == (0, 0, 0, 1, 0)
    final = catalog(db)
    assert len(final) == 12 and str(changed) not in final
    assert all(record[0] == sha256(Path(path)) for path, record in final.items())


def test_a_burst_of_photos_is_a_few_batches(small_photos, caltech, tmp_path):
    """A camera import: 40 photos arriving over about a second are gathered, not synced one by one."""
    sources = [p for name in ("ant", "llama") for p in sorted((caltech / name).iterdir())[:20]]
    incoming = small_photos / "import"
    incoming.mkdir()
    with watching(tmp_path / "db", small_photos, debounce_ms=600) as w:
        w.next()
        for src in sources:
            place(src, incoming / f"{src.parent.name}-{src.name}")
            time.sleep(0.02)
        batches = w.until(lambda b: sum(x.report.added for x in b) >= len(sources))
    assert sum(x.report.added for x in batches) == len(sources)
    assert len(batches) <= 4, [counts(b) for b in batches]
    assert len(catalog(tmp_path / "db")) == 12 + len(sources)


def test_a_photo_still_being_written_is_recorded_as_its_final_content(small_photos, caltech, tmp_path):
    data = sorted((caltech / "okapi").iterdir())[0].read_bytes()
    target = small_photos / "okapi.jpg"
    with watching(tmp_path / "db", small_photos) as w:
        w.next()
        with open(target, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            partial = w.next()  # the half-written file: skipped for now, with its reason
            assert counts(partial) == (0, 0, 0, 0, 1)
            assert partial.report.skipped_files[0][0] == str(target)
            assert "truncated" in partial.report.skipped_files[0][1]
            f.write(data[len(data) // 2 :])
        assert counts(w.next()) == (1, 0, 0, 0, 0)
    assert catalog(tmp_path / "db")[str(target)][0] == hashlib.sha256(data).hexdigest()


def test_a_corrupt_photo_is_skipped_with_its_reason_and_the_rest_kept(small_photos, tmp_path):
    with watching(tmp_path / "db", small_photos) as w:
        w.next()
        place(b"\xff\xd8\xff\xe0 not really a jpeg", small_photos / "laptop" / "broken.jpg")
        place(b"never indexed, never a batch", small_photos / "notes.txt")
        batch = w.next()
        assert counts(batch) == (0, 0, 0, 0, 1)
        [(path, reason)] = batch.report.skipped_files
        assert path.endswith("broken.jpg") and reason
        with pytest.raises(queue.Empty):
            w.next(timeout=0.5)  # the text file woke nothing
    assert len(catalog(tmp_path / "db")) == 12


def test_a_vanished_watched_folder_stops_the_watcher_and_keeps_the_collection(small_photos, tmp_path):
    """The folder moved away at once (as an unmounted disk): an error, and its photos stay indexed."""
    with watching(tmp_path / "db", small_photos) as w:
        w.next()
        small_photos.rename(tmp_path / "elsewhere")
        with pytest.raises(CollectionError, match="was deleted or replaced; the collection keeps its photos"):
            w.until(lambda b: False)
    assert len(catalog(tmp_path / "db")) == 12


def test_a_missing_folder_is_an_error_before_anything_is_watched(tmp_path, capsys):
    with (
        Collection(tmp_path / "db", writable=True) as c,
        pytest.raises(CollectionError, match="does not exist"),
    ):
        watch(c, tmp_path / "nowhere", **FAST)  # at the call, before any "watching" line is printed
    from semsearch.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["watch", str(tmp_path / "nowhere"), "--db", str(tmp_path / "db")])
    assert stopped.value.code == 1
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: folder {tmp_path / 'nowhere'} does not exist or is not a directory\n"


def test_watches_are_per_folder_not_per_file(small_photos, tmp_path):
    """inotify needs a watch per folder; one per file would exhaust the limit on a large library."""
    if not Path("/proc/self/fdinfo").is_dir():
        pytest.skip("no /proc/self/fdinfo: not Linux")
    level = small_photos / "deep"
    for _ in range(30):  # 30 levels of 3 folders, 5 (never indexed) files in each folder
        for branch in range(3):
            (level / f"b{branch}").mkdir(parents=True)
            for i in range(5):
                (level / f"b{branch}" / f"note{i}.txt").write_text("x")
        level = level / "b0"
    tree = sum(1 for _ in small_photos.rglob("*") if _.is_dir()) + 1
    files = sum(1 for _ in small_photos.rglob("*") if _.is_file())
    with watching(tmp_path / "db", small_photos) as w:
        w.next()
        held = _inotify_watches()
    assert held == tree and files > 3 * tree


def _fdinfo(fd: str) -> list[str]:
    try:
        return Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
    except OSError:
        return []


def _inotify_watches() -> int:
    """inotify watches this process holds, from /proc/self/fdinfo."""
    return sum(
        line.startswith("inotify wd:") for fd in os.listdir("/proc/self/fdinfo") for line in _fdinfo(fd)
    )


# --- a running server -----------------------------------------------------------------------------------
def test_a_running_server_shows_new_photos_without_a_restart(small_photos, caltech, tmp_path):
    from fastapi.testclient import TestClient

    from semsearch.server.app import create_app

    db = tmp_path / "db"
    new = small_photos / "new" / "revolver.jpg"
    with watching(db, small_photos) as w:
        w.next()
        with TestClient(create_app(db), base_url="http://127.0.0.1:8000") as client:

            def top(query: str) -> list[str]:
                answer = client.get("/api/search", params={"q": query, "k": 1, "min_score": 0})
                assert answer.status_code == 200, answer.text
                return [hit["path"] for hit in answer.json()]

            assert client.get("/api/health").json()["images"] == 12
            assert top("revolver") != [str(new)]
            new.parent.mkdir()
            place(sorted((caltech / "revolver").iterdir())[0], new)
            deadline = time.monotonic() + 15
            while top("revolver") != [str(new)]:
                assert time.monotonic() < deadline, "the new photo never became searchable"
                time.sleep(0.05)
            assert client.get("/api/health").json()["images"] == 13


# --- the command line -----------------------------------------------------------------------------------
def _ctrl_c_stops() -> None:
    """In the child: Ctrl-C (SIGINT) as at a terminal, even where the test runs in a background job (whose
    children inherit SIGINT ignored, so Python installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _watch_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "semsearch.cli", "watch", *args, "--debounce", "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_stops,
    )


def _line(stream, timeout: float = 60) -> str:
    """The next line of a child's output, failing (not hanging) when none comes."""
    import select

    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no output from `semsearch watch`"
    return stream.readline()


def test_cli_prints_json_lines_refuses_a_second_writer_and_stops_on_ctrl_c(small_photos, caltech, tmp_path):
    db = tmp_path / "db"
    proc = _watch_cli(str(small_photos), "--db", str(db), "--json")
    try:
        start = json.loads(_line(proc.stdout))
        assert (start["full"], start["added"], start["moved"], start["removed"]) == (True, 12, 0, 0)
        photo = sorted((small_photos / "laptop").iterdir())[0]
        photo.rename(small_photos / "moved.jpg")
        place(sorted((caltech / "ant").iterdir())[0], small_photos / "ant.jpg")
        batches = [json.loads(_line(proc.stdout))]
        while sum(b["added"] + b["moved"] for b in batches) < 2:  # one batch, or two on a busy machine
            batches.append(json.loads(_line(proc.stdout)))
        assert not any(b["full"] or b["removed"] or b["updated"] for b in batches)
        assert sum(b["added"] for b in batches) == sum(b["moved"] for b in batches) == 1

        busy = subprocess.run(
            [sys.executable, "-m", "semsearch.cli", "index", str(small_photos), "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert busy.returncode == 1 and busy.stdout == ""
        [message] = busy.stderr.splitlines()
        assert message.startswith("error: ") and "semsearch watch" in message

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert proc.stdout.read() == "" and "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    with Collection(db, writable=True) as c:  # the lock is free and nothing is left to do
        report = c.sync(small_photos)
    assert (report.added, report.updated, report.moved, report.removed, report.unchanged) == (0, 0, 0, 0, 13)


def test_cli_prints_a_line_per_batch_and_one_error_line_when_the_folder_goes(small_photos, tmp_path):
    proc = _watch_cli(str(small_photos), "--db", str(tmp_path / "db"))
    try:
        assert _line(proc.stderr).startswith(f"watching {small_photos}")
        start = _line(proc.stderr).split(" ", 1)[1]
        assert start == "full sync: added 12, updated 0, moved 0, removed 0, skipped 0\n"
        (small_photos / "crocodile").rename(tmp_path / "crocodile")  # moved out of the tree
        assert _line(proc.stderr).split(" ", 1)[1] == "added 0, updated 0, moved 0, removed 4, skipped 0\n"
        shutil.rmtree(small_photos)
        assert proc.wait(timeout=30) == 1
        [error] = proc.stderr.read().splitlines()
        assert error.startswith(f"error: the watched folder {small_photos} was deleted or replaced")
    finally:
        if proc.poll() is None:
            proc.kill()


# --- sync(paths=...) against a full sync, over any sequence of file operations ---------------------------
POOL = ("ant", "llama", "okapi", "wrench")  # one real photo of each, copied around

_name = st.sampled_from(["x", "y", "z"])
_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"), st.integers(0, len(POOL) - 1), st.sampled_from(["", "a", "b", ".hidden"]), _name
        ),
        st.tuples(st.sampled_from(["delete", "touch", "corrupt"]), st.integers(0, 99)),
        st.tuples(st.just("modify"), st.integers(0, 99), st.integers(0, len(POOL) - 1)),
        st.tuples(st.sampled_from(["rename", "into_sub"]), st.integers(0, 99), _name),
        st.tuples(st.sampled_from(["move_dir", "delete_dir", "bring_dir"]), st.sampled_from(["a", "b"])),
    ),
    min_size=1,
    max_size=6,
)


@pytest.fixture(scope="module")
def pool(caltech) -> list[bytes]:
    return [sorted((caltech / name).iterdir())[0].read_bytes() for name in POOL]


def _apply(op: tuple, folder: Path, photos: list[bytes]) -> set[Path]:
    """Do one file operation; return the paths a watcher reports for it (a folder's own path only, for
    folder operations, as inotify does for a folder moved or deleted at once)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    kind = op[0]
    if kind == "add":
        _, photo, sub, name = op
        target = folder / sub / f"{name}.jpg"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(photos[photo])
        return {target.parent, target}
    if kind in ("move_dir", "delete_dir", "bring_dir"):
        target = folder / op[1]
        if kind == "bring_dir":  # a folder of photos made elsewhere, moved in at once
            outside = Path(tempfile.mkdtemp(dir=folder.parent))
            (outside / "c.jpg").write_bytes(photos[0])
            shutil.rmtree(target, ignore_errors=True)
            outside.rename(target)
            return {target}
        if not target.is_dir():
            return set()
        if kind == "delete_dir":
            shutil.rmtree(target)
            return {target}
        moved = folder / f"{op[1]}-moved"
        shutil.rmtree(moved, ignore_errors=True)
        target.rename(moved)
        return {target, moved}
    if not files:
        return set()
    path = files[op[1] % len(files)]
    if kind == "delete":
        path.unlink()
    elif kind == "touch":
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    elif kind == "corrupt":
        path.write_bytes(path.read_bytes()[:500])
    elif kind == "modify":
        path.write_bytes(photos[op[2]])
    else:
        target = path.with_name(f"{op[2]}.jpg") if kind == "rename" else path.parent / "sub" / path.name
        target.parent.mkdir(exist_ok=True)
        path.rename(target)
        return {path, target.parent, target}
    return {path}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
def test_a_sync_of_the_changed_paths_leaves_nothing_for_a_full_sync(pool, tmp_path, ops):
    """Whatever happened, syncing just the paths the events named makes the collection what a full sync
    makes it: every visible photo under its path with its content hash, nothing else."""
    folder, db = Path(tempfile.mkdtemp(dir=tmp_path)) / "photos", Path(tempfile.mkdtemp(dir=tmp_path)) / "db"
    for sub, picks in (("a", (0, 1)), ("b", (2, 3))):  # a/, b/: two photos each, indexed
        (folder / sub).mkdir(parents=True)
        for i in picks:
            (folder / sub / f"p{i}.jpg").write_bytes(pool[i])
    with Collection(db, writable=True) as c:
        c.sync(folder)
    changed: set[Path] = set()
    for op in ops:
        changed |= _apply(op, folder, pool)
    with Collection(db, writable=True) as c:
        c.sync(folder, paths=changed)
        after_full = c.sync(folder)
    assert (after_full.added, after_full.updated, after_full.moved, after_full.removed) == (0, 0, 0, 0)
    visible = {
        str(p): sha256(p)
        for p in folder.rglob("*.jpg")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }
    good = {p: h for p, h in visible.items() if p not in dict(after_full.skipped_files)}
    assert {p: r[0] for p, r in catalog(db).items()} == good
