"""Nearest-neighbour index over L2-normalised float32 vectors (cosine similarity, int64 ids).

``VectorIndex`` owns the vectors and the id bookkeeping; the search itself is done by a
backend behind one small private interface (``_Backend``):

* ``_ExactBackend`` - BLAS matmul + argpartition over every stored vector (small collections);
* ``_PrunedExactBackend`` - the same answers for many long vectors (image features) from a
  fraction of the reads: a principal-subspace bound rules most vectors out before scoring;
* ``_ScannBackend`` - ScaNN (k-means tree + SOAR spilling + 4-bit anisotropic hashing +
  exact re-ranking), trained once at the switch and updated in place (``upsert``,
  tombstones for removals), retrained only after 4x growth or 25% tombstones;
* ``_HnswBackend`` - hnswlib HNSW graph, used only where ScaNN is not installed (it ships
  Linux x86-64 wheels only), updated incrementally (``add_items`` with
  ``replace_deleted`` / ``mark_deleted``), never rebuilt on add/remove.

``python bench/ann.py`` (GloVe 50-d, 390k vectors): the ScaNN backend reaches recall@10 0.983
at ~11.5k single-thread q/s with an ~11 s build, where hnswlib M=16 needs ~45 s to build and
stays below 0.97 at ~4k q/s.

Which backend is used depends only on the data: above ``ann_threshold`` live vectors the
index builds the ANN backend once from what it holds, and drops back to exact search when
the collection shrinks below half the threshold.  Callers never see the switch.

The index knows nothing of files or images.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np

from .errors import CollectionError
from .paths import write_atomically

__all__ = ["DEFAULT_ANN_THRESHOLD", "VectorIndex"]

#: Live vectors above which the ANN backend takes over. Chosen for result quality within a latency
#: budget, not for the speed crossover: ``python bench/ann.py --methods threshold`` (1,280-d, one query,
#: one thread) shows ScaNN faster than exact from ~1k vectors, but the pruned exact search answers 10k
#: photo features in ~1 ms (a full scan: ~4 ms), exactly, while ANN recall on 1,280-d features is not
#: measured on real photos (random vectors: 0.74 at 10k). Below this size every answer is exact.
DEFAULT_ANN_THRESHOLD = 50_000

_FORMAT_VERSION = 1
# Exact search scores at most this many query x vector products per chunk (~128 MiB).
_EXACT_CHUNK_ELEMS = 32 * 1024 * 1024


def _grown(array: np.ndarray, length: int, fill: float) -> np.ndarray:
    """`array` extended along its first axis to `length` rows of `fill` (itself if long enough)."""
    if len(array) >= length:
        return array
    out = np.full((length, *array.shape[1:]), fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


def _finite(v: np.ndarray) -> np.ndarray:
    """`v` as a contiguous array; NaN or infinity anywhere is refused."""
    if not np.isfinite(v).all():
        raise ValueError("vectors contain NaN or infinity")
    return np.ascontiguousarray(v)


def _topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k (best first) of a (q, n) score matrix, k <= n."""
    n = scores.shape[1]
    if k < n:
        part = np.argpartition(scores, n - k, axis=1)[:, n - k :]
    else:
        part = np.broadcast_to(np.arange(n), scores.shape).copy()
    top = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(top, order, axis=1)


