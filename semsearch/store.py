"""The collection on disk: a SQLite catalog plus append-only vector files, crash-safe.

Layout of a collection directory::

    catalog.sqlite      meta (schema, model identity), images (path, size, mtime, hash, label, row, and
                        the photo's details: date taken, camera, position, size), skipped, ocr (FTS5)
    <space>.<gen>.f32   raw float32 rows, one file per vector space ("features", "logits", ...)
    index/              saved nearest-neighbour indexes (see Collection), written atomically
    .lock               held by the one writer

Vector rows are appended and flushed *before* the catalog rows that point at them are committed, so a
crash (even `kill -9`) or a full disk leaves only unreferenced tail rows, possibly a partial one, which the
next writer truncates; readers only ever map whole rows. Readers see a consistent snapshot: the catalog is
read in one transaction and rows are never rewritten in place (compaction writes a new generation of files
and switches to it in one commit). What a killed writer leaves behind (an old or unfinished generation of
vector files, temp files of index saves) is swept by the next writer when it opens the collection.

Paths and labels are stored as TEXT when they are valid UTF-8, which is nearly always, and otherwise, for
file names that are not UTF-8 (Python holds their odd bytes as surrogate escapes), as a BLOB of the file
system's own bytes: each form round-trips to the exact name, so the stored path opens the very file.

Filters (`semsearch.query.Filters`) become one SQL query over the catalog (`matching`): dates and places
use indexed columns (``taken``; ``lat, lon`` for a bounding box, refined by the great-circle distance),
folder and camera names a LIKE scan (ASCII letters match in any case). Text recognised in photos lives in
an FTS5 table keyed by image id; a trigger removes it with its image, so a re-embedded or deleted photo
never keeps stale text.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from semsearch.errors import CollectionError
from semsearch.metadata import wall_seconds
from semsearch.paths import sweep_temporaries

if TYPE_CHECKING:
    from semsearch.query import Filters, Place

SCHEMA_VERSION = 2
CATALOG = "catalog.sqlite"
#: Per-image columns a photo's details fill (schema 2); `details` is the version of the extraction that
#: wrote them (NULL: not read yet), `ocr` whether text recognition ran on the image (NULL: not yet).
DETAIL_COLUMNS = (
    "width",
    "height",
    "taken",  # wall-clock seconds since 1970-01-01 00:00 (the photo's local time, as if it were UTC)
    "taken_offset",  # minutes east of UTC, where known
    "taken_source",  # 'exif' or 'file'
    "camera_make",
    "camera_model",
    "lat",
    "lon",
    "details",
)
EARTH_RADIUS_KM = 6371.0088

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


#: Schema changes, one step per version: applied in order, inside one transaction, to a catalog of an
#: older version (a brand-new catalog starts at version 1, the tables above).
_MIGRATIONS: dict[int, str] = {
    2: """
ALTER TABLE images ADD COLUMN width INTEGER;
ALTER TABLE images ADD COLUMN height INTEGER;
ALTER TABLE images ADD COLUMN taken INTEGER;
ALTER TABLE images ADD COLUMN taken_offset INTEGER;
ALTER TABLE images ADD COLUMN taken_source TEXT;
ALTER TABLE images ADD COLUMN camera_make TEXT;
ALTER TABLE images ADD COLUMN camera_model TEXT;
ALTER TABLE images ADD COLUMN lat REAL;
ALTER TABLE images ADD COLUMN lon REAL;
ALTER TABLE images ADD COLUMN details INTEGER;
ALTER TABLE images ADD COLUMN ocr INTEGER;
CREATE INDEX images_taken ON images(taken);
CREATE INDEX images_place ON images(lat, lon);
CREATE VIRTUAL TABLE ocr USING fts5(text, tokenize = 'unicode61 remove_diacritics 2');
CREATE TRIGGER images_text_leaves AFTER DELETE ON images BEGIN DELETE FROM ocr WHERE rowid = old.id; END;
""",
}


_VECTOR_FILE = re.compile(r"(?P<space>\w+)\.(?P<generation>\d+)\.f32")


def _to_sql(text: str | None) -> str | bytes | None:
    """A path or label as SQLite stores it: TEXT, or the file system's bytes where it is not UTF-8."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text)
    return text


