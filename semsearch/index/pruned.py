"""Exact search that reads a fraction of the vectors: a projection bound prunes the rest.

Scanning 10,000 x 1280 floats is bound by memory bandwidth (~4 ms a query here). With an orthonormal basis
B of the top ``DIMS`` principal directions (uncentred), every vector splits into coordinates c = B x and a
residual of norm r = sqrt(|x|^2 - |c|^2), and by Cauchy-Schwarz ``q . x <= c_q . c_x + r_q r_x``. So one
scan of the short coordinates bounds every score; the vectors with the best estimates, scored in full,
give a floor (their k-th best score); only vectors whose bound reaches the floor are scored in full. The
answer is the brute-force answer whatever the basis; a good basis only makes it faster: on photo features
(EfficientNet-Lite0, Caltech photos) 256 of 1280 directions leave about 4% of the vectors to score.
Whether the bound prunes enough is checked on the data when the basis is fitted (random vectors do not
prune: those are scanned plainly), and below ``fit_at`` vectors a plain scan is as fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Self

import numpy as np

from semsearch.index.exact import ExactIndex, scan, topk
from semsearch.index.local import Slots, grown


def _residual_norms(vectors: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Norms of what a projection leaves out: sqrt(|x|^2 - |Bx|^2) for orthonormal B."""
    gap = np.einsum("ij,ij->i", vectors, vectors) - np.einsum("ij,ij->i", coords, coords)
    return np.sqrt(np.maximum(gap, 0, out=gap))


class PrunedExactIndex(ExactIndex):
    """Exact answers from a bound that rules most vectors out before any full dot product."""

    name = "pruned"
    FIT_AT = 4096  # vectors before the basis is fitted (below, a plain scan is as fast)
    DIMS = 256
    FIT_SAMPLE = 8192
    CHECK_QUERIES = 32
    REFIT_GROWTH = 4
    MAX_SCORED_FRACTION = 0.3  # above this, one full scan is cheaper than gathering the candidates
    _SLACK = np.float32(1e-3)  # float32 rounding in the bound (a residual norm is a square root)

    def __init__(self, dim: int, *, store: Slots | None = None, fit_at: int | None = None) -> None:
        super().__init__(dim, store=store)
        self.fit_at = max(1, int(fit_at or self.FIT_AT))
        self.basis: np.ndarray | None = None
        self.fitted_n = 0
        self.prunes = False
        if len(self.store) >= self.fit_at:
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
        self.coords, self.resid = grown(self.coords, capacity, 0), grown(self.resid, capacity, 0)
        coords = vectors @ self.basis.T
        self.coords[slots] = coords
        self.resid[slots] = _residual_norms(vectors, coords)

    def _added(self, slots: np.ndarray, vectors: np.ndarray, replaced: np.ndarray) -> None:
        if self.basis is None:
            if len(self.store) >= self.fit_at:
                self._fit()
        elif len(self.store) > self.REFIT_GROWTH * self.fitted_n:
            self._fit()  # the store already holds the new vectors
        else:
            self._project(slots, vectors)

    def _candidates(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> Iterator[np.ndarray | None]:
        """Per query, the slots whose bound reaches the floor (None where that is too many to gather);
        with `mask`, among the slots it allows only."""
        st = self.store
        n = st.high
        q_coords = queries @ self.basis.T
        q_resid = _residual_norms(queries, q_coords)
        estimate = q_coords @ self.coords[:n].T  # (q, n): the projected part of every score
        dead = st.slot_id[:n] < 0 if mask is None else ~mask[:n]
        if dead.any():
            estimate[:, dead] = -np.inf  # bounds of removed (or masked) slots never reach a floor
        seeds = min(n - int(dead.sum()), max(2 * k, 32))
        for query, row, r in zip(queries, estimate, q_resid):
            seed = np.argpartition(row, n - seeds)[n - seeds :]
            floor = np.partition(st.vecs[seed] @ query, seeds - k)[seeds - k]  # k real scores reach it
            candidates = np.flatnonzero(row + r * self.resid[:n] >= floor - self._SLACK)
            yield candidates if len(candidates) <= self.MAX_SCORED_FRACTION * n else None

    def _search_slots(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.basis is None or not self.prunes:
            return scan(self.store, queries, k, mask)
        out_s = np.empty((len(queries), k), dtype=np.int64)
        out_v = np.empty((len(queries), k), dtype=np.float32)
        for i, candidates in enumerate(self._candidates(queries, k, mask)):
            if candidates is None:
                out_s[i : i + 1], out_v[i : i + 1] = scan(self.store, queries[i : i + 1], k, mask)
                continue
            top, scores = topk((self.store.vecs[candidates] @ queries[i])[None], k)
            out_s[i], out_v[i] = candidates[top[0]], scores[0]
        return out_s, out_v

    def describe(self) -> str:
        if self.basis is None:
            return f"plain (fewer than {self.fit_at} vectors)"
        return (
            f"pruned by a {len(self.basis)}-d projection"
            if self.prunes
            else "plain (the bound did not prune)"
        )

    def state(self) -> dict[str, np.ndarray]:
        if self.basis is None:
            return {}
        live = self.store.live_slots()
        return {
            "exact_basis": self.basis,
            "exact_meta": np.array([self.fitted_n, self.prunes], dtype=np.int64),
            "exact_coords": self.coords[live],
            "exact_resid": self.resid[live],
        }

    @classmethod
    def _restore(cls, store: Slots, arrays: dict[str, np.ndarray], **options: Any) -> Self:
        """Restored without refitting or re-projecting (the store's slots are the saved rows)."""
        if "exact_basis" not in arrays:
            return cls(store.dim, store=store, **options)
        b = cls(store.dim, store=Slots(store.dim), **options)  # empty: nothing fitted
        b.store = store
        b.basis = np.ascontiguousarray(arrays["exact_basis"], dtype=np.float32)
        b.fitted_n, prunes = (int(v) for v in arrays["exact_meta"])
        b.prunes = bool(prunes)
        if arrays["exact_coords"].shape != (len(store), len(b.basis)) or b.basis.shape[1] != store.dim:
            raise ValueError("projection does not match the vectors")
        capacity = len(store.slot_id)
        b.coords = grown(arrays["exact_coords"].astype(np.float32), capacity, 0)
        b.resid = grown(arrays["exact_resid"].astype(np.float32), capacity, 0)
        return b
