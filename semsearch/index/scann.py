"""ScaNN: spherical k-means tree with SOAR spilled assignment, 4-bit anisotropic-hashing scoring, int8
re-ranking of the best ``REORDER`` candidates, then the float32 cosines of the few it keeps, from the
store (so scores are true cosines). ScaNN holds int8 codes, not a second float32 copy of the vectors:
with the store read from the saved file's pages, a loaded index holds about half the vectors' float32
size in private memory (bench/scale.py).

Updated incrementally: new vectors go in with ScaNN's ``upsert`` (partition tree and codebooks kept).
Removed or replaced vectors become tombstones (``pos_slot`` = -1, filtered out of results, a few extra
candidates fetched) because ScaNN 1.4.2's ``delete`` segfaults on SOAR-spilled indexes. Retrained from the
store only when the collection has grown ``RETRAIN_GROWTH`` times past the size it was trained on or when
tombstones exceed ``MAX_DEAD_FRACTION`` of ScaNN's datapoints. Below ``MIN_TRAIN`` vectors (too few to
train the codebooks) it answers by an exact scan of the store.

``python bench/ann.py`` (GloVe 50-d, 390k vectors): recall@10 0.983 at ~11.5k single-thread q/s with an
~11 s build, where hnswlib M=16 needs ~45 s to build and stays below 0.97 at ~4k q/s.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any, Self

import numpy as np

from semsearch.index.exact import scan
from semsearch.index.local import LocalIndex, Slots, file_pages, grown


class ScannIndex(LocalIndex):
    """ScaNN over the store's vectors (``ef``: leaves searched per query, None = ``SEARCH_FRACTION`` of
    them; ``threads``: for batched search, -1 = all cores)."""

    name = "scann"
    requires = ("scann",)
    MIN_TRAIN = 64
    POINTS_PER_LEAF = 280  # up to sqrt(n) leaves (_train): 280 a leaf up to 78k vectors, 1,000 at a million
    SEARCH_FRACTION = 0.043  # leaves searched per query (60 of 1393)
    MIN_LEAVES_TO_SEARCH = 16
    DIMS_PER_BLOCK = 2
    AVQ_THRESHOLD = 0.4  # GloVe: 0.4 vs 0.2 keeps recall ~0.983 re-ranking 130 instead of 150
    SOAR_LAMBDA = 1.0
    #: Candidates of the 4-bit scoring that the int8 re-ranking sees. Photo collections hold many near
    #: copies of a scene: at a million (bench/scale.py, ~850 copies a photo) 130 gave recall@10 0.940 and
    #: 300 0.964 at the same p50 (3.4 ms; searching twice the leaves instead changed nothing).
    REORDER = 300
    #: Candidates per wanted neighbour that the int8 re-ranking hands to the exact float32 one.
    RESCORE = 2
    #: Vectors the searcher is built (and its tree and codebooks trained) from; the rest are upserted.
    TRAIN_SAMPLE = 250_000
    UPSERT_ROWS = 65_536  # vectors gathered from the store at once for upserting (320 MiB at 1,280-d)
    RETRAIN_GROWTH = 4
    MAX_DEAD_FRACTION = 0.25

    def __init__(
        self, dim: int, *, store: Slots | None = None, ef: int | None = None, threads: int = -1
    ) -> None:
        super().__init__(dim, store=store)
        from scann.scann_ops.py import scann_builder, scann_ops_pybind

        self._sop, self._reorder_types = scann_ops_pybind, scann_builder.ReorderType
        self.ef = ef
        self.threads = threads
        self.searcher = None  # None: not trained (too few vectors), searches scan the store
        self.trained_n = 0
        self.leaves = self.leaves_to_search = 0  # set by training
        self.dead = 0  # tombstoned ScaNN datapoints
        self.pos_slot = np.zeros(0, dtype=np.int64)  # ScaNN datapoint -> store slot
        self.slot_pos = np.full(len(self.store.slot_id), -1, dtype=np.int64)
        self._train()

    # -- construction -------------------------------------------------------------------
    def _train(self) -> None:
        st = self.store
        live, db = st.live_vectors()
        n = len(live)
        self.dead = 0
        self.slot_pos = np.full(len(st.slot_id), -1, dtype=np.int64)
        if n < self.MIN_TRAIN:
            self.searcher, self.trained_n, self.pos_slot = None, 0, np.zeros(0, dtype=np.int64)
            return
        # ScaNN's build holds several float32 copies of what it is given (~4x its size beyond ours): it is
        # built from the training sample alone and given the rest by upsert (the tree and codebooks are
        # trained on the sample either way). Measured at 200k 1,280-d with a 50k sample: 1.3 GB beyond
        # the store at the peak instead of 3.1, recall@10 the same (0.996).
        first = np.arange(n)
        if n > self.TRAIN_SAMPLE:
            first = np.sort(np.random.default_rng(0).choice(n, self.TRAIN_SAMPLE, replace=False))
            db = db[first]
        # At most sqrt(n) leaves (ScaNN's own rule of thumb): serialising a searcher takes ~3.3 MB a leaf
        # at 1,280-d (measured), 11.7 GB for n/280 leaves at a million; 200k with 447 leaves instead of
        # 714 kept recall@10 (0.997) and latency (0.67 ms), searching the same share of the points.
        leaves = min(n / self.POINTS_PER_LEAF, math.sqrt(n))
        self.leaves = max(2, min(len(first) // 8, round(leaves)))
        self.leaves_to_search = self._leaves_to_search()
        builder = (
            self._sop.builder(db, 10, "dot_product")
            .tree(
                num_leaves=self.leaves,
                num_leaves_to_search=self.leaves_to_search,
                training_sample_size=len(first),
                soar_lambda=self.SOAR_LAMBDA,
                spherical=True,  # unit vectors, centroids on the sphere: GloVe recall 0.983 searching
                # 60 leaves, where the Euclidean tree needed 70 for 0.982 (bench/ann.py)
            )
            .score_ah(self.DIMS_PER_BLOCK, anisotropic_quantization_threshold=self.AVQ_THRESHOLD)
            .reorder(self.REORDER, quantize=self._reorder_types.INT8)
        )
        self.searcher = builder.build().searcher
        del builder, db  # the sample's copy, before the upserts
        self.searcher.set_num_threads(1)
        self.trained_n = n
        self.pos_slot = grown(live[first].astype(np.int64), n, -1)
        self.slot_pos[live[first]] = np.arange(len(first))
        rest = np.delete(live, first)
        for a in range(0, len(rest), self.UPSERT_ROWS):
            slots = rest[a : a + self.UPSERT_ROWS]
            self._upsert(slots, st.vecs[slots])

    def _leaves_to_search(self) -> int:
        if self.ef:
            return max(1, min(self.leaves, int(self.ef)))
        want = max(self.MIN_LEAVES_TO_SEARCH, round(self.leaves * self.SEARCH_FRACTION))
        return max(1, min(self.leaves, want))

    def describe(self) -> str:
        if self.searcher is None:
            return f"untrained (fewer than {self.MIN_TRAIN} vectors: exact scan)"
        return (
            f"leaves={self.leaves} search={self.leaves_to_search} spherical AH{self.DIMS_PER_BLOCK} "
            f"soar={self.SOAR_LAMBDA} reorder={self.REORDER} int8, float32 rescore of {self.RESCORE}k"
        )

    # -- updates --------------------------------------------------------------------------
    def _added(self, slots: np.ndarray, vectors: np.ndarray, replaced: np.ndarray) -> None:
        self.slot_pos = grown(self.slot_pos, len(self.store.slot_id), -1)
        self._tombstone(slots[replaced])
        if (
            self.searcher is None
            or len(self.store) > self.RETRAIN_GROWTH * self.trained_n
            or self._too_dead()
        ):
            self._train()  # the store already holds the new vectors
            return
        self._upsert(slots, vectors)

    def _upsert(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        """Give the trained searcher new vectors (tree and codebooks kept) and map them to `slots`."""
        done = np.asarray(
            self.searcher.upsert(
                [None] * len(slots),
                np.ascontiguousarray(vectors, dtype=np.float32),
                max(1, min(len(slots), 1024)),
            ),
            dtype=np.int64,
        )
        if len(self.pos_slot) < self.searcher.size():
            self.pos_slot = grown(self.pos_slot, max(self.searcher.size(), 2 * len(self.pos_slot)), -1)
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

    def _removed(self, slots: np.ndarray) -> None:
        if self.searcher is None:
            return
        self._tombstone(slots)
        if self._too_dead():
            self._train()

    # -- search -----------------------------------------------------------------------------
    def _search_slots(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.searcher is None:
            return scan(self.store, queries, k)
        want = min(self.searcher.size(), self.RESCORE * k)  # the int8 order, then the exact one of these
        if len(queries) == 1 and not self.dead:  # the common case, kept lean: ~100 us a query in all
            idx, _ = self.searcher.search(queries[0], want, max(self.REORDER, want), self.leaves_to_search)
            if len(idx) < k:
                return scan(self.store, queries, k)  # too few in the searched leaves
            return self._rescored(queries, self.pos_slot[idx][None], k)
        size = self.searcher.size()
        fetch = min(size, want if self.dead == 0 else want + min(self.dead, k + 16))
        pre = max(self.REORDER, fetch)
        if len(queries) == 1:
            idx, _ = self.searcher.search(queries[0], fetch, pre, self.leaves_to_search)
            idx = idx[None]
        else:
            par = self.threads != 1 and len(queries) >= 64
            if par:
                self.searcher.set_num_threads(self.threads if self.threads > 0 else (os.cpu_count() or 1))
            try:
                idx, _ = self.searcher.search_batched(
                    queries, fetch, pre, self.leaves_to_search, par, 256 if par else 0
                )
            finally:
                if par:
                    self.searcher.set_num_threads(1)
        if idx.shape[1] < k:
            return scan(self.store, queries, k)  # too few candidates in the searched leaves (tiny index)
        slots = self.pos_slot[idx.astype(np.int64)]
        if self.dead:
            live = slots >= 0
            if not np.all(live.sum(axis=1) >= k):
                return scan(self.store, queries, k)
            order = np.argsort(~live, axis=1, kind="stable")[:, : min(want, idx.shape[1])]  # live first
            slots = np.take_along_axis(slots, order, axis=1)
            slots = np.where(slots >= 0, slots, slots[:, :1])  # any dead left in the tail: a live repeat
        return self._rescored(queries, slots, k)

    def _rescored(self, queries: np.ndarray, slots: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best of the candidate `slots` by their float32 cosines, read from the store."""
        scores = np.einsum("qd,qcd->qc", queries, self.store.vecs[slots])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(slots, order, axis=1), np.take_along_axis(scores, order, axis=1)

    # -- persistence --------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        if self.searcher is None:
            return {}
        out: dict[str, np.ndarray] = {}
        with tempfile.TemporaryDirectory() as tmp:
            self.searcher.serialize(tmp, True)
            for f in sorted(os.listdir(tmp)):
                out["scann_file_" + f] = file_pages(os.path.join(tmp, f))
        out["scann_meta"] = np.array([self.trained_n, self.leaves, self.dead], dtype=np.int64)
        out["scann_label_slot"] = self.pos_slot[: self.searcher.size()]
        return out

    @classmethod
    def _restore(cls, store: Slots, arrays: dict[str, np.ndarray], **options: Any) -> Self:
        if "scann_meta" not in arrays:
            return cls(store.dim, store=store, **options)
        b = cls(store.dim, **options)  # empty (untrained), then given the saved searcher and the store
        b.store = store
        with tempfile.TemporaryDirectory() as tmp:
            for key, arr in arrays.items():
                if key.startswith("scann_file_"):
                    name = key[len("scann_file_") :]
                    if os.path.basename(name) != name or name in ("", ".", ".."):
                        raise RuntimeError(f"bad ScaNN asset name {name!r}")
                    np.asarray(arr, dtype=np.uint8).tofile(os.path.join(tmp, name))
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
