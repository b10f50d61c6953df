"""The one API that the CLI and the server both call: index a folder, then query the collection.

Data flows one way: scan files → decode → encode → store → index → query → rank. Queries that need no new
image (an indexed photo, words) never load the CNN: they read stored vectors and the saved index.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import os
import re
import stat
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semsearch.encoders.base import ImageModel
from semsearch.errors import (
    CollectionError,
    DecodeError,
    EmptyQueryError,
    ModelError,
    QueryError,
    UnknownWordError,
)
from semsearch.metadata import describe
from semsearch.paths import shown
from semsearch.store import Store
from semsearch.vectors import normalise

if TYPE_CHECKING:  # the pipeline (PIL) is imported only when a folder is indexed
    from semsearch.index import VectorIndex
    from semsearch.metadata import PhotoMetadata
    from semsearch.ocr import TextReader
    from semsearch.pipeline import Encode, FileState
    from semsearch.query import Filters, Term

#: The derived space text queries search for an image model without a text side of its own (the
#: ImageNet CNN): image vectors mapped into the word space by ConSE or a trained head.
JOINT_SPACE = "joint"
INDEX_DIR = "index"
VECTORS_KEY = "vectors"  # collection meta: where the nearest-neighbour indexes live (`use_vectors`)
DEFAULT_VECTORS = "auto"

Progress = Callable[..., None]
"""Called as progress(done, total) while indexing, and progress(0, total, PREPARING) before a first-use
model preparation (which takes about a minute, once per machine)."""
PREPARING = "preparing the model (one time, about a minute)"
READING_DETAILS = "reading photo details"
READING_TEXT = "reading text in photos"
#: Result orders: by score (best first), by date taken (oldest first), newest first.
SORTS = ("score", "date", "newest")


@dataclass(frozen=True)
class Hit:
    """One search result: results are data, formatted only at the edge. Byte-identical copies of a photo
    are one result: `path` is the copy that ranked first, `also` the others' paths."""

    rank: int
    id: int
    path: str  # opens the file, even where the name is not UTF-8; `to_dict` shows it escaped
    score: float
    also: tuple[str, ...] = ()
    details: Mapping[str, object] | None = None  # the catalog's detail columns (date taken, camera, place)

    def to_dict(self) -> dict[str, object]:
        return {
            "rank": self.rank,
            "id": self.id,
            "path": shown(self.path),
            "score": round(self.score, 6),
            "also": [shown(p) for p in self.also],
            **describe(self.details),
        }


def word_rows(pairs: list[tuple[str, float]]) -> list[dict[str, object]]:
    """Ranked (word, score) pairs as result rows, the word-side twin of `Hit.to_dict`."""
    return [{"rank": r, "word": w, "score": round(float(s), 6)} for r, (w, s) in enumerate(pairs, start=1)]


@dataclass
class IndexReport:
    """What one `index` run did. A moved file (same content under a new path) counts as `moved` only,
    neither added nor removed: it keeps its vectors."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    runtime: str = ""  # which runtime embedded this run's images, and why (empty when none was needed)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, what was ignored in its details)
    details: int = 0  # images already embedded whose details were read this run (none re-embedded)
    text_read: int = 0  # images whose text was recognised this run

    @property
    def skipped(self) -> int:
        return len(self.skipped_files)

    def to_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "moved": self.moved,
            "removed": self.removed,
            "skipped": self.skipped,
            "skipped_files": [{"path": shown(p), "reason": r} for p, r in self.skipped_files],
            "runtime": self.runtime,
            "notes": [{"path": shown(p), "note": n} for p, n in self.notes],
            "details": self.details,
            "text_read": self.text_read,
        }


@dataclass(frozen=True)
class Analysis:
    """What indexing reads from each photo's bytes besides its pixels: its details and, with a `reader`,
    its text. A class rather than a closure so that Ray can send it to its workers."""

    reader: TextReader | None = None

    def __call__(self, path: Path, data: bytes, file: FileState) -> tuple[PhotoMetadata, str | None]:
        from semsearch.metadata import extract

        return extract(data, file.mtime_ns), self.reader.read(data) if self.reader is not None else None


@dataclass(frozen=True)
class _Candidate:
    path: str
    size: int
    mtime_ns: int
    label: str | None


def file_hash(path: str) -> str:
    """Content hash, the judge of 'changed' when size or mtime moved."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def scan(folder: Path, tops: Iterable[str] | None = None) -> Iterator[_Candidate | tuple[str, str]]:
    """Every visible regular file under `folder` (recursively), labelled by its parent folder's name, and
    (path, reason) for each entry that cannot be indexed: broken links, link loops, unreadable folders.
    With `tops` (files or folders inside `folder`, as `visible_tops` gives them), only those are walked.

    The walk keeps its own stack (os.walk recurses on Python 3.11, and a deep tree raised RecursionError).
    Linked entries are looked at after every real one, each folder once: a link to a folder already walked
    (a loop, or a second link) is reported instead of walked again.
    """
    root = os.path.abspath(folder)
    walked: dict[tuple[int, int], str] = {}
    todo = sorted(tops, reverse=True) if tops is not None else [root]
    links: deque[str] = deque()
    while todo or links:
        path = todo.pop() if todo else links.popleft()
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if os.path.islink(path):
                yield path, "broken symlink (its target does not exist)"
            continue  # deleted since the listing
        except OSError as exc:
            yield path, "symlink loop" if exc.errno == errno.ELOOP else f"unreadable ({exc.strerror})"
            continue
        if stat.S_ISREG(st.st_mode):
            parent = os.path.dirname(path)
            label = os.path.basename(parent) if parent != root else None
            yield _Candidate(path, st.st_size, st.st_mtime_ns, label)
            continue
        if not stat.S_ISDIR(st.st_mode):
            yield path, "not a regular file"
            continue
        first = walked.setdefault((st.st_dev, st.st_ino), path)
        if first != path:
            yield path, f"link to a folder already scanned ({shown(first)})"
            continue
        try:
            with os.scandir(path) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            yield path, f"unreadable folder ({exc.strerror})"
            continue
        visible = [e for e in entries if not e.name.startswith(".")]
        links.extend(e.path for e in visible if e.is_symlink())
        todo.extend(reversed([e.path for e in visible if not e.is_symlink()]))


