"""The collection on disk: a SQLite catalog plus append-only vector files, crash-safe.

Layout of a collection directory::

    catalog.sqlite      meta (schema, model identity), images (path, size, mtime, hash, label, row), skipped
    <space>.<gen>.f32   raw float32 rows, one file per vector space ("features", "logits", ...)
    .lock               held by the one writer

Vector rows are appended and flushed *before* the catalog rows that point at them are committed, so a
crash (even `kill -9`) leaves only unreferenced tail rows, which the next writer truncates. Readers see a
consistent snapshot: the catalog is read in one transaction and rows are never rewritten in place
(compaction writes a new generation of files and switches to it in one commit).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semsearch.errors import CollectionError

SCHEMA_VERSION = 1
CATALOG = "catalog.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    label TEXT,
    row INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS images_sha256 ON images(sha256);
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Record:
    """One indexed image as the catalog knows it."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    label: str | None
    row: int


@dataclass(frozen=True)
class Snapshot:
    """A consistent read of the collection: ids, paths and each space's vectors, aligned row by row."""

    ids: np.ndarray
    rows: np.ndarray
    paths: list[str]
    vectors: Mapping[str, np.ndarray]
    meta: Mapping[str, str]

    def __len__(self) -> int:
        return len(self.ids)

    def position(self, image_id: int) -> int | None:
        """Row position of an image id in this snapshot, or None."""
        hits = np.flatnonzero(self.ids == image_id)
        return int(hits[0]) if len(hits) else None


