"""In-process indexes: the vectors live in this process's memory, in a slot store the backends search over.

Ids map to slots (rows of one growing float32 array); removed slots are reused. The exact, pruned exact,
ScaNN and hnswlib backends all search the same kind of store, so a policy can hand one store from one
backend to another without copying it (see `auto`), and an ANN backend can answer exactly from it.

A search among allowed ids (a filter's photos) is the exact top k of that set: a set of at most
``SUBSET_SHARE`` of the index is scored directly (its vectors gathered and multiplied, cost in proportion
to the set: ~1 ms per 10,000 1,280-d vectors); a larger one is searched by the backend with the other
slots masked where the backend can mask (`filters`: exact and pruned search skip them, the bound still
pruning; hnswlib uses its own filter, approximate as HNSW is). ScaNN has no filter in its Python API, so
with ScaNN every allowed set is scored directly, whatever its size: at 500,000 allowed 1,280-d vectors,
a full scan (~0.2 s).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Self

import numpy as np

from semsearch.index.base import VectorIndex

#: Allowed-id sets up to this share of the index are scored directly rather than by a masked backend.
SUBSET_SHARE = 0.25
# Allowed vectors gathered at once when scoring a set directly (~40 MiB of 1,280-d vectors).
_SUBSET_CHUNK_ROWS = 8192


def grown(array: np.ndarray, length: int, fill: float) -> np.ndarray:
    """`array` extended along its first axis to `length` rows of `fill` (itself if long enough)."""
    if len(array) >= length:
        return array
    out = np.full((length, *array.shape[1:]), fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


def file_pages(path: str) -> np.ndarray:
    """A file's bytes, memory-mapped read-only rather than read: a library's saved state (gigabytes at a
    million vectors) goes into the index file without a private copy. The map outlives the file's name."""
    if os.path.getsize(path) == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.asarray(np.memmap(path, dtype=np.uint8, mode="r"))