def visible_tops(folder: Path, paths: Iterable[str | Path], skip: Path | None = None) -> list[str]:
    """The changed `paths` a path-scoped sync of `folder` walks: absolute, inside `folder`, not hidden
    (no part of the name below `folder` starts with a dot, as `scan` skips those), not inside `skip`
    (the collection itself, where it lies inside the folder), and none inside another one of them."""
    root = os.path.abspath(folder)
    avoid = os.path.abspath(skip) if skip is not None else None
    wanted = set()
    for path in map(os.path.abspath, paths):
        if path == root:
            return [root]
        # Outside `folder` ('..' first) or hidden: both start with a dot.
        if any(part.startswith(".") for part in os.path.relpath(path, root).split(os.sep)):
            continue
        if avoid is not None and (path == avoid or path.startswith(avoid + os.sep)):
            continue
        wanted.add(path)
    return [p for p in wanted if not any(a in wanted for a in _ancestors(p, root))]


def _ancestors(path: str, root: str) -> Iterator[str]:
    """The folders between `path` and `root` (both excluded)."""
    parent = os.path.dirname(path)
    while parent != root and len(parent) > len(root):
        yield parent
        parent = os.path.dirname(parent)


def within(paths: Iterable[str], tops: Iterable[str]) -> list[str]:
    """The `paths` equal to one of `tops` or inside one (sorted once, then a range per top: every path
    inside `top` sorts between `top` and `top` followed by the character after the separator)."""
    ordered = sorted(paths)
    found: list[str] = []
    for top in tops:
        lo = bisect.bisect_left(ordered, top)
        hi = bisect.bisect_left(ordered, top + chr(ord(os.sep) + 1))
        found.extend(p for p in ordered[lo:hi] if p == top or p.startswith(top + os.sep))
    return found


