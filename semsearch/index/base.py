"""The one interface every nearest-neighbour backend implements, and what they all share.

Callers see ``add``, ``remove``, ``search`` (optionally among allowed ids only), ``ids``, ``len``, ``save``
and ``VectorIndex.load``; the checks that must not differ between backends (shapes, NaN/infinity, repeated
ids, query normalisation, padding when k exceeds the size, the file format) live here once, and a backend
implements only ``_add``, ``_remove``, ``_search``, ``_search_among`` and its own state (``_arrays`` /
``_from_arrays``).
"""

from __future__ import annotations

import importlib.util
import io
import math
import struct
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

from semsearch.errors import CollectionError
from semsearch.paths import write_atomically
from semsearch.vectors import few_threads

FORMAT_VERSION = 1
#: Saved arrays at least this large are memory-mapped when an index is loaded, not read.
MAP_BYTES = 1 << 20
#: Where each saved array's data starts (a multiple of this many bytes into the file): a mapped array is
#: then aligned for its dtype and for SIMD loads (unaligned float32 arrays take numpy's slow paths: a
#: 100k x 1,280 scan measured 700 ms instead of 15 ms).
ALIGN = 64
#: The zip "extra field" that pads a member's local header to ALIGN (the id Android's zipalign uses).
PAD_FIELD = 0xD935
_CHUNK = 16 << 20


def finite(v: np.ndarray) -> np.ndarray:
    """`v` as a contiguous array; NaN or infinity anywhere is refused."""
    if not np.isfinite(v).all():
        raise ValueError("vectors contain NaN or infinity")
    return np.ascontiguousarray(v)


class VectorIndex(ABC):
    """Nearest neighbours of L2-normalised float32 vectors by cosine similarity, under int64 ids.

    Adding an id that is already present replaces its vector (upsert); removing an unknown id does nothing.
    """

    name: ClassVar[str]
    #: Importable modules the backend needs; without them it is unavailable (see `unavailable`).
    requires: ClassVar[tuple[str, ...]] = ()
    #: Rows a caller filling the index should hand to one `add` (None: all at once, as an in-process index
    #: keeps every vector anyway; a database backend takes them in bounded pieces).
    add_batch: ClassVar[int | None] = None

    def __init__(self, dim: int) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        self.dim = int(dim)

    @classmethod
    def unavailable(cls, **options: Any) -> str | None:
        """Why this backend cannot run here (a missing library), or None."""
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if missing:
            return f"the {cls.name} index needs {', '.join(missing)} (pip install 'semsearch[scale]')"
        return None

    # -- introspection ------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """What answers searches now (a policy names the backend it delegates to)."""
        return self.name

    def describe(self) -> str:
        """Settings worth printing beside a benchmark row."""
        return ""

    def close(self) -> None:  # noqa: B027 - a no-op by default, on purpose
        """Release outside resources (connections); in-process backends hold none."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def ids(self) -> np.ndarray:
        """The ids held, int64, in no particular order."""

    # -- updates ------------------------------------------------------------------------------
    def _rows(self, vectors: np.ndarray, n: int | None = None) -> np.ndarray:
        """float32 rows of this index's width (a single vector becomes one row)."""
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim == 1:
            v = v[None, :]
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {np.shape(vectors)}")
        if n is not None and len(v) != n:
            raise ValueError(f"{n} ids but {len(v)} vectors")
        return v

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace the vectors of `ids` (the last one wins where an id repeats)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = finite(self._rows(vectors, len(ids)))
        if len(ids) == 0:
            return
        uniq, first_rev = np.unique(ids[::-1], return_index=True)
        if len(uniq) != len(ids):
            keep = np.sort(len(ids) - 1 - first_rev)
            ids, vectors = ids[keep], vectors[keep]
        self._add(ids, vectors)

    def remove(self, ids: np.ndarray) -> None:
        """Drop `ids`; unknown ones are ignored."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        if len(ids):
            self._remove(ids)

    @abstractmethod
    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Upsert: unique int64 ids, finite float32 rows (at least one)."""

    @abstractmethod
    def _remove(self, ids: np.ndarray) -> None:
        """Delete: unique int64 ids (at least one), unknown ones ignored."""

    # -- search -------------------------------------------------------------------------------
    def _queries(self, queries: np.ndarray) -> np.ndarray:
        """Queries as contiguous unit float32 rows; NaN or infinity is refused."""
        q = self._rows(queries)
        if len(q) == 1:  # one query: scalar arithmetic, a few microseconds of a ~100 us ANN search
            squared = float(np.dot(q[0], q[0]))
            if math.isfinite(squared):  # NaN and infinity (and float32 overflow) go the careful way
                return q * np.float32(1.0 / max(squared**0.5, 1e-12))
        q = finite(q)
        norms = np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True)  # float64: no overflow
        return (q / np.maximum(norms, 1e-12)).astype(np.float32)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids and cosine scores of the k nearest stored vectors, best first; (n, k) each for n queries.
        Where fewer than k vectors are stored (or found, or allowed), rows are padded with id -1 and score
        -inf. `allowed`: search only among these ids (the photos a filter leaves; ids not held are
        ignored), inside the search itself, never by searching more and dropping results."""
        with few_threads(len(queries)):
            return self._search_checked(queries, k, allowed)

    def _search_checked(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = self._queries(queries)
        k = int(k)
        if k < 0:
            raise ValueError("k must be >= 0")
        if allowed is not None:
            allowed = np.unique(np.asarray(allowed, dtype=np.int64).reshape(-1))
            ids = np.full((len(q), k), -1, dtype=np.int64)
            scores = np.full((len(q), k), -np.inf, dtype=np.float32)
            if k and len(q) and len(allowed) and len(self):
                found, best = self._search_among(q, min(k, len(allowed), len(self)), allowed)
                ids[:, : found.shape[1]], scores[:, : found.shape[1]] = found, best
            return ids, scores
        if 0 < k <= len(self) and len(q):
            return self._search(q, k)
        nq, kk = len(q), min(k, len(self))
        ids = np.full((nq, k), -1, dtype=np.int64)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        if nq and kk:
            ids[:, :kk], scores[:, :kk] = self._search(q, kk)
        return ids, scores

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Unit float32 queries (at least one), 1 <= k <= len(self) -> ids (q, k) int64 and float32
        cosines (q, k), best first; id -1 / score -inf where the backend found fewer than k."""

    @abstractmethod
    def _search_among(
        self, queries: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like `_search`, among the `allowed` ids only (unique int64, at least one; 1 <= k): ids and
        scores (q, <= k), padded with -1 / -inf where fewer are held."""

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the index (or, for a database backend, where it lives and what it holds) atomically."""
        arrays = {
            "format_version": np.array(FORMAT_VERSION),
            "index": np.array(self.name),
            "dim": np.array(self.dim),
            **self._arrays(),
        }

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                write_arrays(fh, arrays)

        write_atomically(Path(path), write)

    @classmethod
    def load(cls, path: Path, **options: Any) -> VectorIndex:
        """The index saved at `path`, of whichever backend saved it (its name is in the file)."""
        from semsearch.index.registry import index_class

        path = Path(path)
        try:
            arrays = read_arrays(path)
            version = int(arrays["format_version"])
            dim = int(arrays["dim"])
            name = str(arrays.get("index", "auto"))  # files from before the registry: the auto policy
        except (OSError, KeyError, ValueError, struct.error, zipfile.BadZipFile, EOFError) as e:
            raise CollectionError(f"index file {path} is unreadable ({e}); delete it to rebuild") from e
        if version != FORMAT_VERSION or dim <= 0:
            raise CollectionError(f"index file {path} has an unknown layout; delete it to rebuild")
        klass = index_class(name)
        try:
            return klass._from_arrays(dim, arrays, **options)
        except (RuntimeError, ValueError, KeyError) as e:
            raise CollectionError(f"index file {path} is corrupt ({e}); delete it to rebuild") from e

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]:
        """What `save` writes besides the name and width."""

    @classmethod
    @abstractmethod
    def _from_arrays(cls, dim: int, arrays: dict[str, np.ndarray], **options: Any) -> VectorIndex:
        """The index `_arrays` described (ValueError/KeyError/RuntimeError where they do not fit)."""