class _Store:
    """Slot storage shared by the backends: vectors, slot -> id, id -> slot, free slots."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self.vecs = np.zeros((capacity, dim), dtype=np.float32)
        self.slot_id = np.full(capacity, -1, dtype=np.int64)
        self.id_slot: dict[int, int] = {}
        self.free: list[int] = []
        self.high = 0  # slots [0, high) have been used at least once

    def __len__(self) -> int:
        return len(self.id_slot)

    def _grow(self, need: int) -> None:
        cap = len(self.slot_id)
        if need <= cap:
            return
        new_cap = max(need, cap * 2)
        self.vecs, self.slot_id = _grown(self.vecs, new_cap, 0), _grown(self.slot_id, new_cap, -1)

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


class _Backend(ABC):
    """Search over the slots of a ``_Store``; results are slots (-1 = nothing)."""

    name: ClassVar[str]

    def __init__(self, store: _Store) -> None:
        self.store = store

    @abstractmethod
    def add(self, slots: np.ndarray, vectors: np.ndarray, replaced: np.ndarray) -> None: ...

    @abstractmethod
    def remove(self, slots: np.ndarray) -> None: ...

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (q, dim) unit float32, 1 <= k <= len(store) -> slots (q, k) of live vectors,
        float32 scores (q, k)."""

    def describe(self) -> str:
        return ""

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to persist (slots already compacted to rows of the saved store)."""
        return {}


class _ExactBackend(_Backend):
    """Brute force: one matmul per chunk of queries, argpartition for the top k."""

    name = "exact"

    def add(self, slots, vectors, replaced) -> None:  # the store is the index
        pass

    def remove(self, slots) -> None:
        pass

    def search(self, queries, k):
        st = self.store
        vecs = st.vecs[: st.high]
        dead = st.slot_id[: st.high] < 0
        has_dead = bool(dead.any())
        q = len(queries)
        out_s = np.empty((q, k), dtype=np.int64)
        out_v = np.empty((q, k), dtype=np.float32)
        step = max(1, _EXACT_CHUNK_ELEMS // max(1, st.high))
        for a in range(0, q, step):
            scores = queries[a : a + step] @ vecs.T
            if has_dead:
                scores[:, dead] = -np.inf
            out_s[a : a + step], out_v[a : a + step] = _topk(scores, k)
        return out_s, out_v

    @classmethod
    def build(cls, store: _Store) -> _ExactBackend:
        """The exact backend that suits the store: pruned when its vectors are many and long."""
        if store.dim >= _PrunedExactBackend.MIN_DIM and len(store) >= _PrunedExactBackend.MIN_VECTORS:
            return _PrunedExactBackend(store)
        return cls(store)


class _PrunedExactBackend(_ExactBackend):
    """Exact search that reads a fraction of the vectors: a projection bound prunes the rest.

    Scanning 10,000 x 1280 floats is bound by memory bandwidth (~4 ms a query here). With an orthonormal
    basis B of the top ``DIMS`` principal directions (uncentred), every vector splits into coordinates
    c = B x and a residual of norm r = sqrt(|x|^2 - |c|^2), and by Cauchy-Schwarz
    ``q . x <= c_q . c_x + r_q r_x``. So one scan of the short coordinates bounds every score; the
    vectors with the best estimates, scored in full, give a floor (their k-th best score); only vectors
    whose bound reaches the floor are scored in full. The answer is the brute-force answer whatever the
    basis; a good basis only makes it faster: on photo features (EfficientNet-Lite0, Caltech photos)
    256 of 1280 directions leave about 4% of the vectors to score. Whether the bound prunes enough is
    checked on the data when the basis is fitted (random vectors do not prune: those are scanned plainly).
    """

    MIN_DIM = 384
    MIN_VECTORS = 4096
    DIMS = 256
    FIT_SAMPLE = 8192
    CHECK_QUERIES = 32
    REFIT_GROWTH = 4
    MAX_SCORED_FRACTION = 0.3  # above this, one full scan is cheaper than gathering the candidates
    _SLACK = np.float32(1e-3)  # float32 rounding in the bound (a residual norm is a square root)

    def __init__(self, store: _Store) -> None:
        super().__init__(store)
        self._fit()

    def _fit(self) -> None:
        """Top principal directions of a fixed sample of the vectors (uncentred: the bound needs q . x),
        every vector's coordinates and residual norm, and whether the bound prunes on this data."""
        st = self.store
        live = st.live_slots()
        sample = np.random.default_rng(0).choice(live, min(len(live), self.FIT_SAMPLE), replace=False)
        x = st.vecs[np.sort(sample)]
        _, eigvecs = np.linalg.eigh(x.T.astype(np.float64) @ x)
        self.basis = np.ascontiguousarray(eigvecs[:, ::-1][:, : min(self.DIMS, st.dim)].T, dtype=np.float32)
        self.fitted_n = len(live)
        self.coords = np.zeros((len(st.slot_id), len(self.basis)), dtype=np.float32)
        self.resid = np.zeros(len(st.slot_id), dtype=np.float32)
        self._project(live, st.vecs[live])
        probe = st.vecs[sample[: self.CHECK_QUERIES]]  # random stored vectors: unit, as queries are
        scored = [len(c) if c is not None else st.high for c in self._candidates(probe, 10)]
        self.prunes = bool(np.mean(scored) <= self.MAX_SCORED_FRACTION / 2 * st.high)

    def _project(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        capacity = len(self.store.slot_id)  # the store may have grown
        self.coords, self.resid = _grown(self.coords, capacity, 0), _grown(self.resid, capacity, 0)
        coords = vectors @ self.basis.T
        self.coords[slots] = coords
        self.resid[slots] = _residual_norms(vectors, coords)

    def add(self, slots, vectors, replaced) -> None:
        if len(self.store) > self.REFIT_GROWTH * self.fitted_n:
            self._fit()  # the store already holds the new vectors
        else:
            self._project(slots, vectors)

    def _candidates(self, queries: np.ndarray, k: int) -> Iterator[np.ndarray | None]:
        """Per query, the slots whose bound reaches the floor (None where that is too many to gather)."""
        st = self.store
        n = st.high
        q_coords = queries @ self.basis.T
        q_resid = _residual_norms(queries, q_coords)
        estimate = q_coords @ self.coords[:n].T  # (q, n): the projected part of every score
        dead = st.slot_id[:n] < 0
        if dead.any():
            estimate[:, dead] = -np.inf  # bounds of removed slots never reach a floor
        seeds = min(len(st), max(2 * k, 32))
        for query, row, r in zip(queries, estimate, q_resid):
            seed = np.argpartition(row, n - seeds)[n - seeds :]
            floor = np.partition(st.vecs[seed] @ query, seeds - k)[seeds - k]  # k real scores reach it
            candidates = np.flatnonzero(row + r * self.resid[:n] >= floor - self._SLACK)
            yield candidates if len(candidates) <= self.MAX_SCORED_FRACTION * n else None

    def search(self, queries, k):
        if not self.prunes:
            return super().search(queries, k)
        out_s = np.empty((len(queries), k), dtype=np.int64)
        out_v = np.empty((len(queries), k), dtype=np.float32)
        for i, candidates in enumerate(self._candidates(queries, k)):
            if candidates is None:
                out_s[i : i + 1], out_v[i : i + 1] = super().search(queries[i : i + 1], k)
                continue
            top, scores = _topk((self.store.vecs[candidates] @ queries[i])[None], k)
            out_s[i], out_v[i] = candidates[top[0]], scores[0]
        return out_s, out_v

    def describe(self) -> str:
        return (
            f"pruned by a {len(self.basis)}-d projection"
            if self.prunes
            else "plain (the bound did not prune)"
        )

    def state(self) -> dict[str, np.ndarray]:
        live = self.store.live_slots()
        return {
            "exact_basis": self.basis,
            "exact_meta": np.array([self.fitted_n, self.prunes], dtype=np.int64),
            "exact_coords": self.coords[live],
            "exact_resid": self.resid[live],
        }

    @classmethod
    def from_state(cls, store: _Store, arrays: dict[str, np.ndarray], **_) -> _PrunedExactBackend:
        """Restore without refitting or re-projecting (the store's slots are the saved rows)."""
        b = cls.__new__(cls)
        _Backend.__init__(b, store)
        b.basis = np.ascontiguousarray(arrays["exact_basis"], dtype=np.float32)
        b.fitted_n, prunes = (int(v) for v in arrays["exact_meta"])
        b.prunes = bool(prunes)
        n = len(store)
        if arrays["exact_coords"].shape != (n, len(b.basis)) or b.basis.shape[1] != store.dim:
            raise ValueError("projection does not match the vectors")
        capacity = len(store.slot_id)
        b.coords = _grown(arrays["exact_coords"].astype(np.float32), capacity, 0)
        b.resid = _grown(arrays["exact_resid"].astype(np.float32), capacity, 0)
        return b


def _residual_norms(vectors: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Norms of what a projection leaves out: sqrt(|x|^2 - |Bx|^2) for orthonormal B."""
    gap = np.einsum("ij,ij->i", vectors, vectors) - np.einsum("ij,ij->i", coords, coords)
    return np.sqrt(np.maximum(gap, 0, out=gap))


class _HnswBackend(_Backend):
    """hnswlib HNSW graph (inner product on unit vectors = cosine).

    Labels are never reused (hnswlib's replace_deleted may recycle the *memory* of any
    deleted element, which is only safe when a label is never added twice), so each add
    takes fresh labels and ``label_slot`` maps them back to store slots.
    """

    name = "hnsw"
    M = 24
    EF_CONSTRUCTION = 120
    EF_SEARCH = 96

    def __init__(self, store: _Store, *, ef: int | None = None, threads: int = -1) -> None:
        super().__init__(store)
        import hnswlib

        self._hnswlib = hnswlib
        self.ef = int(ef or self.EF_SEARCH)
        self.threads = threads
        self.index = None
        self.label_slot = np.zeros(0, dtype=np.int64)  # label -> slot (-1 = deleted)
        self.slot_label = np.full(len(store.slot_id), -1, dtype=np.int64)
        self.next_label = 0
        self.live = 0  # labels not marked deleted

    # -- construction -------------------------------------------------------------------
    def _new_index(self, capacity: int):
        idx = self._hnswlib.Index(space="ip", dim=self.store.dim)
        idx.init_index(
            max_elements=max(capacity, 1024),
            M=self.M,
            ef_construction=self.EF_CONSTRUCTION,
            allow_replace_deleted=True,
        )
        return idx

    @classmethod
    def build(cls, store: _Store, **kw) -> _HnswBackend:
        b = cls(store, **kw)
        live = store.live_slots()
        b.index = b._new_index(int(len(live) * 1.25))
        b.add(live, store.vecs[live], np.zeros(len(live), dtype=bool))
        return b

    def describe(self) -> str:
        return f"M={self.M} efc={self.EF_CONSTRUCTION} ef={self.ef}"

    # -- updates --------------------------------------------------------------------------
    def add(self, slots, vectors, replaced) -> None:
        if len(slots) == 0:
            return
        self.slot_label = _grown(self.slot_label, len(self.store.slot_id), -1)
        old = self.slot_label[slots[replaced]]
        self._mark_deleted(old[old >= 0])
        n = len(slots)
        labels = np.arange(self.next_label, self.next_label + n, dtype=np.int64)
        self.next_label += n
        if len(self.label_slot) < self.next_label:
            self.label_slot = _grown(self.label_slot, max(self.next_label, 2 * len(self.label_slot)), -1)
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

    def remove(self, slots) -> None:
        if len(slots) == 0:
            return
        labels = self.slot_label[slots]
        self._mark_deleted(labels[labels >= 0])
        self.slot_label[slots] = -1

    # -- search -----------------------------------------------------------------------------
    def search(self, queries, k):
        self.index.set_ef(max(self.ef, k))
        try:
            labels, dist = self.index.knn_query(queries, k=k, num_threads=self.threads)
        except RuntimeError:
            # hnswlib could not gather k live neighbours (heavily deleted graph): be exact.
            return _ExactBackend(self.store).search(queries, k)
        slots = self.label_slot[labels.astype(np.int64)]
        return slots, (1.0 - dist).astype(np.float32)

    # -- persistence --------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory() as tmp:
            f = os.path.join(tmp, "hnsw.bin")
            self.index.save_index(f)
            blob = np.fromfile(f, dtype=np.uint8)
        return {"hnsw_graph": blob, "hnsw_label_slot": self.label_slot[: self.next_label]}

    @classmethod
    def from_state(cls, store: _Store, arrays: dict[str, np.ndarray], **kw) -> _HnswBackend:
        b = cls(store, **kw)
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


class _ScannBackend(_Backend):
    """ScaNN: spherical k-means tree with SOAR spilled assignment, 4-bit anisotropic-hashing scoring,
    exact float32 re-ranking of the best ``reorder`` candidates (scores are true cosines).

    Updated incrementally: new vectors go in with ScaNN's ``upsert`` (partition tree and
    codebooks kept).  Removed or replaced vectors become tombstones (``pos_slot`` = -1,
    filtered out of results, a few extra candidates fetched) because ScaNN 1.4.2's
    ``delete`` segfaults on SOAR-spilled indexes.  Retrained from the store only when the
    collection has grown ``RETRAIN_GROWTH`` times past the size it was trained on or when
    tombstones exceed ``MAX_DEAD_FRACTION`` of ScaNN's datapoints.
    """

    name = "scann"
    POINTS_PER_LEAF = 280  # ~1400 leaves at 390k
    SEARCH_FRACTION = 0.043  # leaves searched per query (60 of 1393)
    MIN_LEAVES_TO_SEARCH = 16
    DIMS_PER_BLOCK = 2
    AVQ_THRESHOLD = 0.4  # GloVe: 0.4 vs 0.2 keeps recall ~0.983 re-ranking 130 instead of 150
    SOAR_LAMBDA = 1.0
    REORDER = 130
    TRAIN_SAMPLE = 250_000
    RETRAIN_GROWTH = 4
    MAX_DEAD_FRACTION = 0.25

    def __init__(self, store: _Store, *, ef: int | None = None, threads: int = -1) -> None:
        super().__init__(store)
        from scann.scann_ops.py import scann_ops_pybind

        self._sop = scann_ops_pybind
        self.ef = ef  # leaves to search (None = SEARCH_FRACTION of the leaves)
        self.threads = threads
        self.searcher = None
        self.trained_n = 0
        self.leaves = self.leaves_to_search = 0  # set by training
        self.dead = 0  # tombstoned ScaNN datapoints
        self.pos_slot = np.zeros(0, dtype=np.int64)  # ScaNN datapoint -> store slot
        self.slot_pos = np.full(len(store.slot_id), -1, dtype=np.int64)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def build(cls, store: _Store, **kw) -> _ScannBackend:
        b = cls(store, **kw)
        b._train()
        return b

    def _train(self) -> None:
        st = self.store
        live = st.live_slots()
        n = len(live)
        self.leaves = max(2, min(n // 8, round(n / self.POINTS_PER_LEAF)))
        self.leaves_to_search = self._leaves_to_search()
        db = np.ascontiguousarray(st.vecs[live])
        builder = (
            self._sop.builder(db, 10, "dot_product")
            .tree(
                num_leaves=self.leaves,
                num_leaves_to_search=self.leaves_to_search,
                training_sample_size=min(n, self.TRAIN_SAMPLE),
                soar_lambda=self.SOAR_LAMBDA,
                spherical=True,  # unit vectors, centroids on the sphere: GloVe recall 0.983 searching
                # 60 leaves, where the Euclidean tree needed 70 for 0.982 (bench/ann.py)
            )
            .score_ah(self.DIMS_PER_BLOCK, anisotropic_quantization_threshold=self.AVQ_THRESHOLD)
            .reorder(self.REORDER)
        )
        self.searcher = builder.build().searcher
        self.searcher.set_num_threads(1)
        self.trained_n = n
        self.dead = 0
        self.pos_slot = live.astype(np.int64)
        self.slot_pos = np.full(len(st.slot_id), -1, dtype=np.int64)
        self.slot_pos[live] = np.arange(n)

    def _leaves_to_search(self) -> int:
        if self.ef:
            return max(1, min(self.leaves, int(self.ef)))
        want = max(self.MIN_LEAVES_TO_SEARCH, round(self.leaves * self.SEARCH_FRACTION))
        return max(1, min(self.leaves, want))

    def describe(self) -> str:
        return (
            f"leaves={self.leaves} search={self.leaves_to_search} spherical AH{self.DIMS_PER_BLOCK} "
            f"soar={self.SOAR_LAMBDA} reorder={self.REORDER}"
        )

    # -- updates --------------------------------------------------------------------------
    def add(self, slots, vectors, replaced) -> None:
        if len(slots) == 0:
            return
        self.slot_pos = _grown(self.slot_pos, len(self.store.slot_id), -1)
        self._tombstone(slots[replaced])
        if len(self.store) > self.RETRAIN_GROWTH * self.trained_n or self._too_dead():
            self._train()  # the store already holds the new vectors
            return
        done = np.asarray(
            self.searcher.upsert(
                [None] * len(slots),
                np.ascontiguousarray(vectors, dtype=np.float32),
                max(1, min(len(slots), 1024)),
            ),
            dtype=np.int64,
        )
        if len(self.pos_slot) < self.searcher.size():
            self.pos_slot = _grown(self.pos_slot, max(self.searcher.size(), 2 * len(self.pos_slot)), -1)
        self.pos_slot[done] = slots
        self.slot_pos[slots] = done

    def _tombstone(self, slots: np.ndarray) -> None:
        pos = self.slot_pos[slots]
        pos = pos[pos >= 0]
        self.pos_slot[pos] = -1
        self.slot_pos[slots] = -1
        self.dead += len(pos)

    def _too_dead(self) -> bool:
        return self.dead > self.MAX_DEAD_FRACTION * max(1, self.searcher.size())

    def remove(self, slots) -> None:
        if len(slots) == 0:
            return
        self._tombstone(slots)
        if self._too_dead():
            self._train()

    # -- search -----------------------------------------------------------------------------
    def search(self, queries, k):
        if len(queries) == 1 and not self.dead:  # the common case, kept lean: ~100 us a query in all
            idx, dist = self.searcher.search(queries[0], k, max(self.REORDER, k), self.leaves_to_search)
            if len(idx) == k:
                return self.pos_slot[idx][None], dist[None]
            return _ExactBackend(self.store).search(queries, k)  # too few in the searched leaves
        size = self.searcher.size()
        fetch = min(size, k if self.dead == 0 else k + min(self.dead, k + 16))
        pre = max(self.REORDER, fetch)
        if len(queries) == 1:
            idx, dist = self.searcher.search(queries[0], fetch, pre, self.leaves_to_search)
            idx, dist = idx[None], dist[None]
        else:
            par = self.threads != 1 and len(queries) >= 64
            if par:
                self.searcher.set_num_threads(self.threads if self.threads > 0 else (os.cpu_count() or 1))
            try:
                idx, dist = self.searcher.search_batched(
                    queries, fetch, pre, self.leaves_to_search, par, 256 if par else 0
                )
            finally:
                if par:
                    self.searcher.set_num_threads(1)
        slots = self.pos_slot[idx.astype(np.int64)] if idx.size else np.zeros((len(queries), 0), np.int64)
        if self.dead:
            live = slots >= 0
            if idx.shape[1] < k or not np.all(live.sum(axis=1) >= k):
                return _ExactBackend(self.store).search(queries, k)
            order = np.argsort(~live, axis=1, kind="stable")[:, :k]  # live ones first, order kept
            slots = np.take_along_axis(slots, order, axis=1)
            dist = np.take_along_axis(dist, order, axis=1)
        elif idx.shape[1] < k:
            # Too few candidates in the searched leaves (tiny index): be exact.
            return _ExactBackend(self.store).search(queries, k)
        return slots, dist.astype(np.float32)

    # -- persistence --------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with tempfile.TemporaryDirectory() as tmp:
            self.searcher.serialize(tmp, True)
            for f in sorted(os.listdir(tmp)):
                out["scann_file_" + f] = np.fromfile(os.path.join(tmp, f), dtype=np.uint8)
        out["scann_meta"] = np.array([self.trained_n, self.leaves, self.dead], dtype=np.int64)
        out["scann_label_slot"] = self.pos_slot[: self.searcher.size()]
        return out

    @classmethod
    def from_state(cls, store: _Store, arrays: dict[str, np.ndarray], **kw) -> _ScannBackend:
        b = cls(store, **kw)
        with tempfile.TemporaryDirectory() as tmp:
            for key, arr in arrays.items():
                if key.startswith("scann_file_"):
                    name = key[len("scann_file_") :]
                    if os.path.basename(name) != name or name in ("", ".", ".."):
                        raise RuntimeError(f"bad ScaNN asset name {name!r}")
                    arr.astype(np.uint8).tofile(os.path.join(tmp, name))
            b.searcher = b._sop.load_searcher(tmp).searcher
        b.searcher.set_num_threads(1)
        b.trained_n, b.leaves, b.dead = (int(v) for v in arrays["scann_meta"])
        b.leaves_to_search = b._leaves_to_search()
        b.pos_slot = arrays["scann_label_slot"].astype(np.int64).copy()
        if len(b.pos_slot) != b.searcher.size():
            raise RuntimeError("ScaNN datapoint count does not match the id map")
        b.slot_pos = np.full(len(store.slot_id), -1, dtype=np.int64)
        alive = b.pos_slot >= 0
        b.slot_pos[b.pos_slot[alive]] = np.flatnonzero(alive)
        return b


def _ann_backend() -> type[_Backend]:
    """ScaNN where it is installed (Linux x86-64 wheels), else hnswlib."""
    try:
        import scann  # noqa: F401
    except ImportError:
        return _HnswBackend
    return _ScannBackend


_ANN_BACKEND = _ann_backend()


class VectorIndex:
    """Nearest-neighbour index over L2-normalised float32 vectors, cosine similarity, int64 ids.

    ``ann_threshold``: live vectors above which the ANN backend is used (exact search
    below it).  ``ann_ef``: ANN search breadth (ScaNN: leaves searched per query; HNSW: ef;
    higher = better recall, slower; None = the backend's tuned default).
    ``threads``: threads for batched ANN search/add (-1 = all cores).
    """

    def __init__(
        self,
        dim: int,
        *,
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        ann_ef: int | None = None,
        threads: int = -1,
    ) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        self.dim = int(dim)
        self.ann_threshold = int(ann_threshold)
        self._ann_kw = {"ef": ann_ef, "threads": threads}
        self._store = _Store(self.dim)
        self._backend: _Backend = _ExactBackend(self._store)

    # -- introspection ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._store)

    @property
    def backend(self) -> str:
        """Name of the backend in use ("exact", "scann", or "hnsw" where ScaNN is not installed)."""
        return self._backend.name

    def ids(self) -> np.ndarray:
        st = self._store
        return st.slot_id[st.live_slots()].copy()

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
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = _finite(self._rows(vectors, len(ids)))
        if len(ids) == 0:
            return
        # Last occurrence wins when an id repeats within one call.
        uniq, first_rev = np.unique(ids[::-1], return_index=True)
        if len(uniq) != len(ids):
            keep = np.sort(len(ids) - 1 - first_rev)
            ids, vectors = ids[keep], vectors[keep]
        slots, replaced = self._store.take_slots(ids)
        self._store.vecs[slots] = vectors
        if isinstance(self._backend, _ExactBackend) and len(self) > self.ann_threshold:
            self._backend = _ANN_BACKEND.build(self._store, **self._ann_kw)
        elif type(self._backend) is _ExactBackend:
            self._backend = _ExactBackend.build(self._store)  # pruned once the vectors are many and long
        else:
            self._backend.add(slots, vectors, replaced)

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        slots = self._store.release(ids)
        if len(slots) == 0:
            return
        if not isinstance(self._backend, _ExactBackend) and len(self) < self.ann_threshold // 2:
            self._backend = _ExactBackend.build(self._store)
        else:
            self._backend.remove(slots)

    # -- search -------------------------------------------------------------------------------
    def _queries(self, queries: np.ndarray) -> np.ndarray:
        """Queries as contiguous unit float32 rows; NaN or infinity is refused."""
        q = self._rows(queries)
        if len(q) == 1:  # one query: scalar arithmetic, a few microseconds of a ~100 us ANN search
            squared = float(np.dot(q[0], q[0]))
            if math.isfinite(squared):  # NaN and infinity (and float32 overflow) go the careful way
                return q * np.float32(1.0 / max(squared**0.5, 1e-12))
        q = _finite(q)
        norms = np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True)  # float64: no overflow
        return (q / np.maximum(norms, 1e-12)).astype(np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and cosine scores of the k nearest stored vectors, best first; (n, k) each for n queries.
        Where fewer than k vectors are stored, rows are padded with id -1 and score -inf."""
        q = self._queries(queries)
        k = int(k)
        if k < 0:
            raise ValueError("k must be >= 0")
        if 0 < k <= len(self) and len(q):
            slots, scores = self._backend.search(q, k)
            return self._store.slot_id[slots], scores
        nq, kk = len(q), min(k, len(self))
        ids = np.full((nq, k), -1, dtype=np.int64)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        if nq and kk:
            slots, sc = self._backend.search(q, kk)
            ids[:, :kk], scores[:, :kk] = self._store.slot_id[slots], sc
        return ids, scores

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path = Path(path)
        st = self._store
        live = st.live_slots()
        row_of_slot = np.full(len(st.slot_id), -1, dtype=np.int64)
        row_of_slot[live] = np.arange(len(live))
        arrays = {
            "format_version": np.array(_FORMAT_VERSION),
            "dim": np.array(self.dim),
            "ann_threshold": np.array(self.ann_threshold),
            "backend": np.array(self._backend.name),
            "ids": st.slot_id[live],
            "vectors": st.vecs[live],
        }
        for key, arr in self._backend.state().items():
            if key.endswith("_label_slot"):  # slots -> rows of the compacted store
                arr = np.where(arr >= 0, row_of_slot[np.maximum(arr, 0)], -1)
            arrays[key] = arr

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz" to a path
                np.savez(fh, **arrays)

        write_atomically(path, write)

    @classmethod
    def load(cls, path: Path, **kw) -> VectorIndex:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            version = int(arrays["format_version"])
            dim = int(arrays["dim"])
            ids = arrays["ids"].astype(np.int64)
            vecs = arrays["vectors"].astype(np.float32)
            backend = str(arrays["backend"])
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise CollectionError(f"index file {path} is unreadable ({e}); delete it to rebuild") from e
        if version != _FORMAT_VERSION or vecs.shape != (len(ids), dim):
            raise CollectionError(f"index file {path} has an unknown layout; delete it to rebuild")
        kw.setdefault("ann_threshold", int(arrays["ann_threshold"]))
        self = cls(dim, **kw)
        st = self._store
        st._grow(len(ids))
        st.vecs[: len(ids)] = vecs
        st.slot_id[: len(ids)] = ids
        st.id_slot = dict(zip(ids.tolist(), range(len(ids))))
        st.high = len(ids)
        if backend == _ANN_BACKEND.name and any(k.startswith(backend + "_") for k in arrays):
            restore = _ANN_BACKEND.from_state
        elif backend == _PrunedExactBackend.name and "exact_basis" in arrays:
            restore = _PrunedExactBackend.from_state
        else:
            restore = None
        if restore is not None:
            try:
                self._backend = restore(st, arrays, **self._ann_kw)
            except (RuntimeError, ValueError, KeyError) as e:
                raise CollectionError(f"index file {path} is corrupt ({e}); delete it to rebuild") from e
        elif len(self) > self.ann_threshold:
            self._backend = _ANN_BACKEND.build(st, **self._ann_kw)
        else:
            self._backend = _ExactBackend.build(st)
        return self