class Collection:
    """A folder of photos made searchable: catalog, vectors and indexes under one directory."""

    def __init__(
        self, root: Path, *, writable: bool = False, model: str | None = None, text_model: str | None = None
    ) -> None:
        """Open (or with `writable`, create) the collection at `root`. `model` names the image model of
        a new collection (or must match an existing one's); `text_model` ('glove', 'minilm') chooses the
        word space queries and tags use for this session only: the joint vectors are derived from the
        stored class scores, so any text space works without indexing again."""
        from semsearch.encoders.registry import DEFAULT_MODEL

        self._text_model = text_model
        self._held: dict[object, tuple[tuple[int, int], Any]] = {}
        self.root = Path(root).expanduser().absolute()
        self.store = Store(self.root, writable=writable, create=writable)
        meta = self.store.meta()
        self.model_name = model or meta.get("image_model_name") or DEFAULT_MODEL
        stored_model = meta.get("image_model")
        if model is not None and stored_model is not None and stored_model != self.model.identity:
            raise CollectionError(
                f"collection {self.root} was made with {stored_model}, not {self.model.identity}",
                cli_hint="use the same --model or a new --db",
            )

    def close(self) -> None:
        for _, value in self._held.values():
            getattr(value, "close", lambda: None)()
        self._held.clear()
        self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self) -> tuple[int, int]:
        """The catalog's version as this collection sees it (`Store.version`): it changes when another
        process commits to it (an `index` run), so a long-lived reader (the server) knows when to reload
        what it derived from it."""
        return self.store.version()

    # --- the image model (a cheap descriptor: weights load only when a photo must be encoded) ------
    @cached_property
    def model(self) -> ImageModel:
        from semsearch.encoders.registry import load_image_model

        return load_image_model(self.model_name)

    @property
    def image_space(self) -> str:
        """The space image-to-image search uses (the model's first)."""
        return self.model.spaces[0].name

    @property
    def native_text(self) -> bool:
        """Whether texts map straight into the image space (a CLIP-family model) instead of through
        the word space and JOINT_SPACE (the ImageNet CNN)."""
        return self.model.spaces[0].text

    # --- indexing ---------------------------------------------------------------------------------
    def sync(
        self,
        folder: Path,
        *,
        paths: Iterable[str | Path] | None = None,
        progress: Progress | None = None,
        batch_size: int = 32,
        ocr: bool | None = None,
        encode: Encode | None = None,
    ) -> IndexReport:
        """Make the collection match `folder`: embed new and changed images, drop deleted ones, and read
        each photo's details (date taken, camera, place, size) from the bytes the embedding reads. With
        `ocr` (remembered by the collection; None: as before), the text in photos is recognised too.

        With `paths` (what a watcher saw change: files or folders, present or gone), only those paths and
        what lies inside them are looked at, with the same rules: a big tree is not walked again for a
        few new photos. Work is committed batch by batch, so an interrupted run keeps what it finished
        and the next run picks up the rest. Images embedded before details (or text) existed get them
        from their files without being embedded again. `encode` is how the files to embed become vectors
        (default: this process's pipeline; `semsearch.scale.raydata.RayEncode` for a Ray cluster); what
        is embedded, and how results are written, is decided here either way.
        """
        from semsearch.media import SUPPORTED_SUFFIXES
        from semsearch.pipeline import EncodedBatch, encode_paths

        if not self.store.writable:
            raise CollectionError(
                f"collection {self.root} is open for reading only: open it with writable=True to index",
                cli_hint="another process may hold it",
            )
        folder = Path(folder).expanduser().absolute()
        if not folder.is_dir():
            raise CollectionError(f"folder {folder} does not exist or is not a directory")
        self._claim_model()
        tops = [str(folder)] if paths is None else visible_tops(folder, paths, skip=self.root)
        reader = self._text_reader(ocr)
        report = IndexReport()
        records, known_bad = self.store.records(), self.store.skipped()
        seen: set[str] = set()
        to_embed: dict[str, tuple[_Candidate, str]] = {}
        touched: list[tuple[str, int, int]] = []
        for cand in scan(folder, tops):
            if isinstance(cand, tuple):
                report.skipped_files.append(cand)
                continue
            seen.add(cand.path)
            suffix = os.path.splitext(cand.path)[1].lower()
            if suffix not in SUPPORTED_SUFFIXES:
                report.skipped_files.append(
                    (cand.path, f"unsupported file type ({suffix or 'no extension'})")
                )
                continue
            old = records.get(cand.path)
            if old is not None and (old.size, old.mtime_ns) == (cand.size, cand.mtime_ns):
                report.unchanged += 1
                continue
            bad = known_bad.get(cand.path)
            if bad is not None and bad[:2] == (cand.size, cand.mtime_ns):
                report.skipped_files.append((cand.path, bad[2]))
                continue
            try:
                digest = file_hash(cand.path)
            except OSError as exc:
                report.skipped_files.append((cand.path, f"unreadable ({exc.strerror})"))
                continue
            if old is not None and old.sha256 == digest:
                touched.append((cand.path, cand.size, cand.mtime_ns))
                report.unchanged += 1
                continue
            to_embed[cand.path] = (cand, digest)
        gone = [p for p in within(records, tops) if p not in seen]
        self.store.touch(touched)
        self.store.forget_skipped(p for p in within(known_bad, tops) if p not in seen)
        self._reuse_moved(gone, to_embed, records, report)
        self.store.remove(gone)
        report.removed = len(gone) - report.moved

        done, total = 0, len(to_embed)
        if to_embed and progress and not self.model.prepared():
            progress(0, total, PREPARING)
        if progress:
            progress(0, total)
        if to_embed:
            self.model.runtime  # noqa: B018 -- prepares the model on first use on this machine
            report.runtime = self.model.describe_runtime()
            embedded = (encode or encode_paths)(
                [Path(p) for p in to_embed], self.model, batch_size, analyse=Analysis(reader)
            )
            for item in embedded:
                # Recorded: the hash, size and mtime of the bytes that were decoded (read once in the
                # pipeline), not the scan's, so a file that changed meanwhile is recorded as embedded.
                if isinstance(item, EncodedBatch):
                    first = self.store.append_vectors(item.vectors)
                    rows, details, texts = [], {}, []
                    for offset, (path, file, (meta, text)) in enumerate(
                        zip(map(str, item.paths), item.files, item.analysed)
                    ):
                        label = to_embed[path][0].label
                        rows.append((path, file.size, file.mtime_ns, file.sha256, label, first + offset))
                        details[path] = meta.columns()
                        report.notes.extend((path, note) for note in meta.notes)
                        texts.append(text)
                        if path in records:
                            report.updated += 1
                        else:
                            report.added += 1
                    ids = self.store.upsert(rows, details)
                    if reader is not None:
                        self.store.set_text(zip(ids, texts))
                        report.text_read += len(ids)
                    done += len(item.paths)
                else:
                    path = str(item.path)
                    if item.file is not None:  # remembered, so an unchanged bad file is not decoded again
                        self.store.mark_skipped([(path, item.file.size, item.file.mtime_ns, item.reason)])
                    else:  # gone or unreadable since the scan: tried again next run
                        self.store.remove([path])
                    report.skipped_files.append((path, item.reason))
                    done += 1
                if progress:
                    progress(done, total)
        self._fill_in(seen, reader, report, progress)
        self.store.compact()
        self.save_index()
        return report

    def _text_reader(self, ocr: bool | None) -> TextReader | None:
        """The OCR reader this run uses: asked for now (and remembered), or as the collection recorded."""
        from semsearch.errors import SettingError
        from semsearch.ocr import ENGINE, TextReader

        if ocr is None:
            ocr = bool(self.store.meta().get("ocr"))
        elif ocr:
            reason = TextReader.unavailable()
            if reason:
                raise SettingError(reason)
        if ocr != bool(self.store.meta().get("ocr")):
            self.store.set_meta(ocr=ENGINE if ocr else "")
        return TextReader() if ocr else None

    #: Images whose late details or text are committed together.
    FILL_BATCH = 64

    def _fill_in(
        self, seen: set[str], reader: TextReader | None, report: IndexReport, progress: Progress | None
    ) -> None:
        """Read the details (and, with `reader`, the text) of images embedded without them (by an older
        semsearch, or moved here), from their files and without embedding them again. A file whose
        content changed since it was embedded is left for the next run, which embeds it anew."""
        from semsearch.metadata import VERSION, extract
        from semsearch.pipeline import Skipped, analyse_paths

        todo: dict[str, tuple[object, bool, bool]] = {
            r.path: (r, True, False) for r in self.store.missing_details(VERSION) if r.path in seen
        }
        if reader is not None:
            for r in self.store.missing_text():
                if r.path in seen:
                    todo[r.path] = (r, r.path in todo, True)
        if not todo:
            return
        stage = READING_TEXT if reader is not None and any(t[2] for t in todo.values()) else READING_DETAILS

        def analyse(path: Path, data: bytes, file) -> tuple:
            _, details, text = todo[str(path)]
            return (
                extract(data, file.mtime_ns) if details else None,
                reader.read(data) if text and reader is not None else None,
            )

        details, texts = [], []

        def commit() -> None:
            self.store.set_details(details)
            self.store.set_text(texts)
            report.details += len(details)
            report.text_read += len(texts)
            details.clear()
            texts.clear()

        for done, item in enumerate(analyse_paths(list(todo), analyse), start=1):
            if not isinstance(item, Skipped):
                path, file, (meta, text) = item
                record = todo[str(path)][0]
                if file.sha256 == record.sha256:
                    if meta is not None:
                        details.append((record.id, meta.columns()))
                        report.notes.extend((str(path), note) for note in meta.notes)
                    if text is not None:
                        texts.append((record.id, text))
            if len(details) + len(texts) >= self.FILL_BATCH:
                commit()
            if progress:
                progress(done, len(todo), stage)
        commit()

    def _reuse_moved(
        self, gone: list[str], to_embed: dict[str, tuple[_Candidate, str]], records: dict, report: IndexReport
    ) -> None:
        """A new path whose content equals a vanished one is a move: keep its vectors, details and text,
        embed and read nothing."""
        vanished = {records[p].sha256: records[p] for p in gone}
        moves, old_ids = [], []
        for path, (cand, digest) in list(to_embed.items()):
            old = vanished.pop(digest, None)
            if old is not None and path not in records:
                moves.append((path, cand.size, cand.mtime_ns, digest, cand.label, old.row))
                old_ids.append(old.id)
                del to_embed[path]
        self.store.carry_over(zip(old_ids, self.store.upsert(moves)))
        report.moved += len(moves)

    def _claim_model(self) -> None:
        """Record which model makes this collection's vectors (first run) or refuse another one."""
        meta = self.store.meta()
        identity = self.model.identity
        if "image_model" not in meta:
            self.store.set_meta(image_model=identity, image_model_name=self.model_name)
        elif meta["image_model"] != identity:
            raise CollectionError(
                f"collection {self.root} was made with {meta['image_model']}, not {identity}"
            )

    # --- nearest-neighbour indexes (image features, joint space), saved with the collection --------
    def _index_path(self, space: str) -> Path:
        if space == JOINT_SPACE:  # one per joint mapping: switching models never mixes their vectors
            space = f"joint-{hashlib.sha256(self.joint.identity.encode()).hexdigest()[:16]}"
        return self.root / INDEX_DIR / f"{space}.idx"

    def _vectors(self, space: str, rows: np.ndarray) -> np.ndarray:
        """Vectors of catalog rows in a space; joint vectors are derived from stored ones, never the CNN."""
        if space == JOINT_SPACE:
            return self._embed_joint({s.name: self.store.vectors_at(s.name, rows) for s in self.model.spaces})
        return self.store.vectors_at(space, rows)

    @property
    def text_space(self) -> str:
        """The indexed space text queries search: the image space itself, or the derived joint space."""
        return self.image_space if self.native_text else JOINT_SPACE

    def save_index(self) -> None:
        """Bring the saved indexes up to date with the catalog (adding/removing only the difference)."""
        if not self.store.count():
            return
        for space in dict.fromkeys((self.image_space, self.text_space)):
            path = self._index_path(space)
            with self.store.writing():
                path.parent.mkdir(exist_ok=True)
                self.vector_index(space).save(path)

    def use_vectors(self, spec: str) -> None:
        """Keep the nearest-neighbour indexes where `spec` says from now on (``auto``, another backend name,
        ``milvus-lite:PATH.db`` or ``milvus://HOST:PORT[/name]``), recorded so that later runs and queries
        need no flag. A change drops the saved indexes; the next `save_index` rebuilds them from the catalog."""
        from semsearch.index import canonical_spec

        current = self.store.meta().get(VECTORS_KEY, DEFAULT_VECTORS)
        spec = canonical_spec(spec, current, connect=True)  # refused before any photo is embedded
        if spec == current:
            return
        for path in (self.root / INDEX_DIR).glob("*.idx"):
            path.unlink()  # before the new spec is recorded: a crash between leaves no mismatched file
        self.store.set_meta(**{VECTORS_KEY: spec})

    def _kept(self, key: object, build: Callable[[], Any]) -> Any:
        """`build()`, kept while the catalog is unchanged: a program that queries in a loop loads an index
        once (a saved 100k ScaNN index takes seconds to load), and a write by this or another process is
        seen at the next query. What a newer value replaces is closed if it can be."""
        version = self.store.version()
        held = self._held.get(key)
        if held is not None and held[0] == version:
            return held[1]
        value = build()
        if held is not None:
            getattr(held[1], "close", lambda: None)()
        self._held[key] = (version, value)
        return value

    def vector_index(self, space: str) -> VectorIndex:
        """The index of a space, up to date with the catalog."""
        return self._kept(("index", space), lambda: self._load_index(space))

    def _load_index(self, space: str) -> VectorIndex:
        """The saved index of a space, reconciled with the catalog (a crash may have left it behind); made
        and filled from the catalog where there is none."""
        from semsearch.index import VectorIndex, create_index, resolve_spec

        path = self._index_path(space)
        name, options = resolve_spec(self.store.meta().get(VECTORS_KEY, DEFAULT_VECTORS), path.stem)
        index = VectorIndex.load(path) if path.exists() else None
        if index is None or index.name != name:
            dim = self.joint.dim if space == JOINT_SPACE else self.store.meta().get(f"dim.{space}", 1)
            index = create_index(name, int(dim), **options)
        snap = self.store.snapshot([])  # read after the index: never older than what the index holds
        held = index.ids()
        stale = np.setdiff1d(held, snap.ids)
        if len(stale):
            index.remove(stale)
        missing = np.flatnonzero(np.isin(snap.ids, held, invert=True))
        step = index.add_batch or max(1, len(missing))
        for a in range(0, len(missing), step):
            part = missing[a : a + step]
            index.add(snap.ids[part], self._vectors(space, snap.rows[part]))
        return index

    # --- queries ----------------------------------------------------------------------------------
    def image_vectors(self, image: str | Path | bytes | int) -> tuple[dict[str, np.ndarray], int | None]:
        """({space: vector}, own id) of a query image: stored vectors if indexed, else encoded now."""
        record = None
        if isinstance(image, int):
            record = self.store.get(image) if 0 <= image < 2**63 else None  # SQLite's integer range
            if record is None:
                raise CollectionError(f"no image with id {image} in the collection")
        elif isinstance(image, (str, Path)):
            path = Path(image).expanduser().absolute()
            record = self.store.lookup(str(path))
            if record is not None:
                st = path.stat() if path.exists() else None
                if st is not None and (st.st_size, st.st_mtime_ns) != (record.size, record.mtime_ns):
                    record = None
            elif not path.exists():
                raise CollectionError(f"image {image} does not exist")
        if record is not None:
            return {
                s.name: self.store.vectors_at(s.name, [record.row])[0] for s in self.model.spaces
            }, record.id
        from semsearch.media import OWN_FILE_DECODE_BYTES, load_image

        pixels = self.model.pixels
        try:
            decoded = (  # bytes are an upload; a path is one of the user's own files
                load_image(image, pixels.size, pixels.geometry)
                if isinstance(image, bytes)
                else load_image(Path(image), pixels.size, pixels.geometry, max_bytes=OWN_FILE_DECODE_BYTES)
            )
        except DecodeError as exc:
            if isinstance(image, bytes):
                raise
            raise DecodeError(f"{shown(str(image))}: {exc}") from None
        return {name: rows[0] for name, rows in self.model.encode(decoded[None]).items()}, None

    def similar(
        self,
        image: str | Path | bytes | int,
        k: int = 10,
        focus: str | int | None = None,
        *,
        filters: Filters | None = None,
        sort: str = "score",
    ) -> list[Hit]:
        """Nearest images to a photo; with `focus` (a class or a word for a group of classes such as 'dog'),
        features are re-weighted by that class's or group's classifier weights. `filters` restrict the
        search to the photos they allow; `sort` orders the k found (SORTS)."""
        from semsearch.classes import resolve_group

        _check_sort(sort)
        k = self._clamp(k)
        group = None if focus is None else resolve_group(focus)
        if group is not None and self.model.classifier() is None:
            raise ModelError(
                f"{self.model_name} has no ImageNet classifier, so --focus cannot weight its features: "
                "focus needs an ImageNet model (lite0, lite2)"
            )
        vectors, own = self.image_vectors(image)  # a bad query is refused even by an empty collection
        features = vectors[self.image_space]
        if not k:
            return []
        allowed = self._allowed(filters)
        depth = self._depth(k + 1)
        if group is None:
            pairs = self._nearest(self.image_space, features, depth, allowed)
        else:
            pairs = self._focus_search(features, group.classes, depth, allowed)
        return _sorted(self._hits(((i, s) for i, s in pairs if i != own), k, own), sort)

    def _allowed(self, filters: Filters | None) -> np.ndarray | None:
        """Ids the filters allow (from the catalog), or None for no filters."""
        return self.store.matching(filters) if filters else None

    def _nearest(
        self, space: str, vector: np.ndarray, k: int, allowed: np.ndarray | None = None, also=()
    ) -> list[tuple[int, float]]:
        """(id, cosine) of the k nearest allowed images in a space, best first, followed by the cosines of
        the images in `also` (the ones text in photos matched) that are not among them."""
        if not k:
            return []
        index = self.vector_index(space)
        ids, scores = index.search(vector[None], k, allowed=allowed)
        pairs = [(i, s) for i, s in zip(ids[0].tolist(), scores[0].tolist(), strict=True) if i >= 0]
        more = np.setdiff1d(np.asarray(list(also), dtype=np.int64), ids[0])
        if len(more):
            ids, scores = index.search(vector[None], len(more), allowed=more)
            pairs += [(i, s) for i, s in zip(ids[0].tolist(), scores[0].tolist(), strict=True) if i >= 0]
        return pairs

    def neighbour_graph(self, progress: Progress | None = None):
        """Every photo's nearest others in the image space, from the saved index (the costly part of
        `duplicates`, independent of its threshold)."""
        from semsearch.dupes import neighbour_graph

        records = list(self.store.records().values())
        space = self.image_space
        return neighbour_graph(
            np.array([r.id for r in records], dtype=np.int64),
            [r.path for r in records],
            [r.sha256 for r in records],
            np.array([r.row for r in records], dtype=np.int64),
            lambda rows: self.store.vectors_at(space, rows),
            self.vector_index(space) if records else None,
            progress=progress,
        )

    def duplicates(self, threshold: float | None = None, progress: Progress | None = None):
        """Groups of byte-identical copies and near-duplicates (resized, re-encoded, slightly cropped or
        re-coloured, burst frames): photos whose features' cosine reaches `threshold` (default: the one
        calibrated by bench/dupes.py), largest group first."""
        from semsearch.dupes import DEFAULT_THRESHOLD, check_threshold

        threshold = check_threshold(DEFAULT_THRESHOLD if threshold is None else threshold)
        space = self.image_space
        return self.neighbour_graph(progress).groups(
            threshold, lambda rows: self.store.vectors_at(space, rows)
        )

    def _clamp(self, k: int) -> int:
        """k limited to the images there are (0 for an empty collection): a huge k allocates nothing."""
        if k < 1:
            raise EmptyQueryError("k must be at least 1")
        return min(k, self.store.count())

    def _focus_search(
        self, features: np.ndarray, classes: tuple[int, ...], k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Class-conditioned search: weight every feature by the focus's classifier weights, then cosine.

        A group ('dog': 118 classes) weights each feature by the largest weight any member class gives it.
        Measured on caltech-dev (345 photos of 12 groups' folders, each pasted beside an unrelated photo,
        focus on the group; share of the top 10 from the photo's folder): no focus 0.441, mean of the member
        weights 0.479, RMS 0.512, element-wise max 0.525, max over per-class focus scores 0.527 (one pass per
        member class), the best-scoring member class alone 0.558.
        """
        classifier = self.model.classifier()
        assert classifier is not None
        weights = classifier[0][list(classes)].max(axis=0)
        snap = self.store.snapshot([self.image_space])
        vectors, ids = snap.vectors[self.image_space], snap.ids
        if allowed is not None:  # the allowed rows only: the others are never scored
            keep = np.isin(ids, allowed)
            vectors, ids = vectors[keep], ids[keep]
        database = normalise(vectors * weights)
        scores = database @ normalise(features * weights)
        top = np.argsort(-scores)[:k]
        return [(int(ids[i]), float(scores[i])) for i in top]

    def _depth(self, k: int) -> int:
        """How many neighbours to fetch for `k` results: byte-identical copies fold into one result, so
        there may be as many more as there are copies in the collection."""
        return min(self.store.count(), k + self._copies())

    def _copies(self) -> int:
        """Byte-identical copies in the collection (a COUNT DISTINCT: ~3 ms on 10k photos, so kept)."""
        return self._kept("copies", self.store.copies)

    def _hits(self, pairs, k: int, own: int | None = None) -> list[Hit]:
        """Ranked hits for (id, score) pairs, best first, skipping ids no longer in the catalog and folding
        byte-identical files into the first one's `also` (the query image itself is never listed)."""
        pairs = list(pairs)
        same = self.store.same_content([image_id for image_id, _ in pairs])
        content = {image_id: sha256 for image_id, _, sha256 in same}
        paths: dict[str, list[tuple[int, str]]] = {}
        for image_id, path, sha256 in sorted(same, key=lambda r: r[1]):
            paths.setdefault(sha256, []).append((image_id, path))
        hits: list[Hit] = []
        for image_id, score in pairs:
            copies = paths.pop(content.get(image_id), None)  # None: gone, or folded into an earlier hit
            if copies is None:
                continue
            path = next(p for i, p in copies if i == image_id)
            also = tuple(p for i, p in copies if i not in (image_id, own))
            hits.append(Hit(rank=len(hits) + 1, id=image_id, path=path, score=float(score), also=also))
            if len(hits) == k:
                break
        details = self.store.details_of([h.id for h in hits])
        return [replace(h, details=details.get(h.id)) for h in hits]

    #: Most photo positions `facets` returns (evenly sampled beyond), so the answer stays small.
    MAX_PLACES = 5000
    #: A date histogram spanning more months than this counts years.
    MONTHS_SHOWN = 36

    def facets(self, filters: Filters | None = None) -> dict[str, object]:
        """An overview of the photos the filters allow: how many, a histogram of their dates taken (by
        month, or by year over longer spans), their positions, and their cameras with counts."""
        from semsearch.metadata import wall_time

        columns = ("id", "taken", "camera_make", "camera_model", "lat", "lon")
        rows = self.store.details_matching(filters, columns)
        taken = sorted(wall_time(r[1]) for r in rows if r[1] is not None)
        places = [
            {"id": r[0], "lat": round(r[4], 6), "lon": round(r[5], 6)} for r in rows if r[4] is not None
        ]
        step = max(1, -(-len(places) // self.MAX_PLACES))
        cameras = Counter(
            describe({"camera_make": r[2], "camera_model": r[3]})["camera"] for r in rows if r[2] or r[3]
        )
        return {
            "count": len(rows),
            "dates": _histogram(taken, self.MONTHS_SHOWN),
            "places": places[::step],
            "places_total": len(places),
            "cameras": [{"camera": name, "count": n} for name, n in cameras.most_common(100)],
        }

    def image_details(self, image_id: int) -> dict[str, object]:
        """What the catalog knows of a photo besides its path: date taken, camera, position, size, and
        the text recognised in it (None where recognition never ran)."""
        columns = self.store.details_of([image_id]).get(image_id) or {}
        return {
            **describe(columns),
            "width": columns.get("width"),
            "height": columns.get("height"),
            "text": self.store.text_of(image_id),
        }

    # --- the joint image-word space (ConSE by default, or a trained head) --------------------------
    @cached_property
    def space(self):
        """The text space queries and tags live in: GloVe words unless the collection says otherwise."""
        from semsearch.encoders.text import load_text_space

        return load_text_space(self._text_model or self.store.meta().get("text_model", "glove"))

    @cached_property
    def joint(self):
        """Maps stored image vectors into the text space: a trained head if one was set, else ConSE."""
        model = self.store.meta().get("joint_model")
        if model and self._text_model is None:
            from semsearch.encoders.head import JointHead
            from semsearch.errors import ModelError

            head = JointHead.load(Path(model))
            if head.space_identity != self.space.identity:
                raise ModelError(
                    f"joint model {model} was trained for {head.space_identity}, not {self.space.identity}"
                )
            return head
        from semsearch.encoders.joint import ConSE

        return ConSE(self.space)

    def use_joint(self, model: Path | None, text_model: str = "glove") -> None:
        """Choose the joint mapping for this collection (a trained model file, or ConSE in `text_model`)."""
        values = {"text_model": text_model, "joint_model": ""}
        if model is not None:
            from semsearch.encoders.head import JointHead

            model = Path(model).expanduser().absolute()
            head = JointHead.load(model)  # refuses a corrupt file before the collection records it
            values = {"text_model": head.space_identity, "joint_model": str(model)}
        self.store.set_meta(**values)
        self.__dict__.pop("space", None)
        self.__dict__.pop("joint", None)
        self.save_index()

    def _embed_joint(self, vectors: dict[str, np.ndarray]) -> np.ndarray:
        """Images' vectors in the space text queries search: (n, d) from {space: (n, dim)}."""
        if self.native_text:
            return vectors[self.image_space]
        if hasattr(self.joint, "embed_images"):
            return self.joint.embed_images(vectors["features"], vectors["logits"])
        return self.joint.embed(vectors["logits"])

    def _text_vector(self, text: str) -> tuple[np.ndarray, list[str]]:
        """A text's vector in the searched space, and the words that had to be left out."""
        from semsearch.encoders.joint import ConSE

        if self.native_text:
            return self.model.text_model().encode([text])[0], []
        if isinstance(self.joint, ConSE):  # it takes a class or group name ('bird') by its classes' vectors
            return self.joint.phrase(text)
        return self.space.phrase(text)

    def encode_query(self, query: str, *, allow_paths: bool = True) -> tuple[np.ndarray, list[str]]:
        """One vector in the text-searched space for a mixed query, and notes for the user (unknown words).
        Without `allow_paths` (a server), image terms can only be indexed ids: no file is ever read."""
        from semsearch.query import combine, parse_query

        notes: list[str] = []

        def embed(term) -> np.ndarray:
            if term.image_id is not None or term.image is not None:
                image = term.image_id if term.image_id is not None else term.image
                vectors, _ = self.image_vectors(image)
                return self._embed_joint({name: v[None] for name, v in vectors.items()})[0]
            vector, unknown = self._text_vector(term.text)
            notes.extend(f"not in the vocabulary: {word}" for word in unknown)
            return vector

        return combine(parse_query(query, allow_paths=allow_paths), embed), notes

    def search_vector(self, vector: np.ndarray, k: int = 10, allowed: np.ndarray | None = None) -> list[Hit]:
        """Images nearest to a joint-space vector (among the `allowed` ids)."""
        k = self._clamp(k)
        if not k:
            return []
        return self._hits(self._nearest(self.text_space, vector, self._depth(k), allowed), k)

    #: Scores under which a text search's results are no good match, per kind of score: the 10th
    #: percentile of the best real match's score on caltech-dev (each class's name, each two-object
    #: query; `python bench/phrases.py` measures them), so nine queries in ten with a real match keep
    #: it. A model with a text side of its own has no calibration here: nothing is cut.
    MIN_SCORES = {"cosine": 0.38, "concepts": 0.01, "native": 0.0, "text": 0.0}

    #: What a photo gains when text recognised in it contains the query's words: this times the share of
    #: the query's content words found. Added to a cosine or soft-AND score (both at most 1, and a
    #: confident photo of a class scores ~0.95 for its name), so a photo showing every word of the query
    #: ranks above photos that only look like it, one showing half of them gains half as much, and a
    #: photo with no recognised words keeps its score: a query no photo's text matches ranks exactly as
    #: without OCR. `python bench/ocr.py` measures the ranks this gives.
    TEXT_WEIGHT = 1.0

    def search(
        self,
        query: str,
        k: int = 10,
        notes: list[str] | None = None,
        min_score: float | None = None,
        *,
        allow_paths: bool = True,
        sort: str = "score",
    ) -> list[Hit]:
        """Text → images (words, descriptions, mixed text/image queries) in the text-searched space.

        A description (one text term) naming several concepts ranks photos by all of them at once
        (concepts.py). Filters in the query (``after:2019 in:Trips camera:canon near:48.8,2.3,5km``)
        restrict the index search to the photos they allow; filters alone list those photos by date.
        Photos whose recognised text contains the query's words are lifted (TEXT_WEIGHT). Results scoring
        under `min_score` (default: MIN_SCORES for the kind of score) are dropped; `sort` orders what is
        kept (SORTS). `notes` collects what the user should know: unknown words, concepts no photo
        shows, and that nothing matched well. Without `allow_paths` (a server), image terms can only be
        indexed ids: no file is ever read.
        """
        from semsearch.query import parse_query, split_filters

        _check_sort(sort)
        notes = [] if notes is None else notes
        text, filters = split_filters(query)
        allowed = self._allowed(filters)
        if filters and not text:
            return self._by_date(filters, k, sort)
        terms = parse_query(text, allow_paths=allow_paths)
        k = self._clamp(k)  # 0 for an empty collection: the query is still checked (an unknown id...)
        words = self._words_in_photos(terms, allowed)
        try:
            pairs, kind = self._semantic(text, terms, k, notes, allowed, words, allow_paths)
        except (UnknownWordError, EmptyQueryError) as exc:  # no vocabulary word, or digits only ("1984")
            if not words:
                raise
            notes.append(str(exc))
            pairs, kind = [(i, 0.0) for i in words], "text"
        if words:
            pairs = sorted(
                ((i, s + self.TEXT_WEIGHT * words.get(i, 0.0)) for i, s in pairs), key=lambda p: -p[1]
            )
        hits = self._hits(pairs, k)
        cut = self.MIN_SCORES[kind] if min_score is None else min_score
        kept = [h for h in hits if cut <= 0 or h.score >= cut]  # 0 keeps all (cosines may be negative)
        if hits and not kept:
            notes.append(
                f"no photo matches {shown(query)!r} well (best score {hits[0].score:.3f} is under "
                f"{cut:g}); --min-score 0 shows the nearest anyway"
            )
        return _sorted(kept, sort)

    def _semantic(
        self,
        text: str,
        terms: list[Term],
        k: int,
        notes: list[str],
        allowed: np.ndarray | None,
        also: Mapping[int, float],
        allow_paths: bool,
    ) -> tuple[list[tuple[int, float]], str]:
        """(id, score) of the k best allowed photos for the query's meaning (and the scores of the `also`
        photos), best first, and the kind of score."""
        if len(terms) == 1 and terms[0].text is not None and terms[0].weight > 0 and not self.native_text:
            found = self._describe(terms[0].text, k, notes, allowed, also)
            if found is not None:
                return found
        vector, more = self.encode_query(text, allow_paths=allow_paths)
        notes.extend(more)
        kind = "native" if self.native_text else "cosine"
        return self._nearest(self.text_space, vector, self._depth(k), allowed, also), kind

    def _words_in_photos(self, terms: list[Term], allowed: np.ndarray | None) -> dict[int, float]:
        """{id: share of the query's content words found in the photo's recognised text} (positive text
        terms; stop words left out), for the allowed photos with any."""
        from semsearch.encoders.words import stop_words

        stops = stop_words()
        words = [
            w
            for term in terms
            if term.text is not None and term.weight > 0
            for w in re.findall(r"\w+", term.text.lower())
            if w not in stops
        ]
        words = list(dict.fromkeys(words))
        if not words:
            return {}
        return {i: n / len(words) for i, n in self.store.text_matches(words, allowed).items()}

    def _by_date(self, filters: Filters, k: int, sort: str) -> list[Hit]:
        """Every photo the filters allow, newest first (oldest first for sort 'date'), k of them; score 0."""
        ids = self.store.matching(filters, newest_first=sort != "date", limit=self._clamp(k))
        return self._hits(((int(i), 0.0) for i in ids), len(ids))

    def newest(self, k: int = 10) -> list[Hit]:
        """The k photos taken last (date taken: EXIF, else the file's time), newest first; score 0."""
        from semsearch.query import Filters

        return self._by_date(Filters(), k, "newest")

    #: A description is ranked among the union of each concept's nearest photos, at least this many.
    CANDIDATES = 2000

    def _describe(
        self, text: str, k: int, notes: list[str], allowed: np.ndarray | None = None, also=()
    ) -> tuple[list[tuple[int, float]], str] | None:
        """(id, score) of the k best allowed photos for a description of several concepts (and of the
        `also` photos), best first, and the kind of their scores ("concepts", or "cosine" when one concept
        is left); None when it has fewer than two known concepts."""
        from semsearch import concepts
        from semsearch.encoders.joint import class_vectors, softmax
        from semsearch.errors import UnknownWordError

        known: dict[str, np.ndarray] = {}
        for concept in concepts.split(text):
            try:
                vector, unknown = self._text_vector(concept)
            except UnknownWordError:
                notes.append(f"not in the vocabulary: {concept}")
                continue
            notes.extend(f"not in the vocabulary: {word}" for word in unknown)
            known[concept] = vector
        if len(known) < 2:
            return None
        if not k:
            return [], "concepts"
        index = self.vector_index(self.text_space)
        depth = min(len(index), max(self.CANDIDATES, 50 * k))
        found = index.search(np.stack(list(known.values())), depth, allowed=allowed)[0].ravel()
        ids, rows = self.store.rows_of(np.union1d(found[found >= 0], np.asarray(list(also), dtype=np.int64)))
        probabilities = softmax(self.store.vectors_at("logits", rows))
        ranking = concepts.rank(list(known), list(known.values()), class_vectors(self.space), probabilities)
        notes.extend(f"no photo here shows {c!r}: left out of the search" for c in ranking.left_out)
        if ranking.scores is None:  # one concept left: rank by its cosine, as for a single word
            return self._nearest(
                self.text_space, known[ranking.used[0]], self._depth(k), allowed, also
            ), "cosine"
        order = np.argsort(-ranking.scores, kind="stable")
        extra = np.isin(ids[order], np.asarray(list(also), dtype=np.int64))
        depth = self._depth(k)
        top = np.r_[order[:depth], order[depth:][extra[depth:]]]  # the best, then the photos text matched
        return [(int(ids[i]), float(ranking.scores[i])) for i in top], "concepts"

    def tags(self, image: str | Path | bytes | int, k: int = 10) -> list[tuple[str, float]]:
        """Words that describe an image: class and group names ('German shepherd', 'dog') grounded in its
        ImageNet class probabilities (and, with a trained head, the plain words nearest its vector), or
        for a model with a text side, its own zero-shot scores over names and words."""
        from semsearch.encoders.joint import tags, top_probabilities

        vectors, _ = self.image_vectors(image)
        vector = self._embed_joint({name: v[None] for name, v in vectors.items()})
        if self.native_text:
            return tags(vector, k, space=self.model.text_model(), words=True)[0]
        head = hasattr(self.joint, "embed_images")  # a trained head's vectors land near plain words too
        probabilities = top_probabilities(vectors["logits"][None])
        return tags(vector, k, space=self.space, probabilities=probabilities, words=head)[0]

    #: CLIP's logit scale: its cosines to the class names times this are its zero-shot class logits.
    ZERO_SHOT_SCALE = 100.0

    def class_probabilities(self, vectors: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n, 1000) ImageNet class probabilities of images from their stored vectors ({space: (n, d)}),
        kept for each row's top classes as tags and ConSE keep them: the classifier's own for an ImageNet
        model, zero-shot over the class names for a model with a text side."""
        from semsearch.encoders.joint import class_vectors, top_probabilities

        if not self.native_text:
            return top_probabilities(vectors["logits"])
        names = class_vectors(self.model.text_model())
        return top_probabilities(self.ZERO_SHOT_SCALE * normalise(vectors[self.image_space]) @ names.T)

    def stats(self) -> dict[str, object]:
        meta = self.store.meta()
        text = (
            {"text_model": self.model_name}
            if self.native_text
            else {
                "text_model": meta.get("text_model", "glove"),
                "joint_model": meta.get("joint_model") or "conse",
            }
        )
        return {
            "db": str(self.root),
            "images": self.store.count(),
            "ocr": meta.get("ocr") or None,
            "model": meta.get("image_model"),
            "model_name": self.model_name,
            "spaces": [s.name for s in self.model.spaces],
            **text,
            "vectors": meta.get(VECTORS_KEY, DEFAULT_VECTORS),
            "runtime": self.model.describe_runtime(),
        }


def _histogram(taken: list[datetime], months_shown: int) -> dict[str, object]:
    """Counts of sorted dates per month (or per year over spans longer than `months_shown`), every period
    from the first to the last, each with its start and (exclusive) end as filters write them."""
    if not taken:
        return {"unit": "year", "bins": []}
    first, last = taken[0], taken[-1]
    span = (last.year - first.year) * 12 + last.month - first.month
    by_month = span < months_shown
    period = (lambda d: d.year * 12 + d.month - 1) if by_month else (lambda d: d.year * 12)
    width = 1 if by_month else 12
    counts = Counter(period(d) for d in taken)

    def label(p: int) -> str:
        return f"{p // 12:04d}-{p % 12 + 1:02d}" if by_month else f"{p // 12:04d}"

    bins = [
        {"start": label(p), "end": label(p + width), "count": counts.get(p, 0)}
        for p in range(period(first), period(last) + 1, width)
    ]
    return {"unit": "month" if by_month else "year", "bins": bins}


def _check_sort(sort: str) -> None:
    if sort not in SORTS:
        raise QueryError(f"unknown sort {sort[:20]!r}: one of {', '.join(SORTS)}")


def _sorted(hits: list[Hit], sort: str) -> list[Hit]:
    """Hits in the order asked for, ranked anew: by score as found, or by date taken (undated last)."""
    if sort == "score":
        return hits
    dated = [h for h in hits if h.details and h.details.get("taken") is not None]
    undated = [h for h in hits if h not in dated]
    dated.sort(key=lambda h: h.details["taken"], reverse=sort == "newest")  # type: ignore[index]
    return [
        Hit(rank=rank, id=h.id, path=h.path, score=h.score, details=h.details)
        for rank, h in enumerate(dated + undated, start=1)
    ]