def write_arrays(fh: BinaryIO, arrays: dict[str, Any]) -> None:
    """An uncompressed .npz (readable by `np.load`) whose arrays' data start ALIGN-aligned in the file."""
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            array = np.asarray(value)
            if not array.flags.c_contiguous:
                array = np.ascontiguousarray(array)
            header = io.BytesIO()
            meta = np.lib.format.header_data_from_array_1_0(array)
            try:
                np.lib.format.write_array_header_1_0(header, meta)
            except ValueError:  # a header too long for format 1.0
                np.lib.format.write_array_header_2_0(header, meta)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = header.tell() + array.nbytes
            zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT  # as zipfile itself decides
            data_at = fh.tell() + 30 + len(info.filename.encode()) + (20 if zip64 else 0) + 4 + header.tell()
            pad = -data_at % ALIGN
            info.extra = struct.pack("<HH", PAD_FIELD, pad) + bytes(pad)
            with archive.open(info, "w", force_zip64=zip64) as out:
                out.write(header.getvalue())
                data = array.reshape(-1).view(np.uint8)
                for a in range(0, len(data), _CHUNK):
                    out.write(data[a : a + _CHUNK])


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a saved index (an uncompressed .npz), the large ones memory-mapped copy-on-write: a
    reader's vectors stay in the file's pages (read when touched, shared between processes, evictable)
    instead of private memory, and changes made after loading never reach the file."""
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as fh:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            mapped = None
            if info.compress_type == zipfile.ZIP_STORED and info.file_size >= MAP_BYTES:
                mapped = _mapped_member(path, fh, info)
            if mapped is None:
                with archive.open(info) as member:
                    mapped = np.lib.format.read_array(member, allow_pickle=False)
            arrays[name] = mapped
    return arrays


def _mapped_member(path: Path, fh, info: zipfile.ZipInfo) -> np.ndarray | None:
    """A stored .npy member of the zip at `path` as a copy-on-write map (None: a layout not mapped)."""
    fh.seek(info.header_offset)
    local = fh.read(30)
    if local[:4] != b"PK\x03\x04":
        raise ValueError("a zip member's header is damaged")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    fh.seek(info.header_offset + 30 + name_length + extra_length)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        return None
    if dtype.hasobject or math.prod(shape) == 0 or fh.tell() % ALIGN:  # files saved before ALIGN: read
        return None
    order = "F" if fortran else "C"
    return np.asarray(np.memmap(path, dtype=dtype, mode="c", offset=fh.tell(), shape=shape, order=order))
