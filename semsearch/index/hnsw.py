"""hnswlib HNSW graph: inner product on unit vectors (= cosine), updated in place, never rebuilt.

Labels are never reused (hnswlib's ``replace_deleted`` may recycle the *memory* of any deleted element,
which is only safe when a label is never added twice), so each add takes fresh labels and ``label_slot``
maps them back to store slots; removals are ``mark_deleted``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Self

import numpy as np

from semsearch.index.exact import scan
from semsearch.index.local import LocalIndex, Slots, file_pages, grown


class HnswIndex(LocalIndex):
    """An HNSW graph over the store's vectors (``ef``: search breadth; ``threads``: -1 = all cores)."""

    name = "hnsw"
    filters = True
    requires = ("hnswlib",)
    M = 24
    EF_CONSTRUCTION = 120
    EF_SEARCH = 96

    def __init__(
        self, dim: int, *, store: Slots | None = None, ef: int | None = None, threads: int = -1
    ) -> None:
        super().__init__(dim, store=store)
        import hnswlib

        self._hnswlib = hnswlib
        self.ef = int(ef or self.EF_SEARCH)
        self.threads = threads
        self.label_slot = np.zeros(0, dtype=np.int64)  # label -> slot (-1 = deleted)
        self.slot_label = np.full(len(self.store.slot_id), -1, dtype=np.int64)
        self.next_label = 0
        self.live = 0  # labels not marked deleted
        live = self.store.live_slots()
        self.index = self._new_index(int(len(live) * 1.25))
        if len(live):
            self._added(live, self.store.vecs[live], np.zeros(len(live), dtype=bool))

    def _new_index(self, capacity: int):
        idx = self._hnswlib.Index(space="ip", dim=self.dim)
        idx.init_index(
            max_elements=max(capacity, 1024),
            M=self.M,
            ef_construction=self.EF_CONSTRUCTION,
            allow_replace_deleted=True,
        )
        return idx

    def describe(self) -> str:
        return f"M={self.M} efc={self.EF_CONSTRUCTION} ef={self.ef}"

    # -- updates --------------------------------------------------------------------------
    def _added(self, slots: np.ndarray, vectors: np.ndarray, replaced: np.ndarray) -> None:
        self.slot_label = grown(self.slot_label, len(self.store.slot_id), -1)
        old = self.slot_label[slots[replaced]]
        self._mark_deleted(old[old >= 0])
        n = len(slots)
        labels = np.arange(self.next_label, self.next_label + n, dtype=np.int64)
        self.next_label += n
        if len(self.label_slot) < self.next_label:
            self.label_slot = grown(self.label_slot, max(self.next_label, 2 * len(self.label_slot)), -1)
        self.label_slot[labels] = slots
        self.slot_label[slots] = labels
        idx = self.index
        # Capacity: deleted elements are recycled first, so only growth beyond them counts.
        held_deleted = idx.get_current_count() - self.live
        need = idx.get_current_count() + max(0, n - held_deleted)
        if need > idx.get_max_elements():
            idx.resize_index(max(need, int(idx.get_max_elements() * 1.5)))
        self.live += n
        idx.add_items(vectors, labels, num_threads=self.threads, replace_deleted=True)

    def _mark_deleted(self, labels: np.ndarray) -> None:
        for lab in labels.tolist():
            self.index.mark_deleted(lab)
        self.label_slot[labels] = -1
        self.live -= len(labels)

    def _removed(self, slots: np.ndarray) -> None:
        labels = self.slot_label[slots]
        self._mark_deleted(labels[labels >= 0])
        self.slot_label[slots] = -1

    # -- search -----------------------------------------------------------------------------
    def _search_slots(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        self.index.set_ef(max(self.ef, k))
        options: dict[str, Any] = {"num_threads": self.threads}
        if mask is not None:  # hnswlib's filter calls back into Python: one thread, or it waits on the GIL
            label_slot = self.label_slot
            options = {
                "num_threads": 1,
                "filter": lambda label: label_slot[label] >= 0 and mask[label_slot[label]],
            }
        try:
            labels, dist = self.index.knn_query(queries, k=k, **options)
        except RuntimeError:
            # hnswlib could not gather k live (allowed) neighbours (heavily deleted graph): be exact.
            return scan(self.store, queries, k, mask)
        slots = self.label_slot[labels.astype(np.int64)]
        return slots, (1.0 - dist).astype(np.float32)

    # -- persistence --------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory() as tmp:
            f = os.path.join(tmp, "hnsw.bin")
            self.index.save_index(f)
            blob = file_pages(f)
        return {"hnsw_graph": blob, "hnsw_label_slot": self.label_slot[: self.next_label]}

    @classmethod
    def _restore(cls, store: Slots, arrays: dict[str, np.ndarray], **options: Any) -> Self:
        if "hnsw_graph" not in arrays:
            return cls(store.dim, store=store, **options)
        b = cls(store.dim, **options)  # empty, then given the saved graph and the loaded store
        b.store = store
        with tempfile.TemporaryDirectory() as tmp:
            f = os.path.join(tmp, "hnsw.bin")
            arrays["hnsw_graph"].tofile(f)
            b.index = b._hnswlib.Index(space="ip", dim=store.dim)
            b.index.load_index(f, allow_replace_deleted=True)
        b.label_slot = arrays["hnsw_label_slot"].astype(np.int64).copy()
        b.next_label = len(b.label_slot)
        b.slot_label = np.full(len(store.slot_id), -1, dtype=np.int64)
        live = b.label_slot >= 0
        b.slot_label[b.label_slot[live]] = np.flatnonzero(live)
        b.live = int(live.sum())
        return b