class Store:
    """Catalog + vectors of one collection directory. Open read-only unless `writable`."""

    def __init__(self, root: Path, *, writable: bool = False, create: bool = False) -> None:
        self.root = Path(root)
        self.writable = writable
        catalog = self.root / CATALOG
        if not catalog.exists():
            if not create:
                raise CollectionError(
                    f"no collection at {self.root}: run `semsearch index DIR --db {self.root}` first"
                )
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CollectionError(f"cannot create collection at {self.root}: {exc.strerror}") from exc
        self._lock_file = None
        self._tables: dict[tuple[str, int], np.ndarray] = {}  # memory maps reused across lookups
        if writable:
            self._acquire_lock()
        try:
            self.db = sqlite3.connect(catalog, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL" if writable else "PRAGMA query_only=1")
            if writable:
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(_SCHEMA)
                self._migrate()
            version = self.meta().get("schema_version")
        except sqlite3.Error as exc:
            raise CollectionError(f"cannot open collection catalog {catalog}: {exc}") from exc
        if version is not None and int(version) > SCHEMA_VERSION:
            raise CollectionError(f"collection {self.root} was made by a newer semsearch (schema {version})")
        if writable:
            self._truncate_tails()

    # --- locking and schema ---------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        try:
            self._lock_file = open(self.root / ".lock", "a+")  # noqa: SIM115 - held for the store's lifetime
        except OSError as exc:
            raise CollectionError(f"collection {self.root} is not writable: {exc.strerror}") from exc
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise CollectionError(f"collection {self.root} is being indexed by another process") from exc

    def _migrate(self) -> None:
        """Bring an older catalog up to SCHEMA_VERSION (each step explicit, in one transaction)."""
        with self.transaction():
            current = int(self.meta().get("schema_version", SCHEMA_VERSION))
            # Future migrations go here: `if current < 2: ALTER TABLE ...`.
            self.db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                (str(max(current, SCHEMA_VERSION)),),
            )

    def close(self) -> None:
        self.db.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside commits together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- meta -------------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        try:
            return dict(self.db.execute("SELECT key, value FROM meta"))
        except sqlite3.OperationalError:  # a brand-new, still empty catalog opened read-only
            return {}

    def set_meta(self, **values: str) -> None:
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())

    # --- vector files -----------------------------------------------------------------------------
    def _generation(self, meta: Mapping[str, str] | None = None) -> int:
        return int((meta or self.meta()).get("generation", "0"))

    def _spaces(self, meta: Mapping[str, str] | None = None) -> dict[str, int]:
        """Vector spaces and their dimensions, from meta keys `dim.<space>`."""
        meta = meta or self.meta()
        return {key[4:]: int(value) for key, value in meta.items() if key.startswith("dim.")}

    def _vector_path(self, space: str, generation: int) -> Path:
        return self.root / f"{space}.{generation}.f32"

    def _row_count(self) -> int:
        (top,) = self.db.execute("SELECT COALESCE(MAX(row) + 1, 0) FROM images").fetchone()
        return int(top)

    def _truncate_tails(self) -> None:
        """Drop rows past the last committed one: leftovers of a write that crashed before its commit."""
        rows, generation = self._row_count(), self._generation()
        for space, dim in self._spaces().items():
            path = self._vector_path(space, generation)
            if path.exists() and path.stat().st_size > rows * dim * 4:
                os.truncate(path, rows * dim * 4)

    def _next_row(self) -> int:
        """First free row: the vector files may hold unreferenced rows (freed by removals) before it."""
        generation = self._generation()
        sizes = [
            self._vector_path(space, generation).stat().st_size // (dim * 4)
            for space, dim in self._spaces().items()
            if self._vector_path(space, generation).exists()
        ]
        return max([self._row_count(), *sizes])

    def append_vectors(self, vectors: Mapping[str, np.ndarray]) -> int:
        """Append aligned rows to every space's file, durably; returns the first row number."""
        first = self._next_row()
        meta = self.meta()
        generation, spaces = self._generation(meta), self._spaces(meta)
        for space, array in vectors.items():
            array = np.ascontiguousarray(array, dtype=np.float32)
            if space not in spaces:
                self.set_meta(**{f"dim.{space}": str(array.shape[1])})
            elif spaces[space] != array.shape[1]:
                raise CollectionError(
                    f"{space} vectors have {array.shape[1]} dims, collection has {spaces[space]}"
                )
            path = self._vector_path(space, generation)
            with open(path, "ab") as f:
                if f.tell() != first * array.shape[1] * 4:
                    f.truncate(first * array.shape[1] * 4)
                    f.seek(0, os.SEEK_END)
                f.write(array.tobytes())
                f.flush()
                os.fsync(f.fileno())
        return first

    # --- catalog writes ---------------------------------------------------------------------------
    def records(self) -> dict[str, Record]:
        """Every indexed image by path."""
        rows = self.db.execute("SELECT id, path, size, mtime_ns, sha256, label, row FROM images")
        return {r[1]: Record(*r) for r in rows}

    def skipped(self) -> dict[str, tuple[int, int, str]]:
        """Known-bad files by path: (size, mtime_ns, reason), so unchanged ones are not decoded again."""
        return {
            p: (s, m, r) for p, s, m, r in self.db.execute("SELECT path, size, mtime_ns, reason FROM skipped")
        }

    def upsert(self, records: Iterable[tuple[str, int, int, str, str | None, int]]) -> None:
        """Insert images (path, size, mtime_ns, sha256, label, row) in one transaction.

        A re-embedded path gets a fresh id (ids are never reused), so indexes keyed by id see it as a
        removal plus an addition and never keep a stale vector under a live id.
        """
        with self.transaction() as db:
            for path, size, mtime_ns, sha256, label, row in records:
                db.execute("DELETE FROM images WHERE path = ?", (path,))
                db.execute(
                    "INSERT INTO images (path, size, mtime_ns, sha256, label, row) VALUES (?, ?, ?, ?, ?, ?)",
                    (path, size, mtime_ns, sha256, label, row),
                )
                db.execute("DELETE FROM skipped WHERE path = ?", (path,))

    def touch(self, updates: Iterable[tuple[str, int, int]]) -> None:
        """Record a new size/mtime for files whose content hash did not change."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE images SET size = ?, mtime_ns = ? WHERE path = ?", [(s, m, p) for p, s, m in updates]
            )

    def remove(self, paths: Iterable[str]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM images WHERE path = ?", [(p,) for p in paths])

    def mark_skipped(self, entries: Iterable[tuple[str, int, int, str]]) -> None:
        """Remember bad files (path, size, mtime_ns, reason); an image that turned bad leaves the index."""
        entries = list(entries)
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?)", entries)
            db.executemany("DELETE FROM images WHERE path = ?", [(e[0],) for e in entries])

    def forget_skipped(self, paths: Iterable[str]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM skipped WHERE path = ?", [(p,) for p in paths])

    def compact(self) -> None:
        """Rewrite vector files without freed rows when they are mostly garbage (new generation, one commit)."""
        rows = self._row_count()
        live = self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        if rows - live < max(1024, live):
            return
        meta = self.meta()
        old, new = self._generation(meta), self._generation(meta) + 1
        order = [r for (r,) in self.db.execute("SELECT row FROM images ORDER BY row")]
        for space, dim in self._spaces(meta).items():
            source = np.memmap(self._vector_path(space, old), dtype=np.float32, mode="r").reshape(-1, dim)
            target = self._vector_path(space, new)
            with open(target, "wb") as f:
                f.write(np.ascontiguousarray(source[order]).tobytes())
                f.flush()
                os.fsync(f.fileno())
        with self.transaction() as db:
            db.execute(
                "CREATE TEMP TABLE remap AS SELECT id, ROW_NUMBER() OVER (ORDER BY row) - 1 AS r FROM images"
            )
            db.execute("UPDATE images SET row = (SELECT r FROM remap WHERE remap.id = images.id)")
            db.execute("DROP TABLE remap")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(new),))
        for space in self._spaces(meta):
            self._vector_path(space, old).unlink(missing_ok=True)

    # --- reads ------------------------------------------------------------------------------------
    def snapshot(self, spaces: Iterable[str] | None = None) -> Snapshot:
        """A consistent view of ids, paths and vectors (memory-mapped, read-only)."""
        self.db.execute("BEGIN")
        try:
            meta = self.meta()
            rows = self.db.execute("SELECT id, path, row FROM images ORDER BY id").fetchall()
        finally:
            self.db.execute("COMMIT")
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        row_numbers = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
        available = self._spaces(meta)
        wanted = available if spaces is None else {s: available[s] for s in spaces if s in available}
        vectors: dict[str, np.ndarray] = {}
        for space, dim in wanted.items():
            path = self._vector_path(space, self._generation(meta))
            if not len(rows):
                vectors[space] = np.zeros((0, dim), dtype=np.float32)
                continue
            table = np.memmap(path, dtype=np.float32, mode="r").reshape(-1, dim)
            vectors[space] = table[row_numbers]
        return Snapshot(ids=ids, rows=row_numbers, paths=[r[1] for r in rows], vectors=vectors, meta=meta)

    def lookup(self, path: str) -> Record | None:
        row = self.db.execute(
            "SELECT id, path, size, mtime_ns, sha256, label, row FROM images WHERE path = ?", (path,)
        ).fetchone()
        return Record(*row) if row else None

    def get(self, image_id: int) -> Record | None:
        row = self.db.execute(
            "SELECT id, path, size, mtime_ns, sha256, label, row FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        return Record(*row) if row else None

    def vectors_at(self, space: str, rows: list[int] | np.ndarray) -> np.ndarray:
        """Vectors of a few rows of one space (e.g. the query image's own features)."""
        rows = np.asarray(rows, dtype=np.int64)
        meta = self.meta()
        key = (space, self._generation(meta))
        table = self._tables.get(key)
        if table is None or (len(rows) and rows.max() >= len(table)):  # new file, or rows appended since
            path = self._vector_path(*key)
            table = np.memmap(path, dtype=np.float32, mode="r").reshape(-1, self._spaces(meta)[space])
            self._tables = {key: table, **{k: v for k, v in self._tables.items() if k[0] != space}}
        return np.array(table[rows])

    def paths_of(self, ids: list[int]) -> dict[int, str]:
        """Paths of image ids that are (still) in the catalog, in one query."""
        marks = ",".join("?" * len(ids))
        return dict(self.db.execute(f"SELECT id, path FROM images WHERE id IN ({marks})", ids))

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0])
