"""What a running server keeps between requests: one pool of collections and one set of caches per
version of the catalog.

Concurrency model
-----------------
* Every request borrows its own `Collection` (hence its own SQLite connection) from a pool; sqlite3
  connections are never shared between threads at the same time.
* What is expensive is loaded once and shared by the pool: the nearest-neighbour index (per catalog
  version), the image model, the word table, and any other lazily computed model attribute.
* A long-lived server notices new `index` runs: before each request it reads the catalog's version
  (`Collection.version`: SQLite's data_version, which changes when another connection commits). When it
  changed, a new *epoch* starts: a fresh pool and index cache; requests already running finish on the old
  one. Readers see the old or the new state, never a mix (SQLite WAL + append-only vector files).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np

from semsearch.collection import Collection

KEPT_ACROSS_EPOCHS = frozenset({"model"})  # cached attributes that do not depend on the catalog


class ServedCollection(Collection):
    """A `Collection` whose nearest-neighbour indexes come from the shared per-epoch cache instead of each
    pooled collection's own (`Collection._kept`, which would close an index other requests still use when
    the collection that loaded it is closed)."""

    _epoch: Epoch

    def vector_index(self, space: str):
        return self._epoch.cached(("index", space), lambda: _BatchedIndex(self._load_index(space)))

    def _copies(self) -> int:
        return self._epoch.cached("copies", self.store.copies)  # a COUNT DISTINCT: ~3 ms on 10k photos

    def neighbour_graph(self, progress=None):
        """Computed once per catalog version: grouping duplicates at any threshold then costs little."""
        return self._epoch.cached(("neighbours", self.image_space), lambda: Collection.neighbour_graph(self))


class _Pending:
    __slots__ = ("done", "error", "k", "lead", "queries", "result")

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries, self.k = queries, k
        self.done = threading.Event()
        self.result: tuple[np.ndarray, np.ndarray] | None = None
        self.error: BaseException | None = None
        self.lead = False


class _BatchedIndex:
    """A `VectorIndex` whose concurrent searches are answered together (micro-batching).

    Exact search streams every stored vector (or, pruned, every vector's projection) once per call, so
    queries arriving together share one pass and one matrix product instead of paying for one each. The
    first caller leads: it runs every query waiting at that moment in one `search`, hands each caller its
    rows, and passes the lead to a caller that arrived meanwhile. Results are those of `search` itself.
    """

    MAX_BATCH = 64

    def __init__(self, index) -> None:
        self._index = index
        self._lock = threading.Lock()
        self._waiting: list[_Pending] = []
        self._busy = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)

    def __len__(self) -> int:
        return len(self._index)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is not None:  # a filtered search is answered alone: its allowed set is its own
            return self._index.search(queries, k, allowed=allowed)
        mine = _Pending(np.atleast_2d(np.asarray(queries, dtype=np.float32)), int(k))
        with self._lock:
            self._waiting.append(mine)
            lead = not self._busy
            self._busy = True
        if not lead:
            mine.done.wait()
            lead = mine.lead
        if lead:
            self._run_batch()
        if mine.error is not None:
            raise mine.error
        assert mine.result is not None
        return mine.result

    def _run_batch(self) -> None:
        with self._lock:
            batch, self._waiting = self._waiting[: self.MAX_BATCH], self._waiting[self.MAX_BATCH :]
        try:
            k = max(p.k for p in batch)
            ids, scores = self._index.search(np.concatenate([p.queries for p in batch]), k)
            row = 0
            for p in batch:
                n = len(p.queries)
                p.result = (ids[row : row + n, : p.k], scores[row : row + n, : p.k])
                row += n
        except BaseException as exc:
            for p in batch:
                p.error = exc
        with self._lock:
            if self._waiting:
                self._waiting[0].lead = True  # the next batch is led by the oldest waiting caller
                self._waiting[0].done.set()
            else:
                self._busy = False
        for p in batch:
            p.done.set()


def _cached_names(obj: object) -> Iterator[str]:
    for klass in type(obj).__mro__:
        for name, value in vars(klass).items():
            if isinstance(value, cached_property):
                yield name


class Epoch:
    """Everything derived from one version of the catalog: a pool of collections and the caches."""

    def __init__(self, root: Path, version: tuple[int, int], shared: dict[str, Any]) -> None:
        self.root, self.version, self.shared = root, version, shared
        self._pool: queue.SimpleQueue[ServedCollection] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._building: dict[object, threading.Lock] = {}  # one per key: a slow map never holds up an index
        self._cache: dict[object, Any] = {}
        self.closed = False

    def cached(self, key: object, build: Callable[[], Any]) -> Any:
        """A value computed once per epoch (index, joint table, map); callers asking for it while it is
        being built wait for that build instead of starting their own. A build may ask for another key."""
        found = self._cache.get(key)
        if found is None:
            with self._lock:
                building = self._building.setdefault(key, threading.Lock())
            with building:
                found = self._cache.get(key)
                if found is None:
                    found = self._cache[key] = build()
        return found

    @contextmanager
    def borrow(self) -> Iterator[ServedCollection]:
        try:
            collection = self._pool.get_nowait()
        except queue.Empty:
            collection = ServedCollection(self.root)
            collection._epoch = self
        for name, value in self.shared.items():
            collection.__dict__.setdefault(name, value)
        try:
            yield collection
        finally:
            for name in _cached_names(collection):
                if name in collection.__dict__ and name not in self.shared:
                    self.shared[name] = collection.__dict__[name]
            if self.closed:
                collection.close()
            else:
                self._pool.put(collection)

    def close(self) -> None:
        self.closed = True
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return


class Served:
    """One collection served over HTTP: epochs keyed by the catalog's version (`Collection.version`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self._watch = Collection(self.root)  # read-only; fails early (CollectionError) if there is none
        self._lock = threading.Lock()
        self._shared: dict[str, Any] = {}
        self._epoch: Epoch | None = None

    def epoch(self) -> Epoch:
        with self._lock:
            version = self._watch.version()
            current = self._epoch
            if current is None or current.version != version:
                kept = {k: v for k, v in self._shared.items() if k in KEPT_ACROSS_EPOCHS}
                self._shared.clear()
                self._shared.update(kept)
                self._epoch = Epoch(self.root, version, self._shared)
                if current is not None:
                    current.close()
            return self._epoch

    @contextmanager
    def collection(self) -> Iterator[ServedCollection]:
        with self.epoch().borrow() as collection:
            yield collection

    def close(self) -> None:
        with self._lock:
            if self._epoch is not None:
                self._epoch.close()
            self._watch.close()


@cache
def word_table():
    """The GloVe word table, loaded once per process (it does not depend on the collection)."""
    from semsearch.encoders.words import load_words

    return load_words()