class Slots:
    """Slot storage shared by the in-process backends: vectors, slot -> id, id -> slot, free slots."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self.vecs = np.zeros((capacity, dim), dtype=np.float32)
        self.slot_id = np.full(capacity, -1, dtype=np.int64)
        self.id_slot: dict[int, int] = {}
        self.free: list[int] = []
        self.high = 0  # slots [0, high) have been used at least once

    @classmethod
    def of(cls, ids: np.ndarray, vectors: np.ndarray) -> Slots:
        """A store holding `vectors` under unique `ids`, in order (slot i = row i). A writable float32
        array is adopted, not copied: a loaded index keeps reading the saved file's pages until it grows."""
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError("ids and vectors do not match")
        store = cls(vectors.shape[1], 0)
        if vectors.dtype == np.float32 and vectors.flags.c_contiguous and vectors.flags.writeable:
            store.vecs = vectors
        else:
            store.vecs = np.array(vectors, dtype=np.float32)
        store.slot_id = np.array(ids, dtype=np.int64)
        store.id_slot = dict(zip(ids.tolist(), range(len(ids))))
        if len(store.id_slot) != len(ids):
            raise ValueError("repeated ids")
        store.high = len(ids)
        return store

    def __len__(self) -> int:
        return len(self.id_slot)

    def _grow(self, need: int) -> None:
        cap = len(self.slot_id)
        if need <= cap:
            return
        new_cap = max(need, cap * 2)
        self.vecs, self.slot_id = grown(self.vecs, new_cap, 0), grown(self.slot_id, new_cap, -1)

    def take_slots(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots for ``ids``: (slots, replaced) where replaced marks ids already present."""
        slots = np.empty(len(ids), dtype=np.int64)
        replaced = np.zeros(len(ids), dtype=bool)
        fresh = 0
        for i, id_ in enumerate(ids.tolist()):
            s = self.id_slot.get(id_)
            if s is not None:
                slots[i], replaced[i] = s, True
            elif self.free:
                s = self.free.pop()
                self.id_slot[id_] = s
                slots[i] = s
            else:
                slots[i] = -1
                fresh += 1
        if fresh:
            self._grow(self.high + fresh)
            new = np.arange(self.high, self.high + fresh)
            j = 0
            for i in np.flatnonzero(slots < 0).tolist():
                slots[i] = new[j]
                self.id_slot[int(ids[i])] = int(new[j])
                j += 1
            self.high += fresh
        self.slot_id[slots] = ids
        return slots, replaced

    def release(self, ids: np.ndarray) -> np.ndarray:
        slots = [self.id_slot.pop(i) for i in ids.tolist() if i in self.id_slot]
        arr = np.asarray(slots, dtype=np.int64)
        self.slot_id[arr] = -1
        self.free.extend(slots)
        return arr

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.slot_id[: self.high] >= 0)

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(live slots, their vectors): a view, not a copy, when no slot is free (a large index is
        usually built in one go), so saving or training does not hold the vectors twice."""
        live = self.live_slots()
        return live, (self.vecs[: self.high] if len(live) == self.high else self.vecs[live])


class LocalIndex(VectorIndex):
    """An index over a `Slots` store in this process; subclasses search its slots.

    A backend built over a store that already holds vectors indexes them at once (``__init__`` with
    ``store=``): that is how a policy switches backends and how a saved index is rebuilt.
    """

    #: Whether `_search_slots` takes a `mask` of the slots it may return.
    filters: ClassVar[bool] = False

    def __init__(self, dim: int, *, store: Slots | None = None) -> None:
        super().__init__(dim)
        if store is not None and store.dim != self.dim:
            raise ValueError(f"store holds {store.dim}-d vectors, not {self.dim}-d")
        self.store = store if store is not None else Slots(self.dim)

    def __len__(self) -> int:
        return len(self.store)

    def ids(self) -> np.ndarray:
        st = self.store
        return st.slot_id[st.live_slots()].copy()

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        slots, replaced = self.store.take_slots(ids)
        self.store.vecs[slots] = vectors
        self._added(slots, vectors, replaced)

    def _remove(self, ids: np.ndarray) -> None:
        slots = self.store.release(ids)
        if len(slots):
            self._removed(slots)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        slots, scores = self._search_slots(queries, k)
        return self.store.slot_id[slots], scores

    def _search_among(
        self, queries: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        st = self.store
        lookup = st.id_slot.get
        slots = np.fromiter((lookup(i, -1) for i in allowed.tolist()), dtype=np.int64, count=len(allowed))
        slots = np.sort(slots[slots >= 0])
        k = min(k, len(slots))
        if not k:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        if len(slots) <= SUBSET_SHARE * len(self) or not self.filters:
            found, best = subset_scan(st, slots, queries, k)
        else:
            mask = np.zeros(st.high, dtype=bool)
            mask[slots] = True
            found, best = self._search_slots(queries, k, mask)
        return st.slot_id[found], best

    # -- what a backend implements --------------------------------------------------------------
    def _added(self, slots: np.ndarray, vectors: np.ndarray, replaced: np.ndarray) -> None:
        """The store already holds `vectors` at `slots` (`replaced` marks slots that held an older one)."""

    def _removed(self, slots: np.ndarray) -> None:
        """The store has released `slots`."""

    def _search_slots(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Slots (q, k) of live vectors and their float32 scores, best first; 1 <= k <= len(self). A
        backend with `filters` also takes `mask`: (high,) bool, the live slots it may return (at least k)."""
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that restore this backend without rebuilding it. Keys ending in ``_label_slot`` hold
        slots, which `save` rewrites as rows of the saved (compacted) store."""
        return {}

    # -- persistence --------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        st = self.store
        live, vectors = st.live_vectors()
        row_of_slot = np.full(len(st.slot_id), -1, dtype=np.int64)
        row_of_slot[live] = np.arange(len(live))
        arrays = {"ids": st.slot_id[live], "vectors": vectors}
        for key, arr in self.state().items():
            if key.endswith("_label_slot"):
                arr = np.where(arr >= 0, row_of_slot[np.maximum(arr, 0)], -1)
            arrays[key] = arr
        return arrays

    @classmethod
    def _from_arrays(cls, dim: int, arrays: dict[str, np.ndarray], **options: Any) -> Self:
        vectors = arrays["vectors"]
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            raise ValueError("vectors do not match the saved width")
        store = Slots.of(arrays["ids"].astype(np.int64), vectors)
        return cls._restore(store, arrays, **options)

    @classmethod
    def _restore(cls, store: Slots, arrays: dict[str, np.ndarray], **options: Any) -> Self:
        """This backend over a loaded store; by default rebuilt from the vectors (subclasses restore
        their saved state instead where they have one)."""
        return cls(store.dim, store=store, **options)


def subset_scan(
    store: Slots, slots: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k among the given live slots (k <= len(slots)), their vectors gathered chunk by chunk."""
    from semsearch.index.exact import topk

    scores = np.empty((len(queries), len(slots)), dtype=np.float32)
    for a in range(0, len(slots), _SUBSET_CHUNK_ROWS):
        scores[:, a : a + _SUBSET_CHUNK_ROWS] = queries @ store.vecs[slots[a : a + _SUBSET_CHUNK_ROWS]].T
    top, best = topk(scores, k)
    return slots[top], best
