"""Exact search: one BLAS matmul over every stored vector, argpartition for the top k.

The answer every other backend is measured against, and the fallback of the ANN backends where they
cannot gather k live neighbours.
"""

from __future__ import annotations

import numpy as np

from semsearch.index.local import LocalIndex, Slots

# Exact search scores at most this many query x vector products per chunk (~128 MiB).
_CHUNK_ELEMS = 32 * 1024 * 1024


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k (best first) of a (q, n) score matrix, k <= n."""
    n = scores.shape[1]
    if k < n:
        part = np.argpartition(scores, n - k, axis=1)[:, n - k :]
    else:
        part = np.broadcast_to(np.arange(n), scores.shape).copy()
    top = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(top, order, axis=1)


def scan(
    store: Slots, queries: np.ndarray, k: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over every live slot of `store` (those `mask` allows): slots (q, k) and scores, best
    first."""
    vecs = store.vecs[: store.high]
    dead = store.slot_id[: store.high] < 0 if mask is None else ~mask[: store.high]
    has_dead = bool(dead.any())
    q = len(queries)
    out_s = np.empty((q, k), dtype=np.int64)
    out_v = np.empty((q, k), dtype=np.float32)
    step = max(1, _CHUNK_ELEMS // max(1, store.high))
    for a in range(0, q, step):
        scores = queries[a : a + step] @ vecs.T
        if has_dead:
            scores[:, dead] = -np.inf
        out_s[a : a + step], out_v[a : a + step] = topk(scores, k)
    return out_s, out_v


class ExactIndex(LocalIndex):
    """Brute force: the store is the index."""

    name = "exact"
    filters = True

    def _search_slots(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return scan(self.store, queries, k, mask)