def _from_sql(value: str | bytes | None) -> str | None:
    return os.fsdecode(value) if isinstance(value, bytes) else value


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

    @classmethod
    def from_sql(cls, row: tuple) -> Record:
        image_id, path, size, mtime_ns, sha256, label, vector_row = row
        return cls(image_id, _from_sql(path), size, mtime_ns, sha256, _from_sql(label), vector_row)


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
                    f"no collection at {self.root}",
                    cli_hint=f"run `semsearch index DIR --db {self.root}` first",
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
            self._sweep()

    # --- locking and schema ---------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        try:
            self._lock_file = open(self.root / ".lock", "a+")  # noqa: SIM115 - held for the store's lifetime
        except OSError as exc:
            raise CollectionError(f"collection {self.root} is not writable: {exc.strerror}") from exc
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise CollectionError(
                f"collection {self.root} is being indexed by another process",
                cli_hint="wait for that `semsearch index` to finish, or stop the `semsearch watch` on it",
            ) from exc

    def _migrate(self) -> None:
        """Bring an older catalog up to SCHEMA_VERSION (each step explicit, all in one transaction)."""
        with self.transaction():
            current = int(self.meta().get("schema_version", 1))  # none yet: the tables just made
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version].strip().split(";\n"):
                    self.db.execute(statement)
            self.db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                (str(max(current, SCHEMA_VERSION)),),
            )

    @property
    def has_details(self) -> bool:
        """Whether the catalog has the columns of photo details (a schema 1 catalog gets them when it is
        next opened for writing, by an index run)."""
        return int(self.meta().get("schema_version", 1)) >= 2

    def _need_details(self) -> None:
        if not self.has_details:
            raise CollectionError(
                f"collection {self.root} has no photo dates, places or cameras yet (made by an older "
                f"semsearch): run `semsearch index FOLDER --db {self.root}` once to add them"
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
        with self.writing():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A failed write (disk full, file too large, I/O error) becomes one clear CollectionError."""
        try:
            yield
        except (OSError, sqlite3.OperationalError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise CollectionError(f"cannot write to collection {self.root}: {reason}") from exc

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

    def _truncate_tails(self, rows: int | None = None) -> None:
        """Drop rows past the last committed one (or past `rows`): leftovers of a write that crashed or
        failed (a full disk) before its commit, a partial row included."""
        rows = self._row_count() if rows is None else rows
        generation = self._generation()
        with self.writing():
            for space, dim in self._spaces().items():
                path = self._vector_path(space, generation)
                if path.exists() and path.stat().st_size > rows * dim * 4:
                    os.truncate(path, rows * dim * 4)

    def _sweep(self) -> None:
        """Delete what killed writers left: vector files of another generation than the catalog's (compaction
        killed before its commit, or after it but before the unlink) and temp files of index saves."""
        meta = self.meta()
        generation, spaces = self._generation(meta), self._spaces(meta)
        for entry in os.scandir(self.root):
            match = _VECTOR_FILE.fullmatch(entry.name)
            if (
                match
                and match["space"] in spaces
                and int(match["generation"]) != generation
                and entry.is_file(follow_symlinks=False)
            ):
                Path(entry.path).unlink(missing_ok=True)
        sweep_temporaries(self.root / "index")

    def _table(self, space: str, generation: int, dim: int) -> np.ndarray:
        """A read-only map of a vector file's whole rows: a partial tail row (a write cut short) is never read."""
        path = self._vector_path(space, generation)
        rows = path.stat().st_size // (dim * 4)
        if rows == 0:
            return np.zeros((0, dim), dtype=np.float32)
        return np.memmap(path, dtype=np.float32, mode="r", shape=(rows, dim))

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
        """Append aligned rows to every space's file, durably; returns the first row number.

        A write that fails part-way (a full disk) is cut back to `first`, so no partial row stays behind.
        """
        first = self._next_row()
        meta = self.meta()
        generation, spaces = self._generation(meta), self._spaces(meta)
        try:
            with self.writing():
                for space, array in vectors.items():
                    array = np.ascontiguousarray(array, dtype=np.float32)
                    if space not in spaces:
                        self.set_meta(**{f"dim.{space}": str(array.shape[1])})
                    elif spaces[space] != array.shape[1]:
                        raise CollectionError(
                            f"{space} vectors have {array.shape[1]} dims, collection has {spaces[space]}"
                        )
                    with open(self._vector_path(space, generation), "ab") as f:
                        if f.tell() != first * array.shape[1] * 4:
                            f.truncate(first * array.shape[1] * 4)
                            f.seek(0, os.SEEK_END)
                        f.write(array.tobytes())
                        f.flush()
                        os.fsync(f.fileno())
        except CollectionError:
            with suppress(CollectionError):  # best effort: the next writer truncates the tail anyway
                self._truncate_tails(first)
            raise
        return first

    # --- catalog writes ---------------------------------------------------------------------------
    def records(self) -> dict[str, Record]:
        """Every indexed image by path."""
        rows = self.db.execute("SELECT id, path, size, mtime_ns, sha256, label, row FROM images")
        return {record.path: record for record in map(Record.from_sql, rows)}

    def skipped(self) -> dict[str, tuple[int, int, str]]:
        """Known-bad files by path: (size, mtime_ns, reason), so unchanged ones are not decoded again."""
        return {
            _from_sql(p): (s, m, r)
            for p, s, m, r in self.db.execute("SELECT path, size, mtime_ns, reason FROM skipped")
        }

    def upsert(
        self,
        records: Iterable[tuple[str, int, int, str, str | None, int]],
        details: Mapping[str, Mapping[str, object]] | None = None,
    ) -> list[int]:
        """Insert images (path, size, mtime_ns, sha256, label, row) in one transaction, with the details
        (DETAIL_COLUMNS values) given for their paths; returns their new ids, in order.

        A re-embedded path gets a fresh id (ids are never reused), so indexes keyed by id see it as a
        removal plus an addition and never keep a stale vector under a live id.
        """
        details = details or {}
        ids: list[int] = []
        with self.transaction() as db:
            for path, size, mtime_ns, sha256, label, row in records:
                key = _to_sql(path)
                db.execute("DELETE FROM images WHERE path = ?", (key,))
                cursor = db.execute(
                    "INSERT INTO images (path, size, mtime_ns, sha256, label, row) VALUES (?, ?, ?, ?, ?, ?)",
                    (key, size, mtime_ns, sha256, _to_sql(label), row),
                )
                db.execute("DELETE FROM skipped WHERE path = ?", (key,))
                ids.append(int(cursor.lastrowid))
                if path in details:
                    self._write_details(ids[-1], details[path])
        return ids

    def _write_details(self, image_id: int, values: Mapping[str, object]) -> None:
        unknown = set(values) - set(DETAIL_COLUMNS)
        if unknown:
            raise ValueError(f"not detail columns: {sorted(unknown)}")
        columns = list(DETAIL_COLUMNS)
        self.db.execute(
            f"UPDATE images SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
            [*(values.get(c) for c in columns), image_id],
        )

    def set_details(self, items: Iterable[tuple[int, Mapping[str, object]]]) -> None:
        """Write the details of images already in the catalog (every column: a missing one is NULL)."""
        with self.transaction():
            for image_id, values in items:
                self._write_details(image_id, values)

    def carry_over(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Give images (new id) the details and recognised text of others (old id) with the same content:
        a moved file is not read again."""
        columns = ", ".join(DETAIL_COLUMNS)
        with self.transaction() as db:
            for old, new in pairs:
                db.execute(
                    f"UPDATE images SET ({columns}, ocr) = (SELECT {columns}, ocr FROM images WHERE id = ?) "
                    "WHERE id = ?",
                    (old, new),
                )
                db.execute(
                    "INSERT INTO ocr (rowid, text) SELECT ?, text FROM ocr WHERE rowid = ?", (new, old)
                )

    def missing_details(self, version: int) -> list[Record]:
        """Images whose details were never read, or read by an extraction older than `version`."""
        return self._select("WHERE details IS NULL OR details < ?", (version,))

    def set_text(self, items: Iterable[tuple[int, str]]) -> None:
        """Record the text recognised in images (empty where none was found), replacing any earlier."""
        with self.transaction() as db:
            for image_id, text in items:
                db.execute("DELETE FROM ocr WHERE rowid = ?", (image_id,))
                if text:
                    db.execute("INSERT INTO ocr (rowid, text) VALUES (?, ?)", (image_id, text))
                db.execute("UPDATE images SET ocr = 1 WHERE id = ?", (image_id,))

    def missing_text(self) -> list[Record]:
        """Images text recognition has not run on yet."""
        return self._select("WHERE ocr IS NULL")

    def _select(self, where: str, params: Sequence[object] = ()) -> list[Record]:
        rows = self.db.execute(
            f"SELECT id, path, size, mtime_ns, sha256, label, row FROM images {where} ORDER BY id", params
        )
        return [Record.from_sql(row) for row in rows]

    def touch(self, updates: Iterable[tuple[str, int, int]]) -> None:
        """Record a new size/mtime for files whose content hash did not change."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE images SET size = ?, mtime_ns = ? WHERE path = ?",
                [(s, m, _to_sql(p)) for p, s, m in updates],
            )

    def remove(self, paths: Iterable[str]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM images WHERE path = ?", [(_to_sql(p),) for p in paths])

    def mark_skipped(self, entries: Iterable[tuple[str, int, int, str]]) -> None:
        """Remember bad files (path, size, mtime_ns, reason); an image that turned bad leaves the index."""
        entries = [(_to_sql(path), size, mtime_ns, reason) for path, size, mtime_ns, reason in entries]
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?)", entries)
            db.executemany("DELETE FROM images WHERE path = ?", [(e[0],) for e in entries])

    def forget_skipped(self, paths: Iterable[str]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM skipped WHERE path = ?", [(_to_sql(p),) for p in paths])

    def compact(self) -> None:
        """Rewrite vector files without freed rows when they are mostly garbage (new generation, one commit)."""
        rows = self._row_count()
        live = self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        if rows - live < max(1024, live):
            return
        meta = self.meta()
        old, new = self._generation(meta), self._generation(meta) + 1
        order = [r for (r,) in self.db.execute("SELECT row FROM images ORDER BY row")]
        with self.writing():
            for space, dim in self._spaces(meta).items():
                source = self._table(space, old, dim)
                with open(self._vector_path(space, new), "wb") as f:
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
    def version(self) -> tuple[int, int]:
        """Changes whenever the catalog does: SQLite's data_version counts other connections' commits,
        total_changes this one's rows written."""
        (other,) = self.db.execute("PRAGMA data_version").fetchone()
        return int(other), self.db.total_changes

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
            if not len(rows):
                vectors[space] = np.zeros((0, dim), dtype=np.float32)
                continue
            vectors[space] = self._table(space, self._generation(meta), dim)[row_numbers]
        paths = [_from_sql(r[1]) for r in rows]
        return Snapshot(ids=ids, rows=row_numbers, paths=paths, vectors=vectors, meta=meta)

    def lookup(self, path: str) -> Record | None:
        row = self.db.execute(
            "SELECT id, path, size, mtime_ns, sha256, label, row FROM images WHERE path = ?", (_to_sql(path),)
        ).fetchone()
        return Record.from_sql(row) if row else None

    def get(self, image_id: int) -> Record | None:
        row = self.db.execute(
            "SELECT id, path, size, mtime_ns, sha256, label, row FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        return Record.from_sql(row) if row else None

    def rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vector rows) of those of `ids` that are in the catalog, by id: a few thousand search
        candidates, where a snapshot would read every photo's row (ids go as one JSON parameter, so there
        is no limit on how many)."""
        found = self.db.execute(
            "SELECT id, row FROM images WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (json.dumps(np.asarray(ids, dtype=np.int64).tolist()),),
        ).fetchall()
        pairs = np.array(found, dtype=np.int64).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1]

    def vectors_at(self, space: str, rows: list[int] | np.ndarray) -> np.ndarray:
        """Vectors of a few rows of one space (e.g. the query image's own features)."""
        rows = np.asarray(rows, dtype=np.int64)
        meta = self.meta()
        key = (space, self._generation(meta))
        table = self._tables.get(key)
        if table is None or (len(rows) and rows.max() >= len(table)):  # new file, or rows appended since
            table = self._table(*key, self._spaces(meta)[space])
            self._tables = {key: table, **{k: v for k, v in self._tables.items() if k[0] != space}}
        return np.asarray(table[rows])  # indexing by an array copies already: no second copy

    def same_content(self, ids: list[int]) -> list[tuple[int, str, str]]:
        """(id, path, sha256) of the images `ids` and of every other image with the same content, in one
        query (byte-identical copies are shown as one search result)."""
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            "SELECT id, path, sha256 FROM images WHERE sha256 IN "
            f"(SELECT sha256 FROM images WHERE id IN ({marks}))",
            ids,
        )
        return [(image_id, _from_sql(path), sha256) for image_id, path, sha256 in rows]

    def copies(self) -> int:
        """How many images are byte-identical copies of another (images less distinct contents)."""
        return int(self.db.execute("SELECT COUNT(*) - COUNT(DISTINCT sha256) FROM images").fetchone()[0])

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    # --- photo details, filters and recognised text -------------------------------------------------
    def details_of(self, ids: list[int]) -> dict[int, dict[str, object]]:
        """DETAIL_COLUMNS of images by id (none for a schema 1 catalog: it has no details yet)."""
        if not ids or not self.has_details:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT id, {', '.join(DETAIL_COLUMNS)} FROM images WHERE id IN ({marks})", ids
        )
        return {row[0]: dict(zip(DETAIL_COLUMNS, row[1:])) for row in rows}

    def matching(
        self, filters: Filters, *, newest_first: bool | None = None, limit: int | None = None
    ) -> np.ndarray:
        """Ids of the images the filters allow (int64, ascending; or by date taken with `newest_first`
        True/False, `limit` of them). One query; a place is refined by great-circle distance."""
        order = "id" if newest_first is None else f"taken {'DESC' if newest_first else 'ASC'}, id"
        rows = self.details_matching(filters, ("id",), order)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return ids[:limit] if limit is not None else ids

    def details_matching(
        self, filters: Filters | None, columns: Sequence[str], order: str = "id"
    ) -> list[tuple]:
        """Rows of `columns` (id or DETAIL_COLUMNS) of every image the filters allow (all: None)."""
        self._need_details()
        unknown = set(columns) - {"id", *DETAIL_COLUMNS}
        if unknown:
            raise ValueError(f"not catalog columns: {sorted(unknown)}")
        where, params = _conditions(filters) if filters else (["1"], [])
        near = filters.near if filters else None
        wanted = [*columns, "lat", "lon"] if near is not None else list(columns)
        sql = f"SELECT {', '.join(wanted)} FROM images WHERE {' AND '.join(where)} ORDER BY {order}"
        rows = self.db.execute(sql, params).fetchall()
        if near is None or not rows:
            return rows
        places = np.array([r[-2:] for r in rows], dtype=np.float64)
        inside = distance_km(near, places) <= near.radius_km
        return [r[: len(columns)] for r, keep in zip(rows, inside) if keep]

    def text_of(self, image_id: int) -> str | None:
        """The text recognised in an image ('' where none was found), None where recognition never ran."""
        if not self.has_details:
            return None
        row = self.db.execute(
            "SELECT images.ocr, ocr.text FROM images LEFT JOIN ocr ON ocr.rowid = images.id WHERE images.id = ?",
            (image_id,),
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return row[1] or ""

    def text_matches(self, words: Iterable[str], allowed: np.ndarray | None = None) -> dict[int, int]:
        """{image id: how many of `words` its recognised text contains} for the images with any (among
        `allowed`). Each word is matched as a whole token, quoted: FTS5 operators are plain text here."""
        if not self.has_details:
            return {}
        counts: dict[int, int] = {}
        for word in dict.fromkeys(w for w in words if w.strip()):
            phrase = '"' + word.replace('"', '""') + '"'
            for (image_id,) in self.db.execute("SELECT rowid FROM ocr WHERE ocr MATCH ?", (phrase,)):
                counts[image_id] = counts.get(image_id, 0) + 1
        if allowed is not None:
            keep = set(np.asarray(allowed).tolist())
            counts = {i: n for i, n in counts.items() if i in keep}
        return counts


def _conditions(filters: Filters) -> tuple[list[str], list[object]]:
    """SQL conditions (to be joined by AND) and their parameters for filters; a place's is its bounding
    box, which the caller refines by distance."""
    where: list[str] = ["1"]
    params: list[object] = []
    if filters.after is not None:
        where.append("taken >= ?")
        params.append(wall_seconds(filters.after))
    if filters.before is not None:
        where.append("taken < ?")
        params.append(wall_seconds(filters.before))
    if filters.folders:
        where.append("(" + " OR ".join(["'/' || path LIKE ? ESCAPE '\\'"] * len(filters.folders)) + ")")
        params.extend(f"%/{_like(name.strip('/'))}/%" for name in filters.folders)
    if filters.cameras:
        camera = "COALESCE(camera_make, '') || ' ' || COALESCE(camera_model, '')"
        where.append("(" + " OR ".join([f"{camera} LIKE ? ESCAPE '\\'"] * len(filters.cameras)) + ")")
        params.extend(f"%{_like(name)}%" for name in filters.cameras)
    if filters.near is not None:
        box, box_params = _bounding_box(filters.near)
        where.append(box)
        params.extend(box_params)
    return where, params


def _like(text: str) -> str:
    """`text` as a literal inside a LIKE pattern (its % and _ escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _bounding_box(place: Place) -> tuple[str, list[float]]:
    """A condition on the indexed (lat, lon) columns that holds for every point within the radius (and
    a few more, which the distance then drops); the antimeridian and the poles are handled."""
    span = math.degrees(place.radius_km / EARTH_RADIUS_KM)
    south, north = place.lat - span, place.lat + span
    if south <= -90 or north >= 90:  # a pole inside: every longitude
        return "lat BETWEEN ? AND ?", [max(south, -90.0), min(north, 90.0)]
    widest = math.radians(max(abs(south), abs(north)))
    reach = math.degrees(math.asin(min(1.0, math.sin(place.radius_km / EARTH_RADIUS_KM) / math.cos(widest))))
    west, east = place.lon - reach, place.lon + reach
    if reach >= 180 or (west < -180 and east > 180):
        return "lat BETWEEN ? AND ?", [south, north]
    if west < -180:
        return "lat BETWEEN ? AND ? AND (lon >= ? OR lon <= ?)", [south, north, west + 360, east]
    if east > 180:
        return "lat BETWEEN ? AND ? AND (lon >= ? OR lon <= ?)", [south, north, west, east - 360]
    return "lat BETWEEN ? AND ? AND lon BETWEEN ? AND ?", [south, north, west, east]


def distance_km(place: Place, points: np.ndarray) -> np.ndarray:
    """Great-circle (haversine) distances from a place's centre to (n, 2) points of (lat, lon) degrees."""
    lat1, lon1 = math.radians(place.lat), math.radians(place.lon)
    lat2, lon2 = np.radians(points[:, 0]), np.radians(points[:, 1])
    a = np.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))
