"""The "auto" policy: exact answers while the collection is small, an ANN backend once it is large.

Below ``ann_threshold`` live vectors every answer is exact (the pruned exact search for long vectors such
as image features); above it the policy builds the ANN backend once from the vectors it holds (ScaNN, or
hnswlib where ScaNN is not installed: it ships Linux x86-64 wheels only) and drops back to exact search
when the collection shrinks below half the threshold. The stages share one store, so a switch copies no
vector, and callers never see it. Which ANN backend is used is decided when the policy is made and saved
with it, never by what happens to be importable when a saved index is read.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from semsearch.index.exact import ExactIndex
from semsearch.index.local import LocalIndex, Slots
from semsearch.index.pruned import PrunedExactIndex

#: Live vectors above which the ANN backend takes over. Chosen for result quality within a latency
#: budget, not for the speed crossover: ``python bench/ann.py --methods threshold`` (1,280-d, one query,
#: one thread) shows ScaNN faster than exact from ~1k vectors, but the pruned exact search answers 10k
#: photo features in ~1 ms (a full scan: ~4 ms), exactly, while ANN recall on 1,280-d features is lower
#: (bench/scale.py). Below this size every answer is exact.
DEFAULT_ANN_THRESHOLD = 50_000
#: Vectors at least this long are searched by the pruned exact search (shorter ones: a plain scan).
PRUNE_MIN_DIM = 384


def default_ann() -> str:
    """ScaNN where it is installed, else hnswlib."""
    from semsearch.index.scann import ScannIndex

    return "hnsw" if ScannIndex.unavailable() else "scann"


class AutoIndex(LocalIndex):
    """Exact below ``ann_threshold`` live vectors, the ``ann`` backend above it (``ann_ef``: its search
    breadth; ``threads``: its threads for batched work, -1 = all cores)."""

    name = "auto"

    def __init__(
        self,
        dim: int,
        *,
        store: Slots | None = None,
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        ann: str | None = None,
        ann_ef: int | None = None,
        threads: int = -1,
    ) -> None:
        super().__init__(dim, store=store)
        self.ann_threshold = int(ann_threshold)
        self.ann = ann or default_ann()
        self._ann_options = {"ef": ann_ef, "threads": threads}
        self.stage: LocalIndex = self._ann_stage() if len(self) > self.ann_threshold else self._exact_stage()

    def _exact_stage(self) -> LocalIndex:
        exact = PrunedExactIndex if self.dim >= PRUNE_MIN_DIM else ExactIndex
        return exact(self.dim, store=self.store)

    def _ann_class(self) -> type[LocalIndex]:
        from semsearch.index.registry import index_class

        return index_class(self.ann)

    def _ann_stage(self) -> LocalIndex:
        return self._ann_class()(self.dim, store=self.store, **self._ann_options)

    @property
    def backend(self) -> str:
        return self.stage.name

    def describe(self) -> str:
        return self.stage.describe()

    def _added(self, slots: np.ndarray, vectors: np.ndarray, replaced: np.ndarray) -> None:
        if isinstance(self.stage, ExactIndex) and len(self) > self.ann_threshold:
            self.stage = self._ann_stage()
        else:
            self.stage._added(slots, vectors, replaced)

    def _removed(self, slots: np.ndarray) -> None:
        if not isinstance(self.stage, ExactIndex) and len(self) < self.ann_threshold // 2:
            self.stage = self._exact_stage()
        else:
            self.stage._removed(slots)

    @property
    def filters(self) -> bool:  # type: ignore[override]
        return self.stage.filters

    def _search_slots(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if mask is None:
            return self.stage._search_slots(queries, k)
        return self.stage._search_slots(queries, k, mask)

    def state(self) -> dict[str, np.ndarray]:
        return {
            "ann_threshold": np.array(self.ann_threshold),
            "ann": np.array(self.ann),
            "backend": np.array(self.stage.name),
            **self.stage.state(),
        }

    @classmethod
    def _restore(cls, store: Slots, arrays: dict[str, np.ndarray], **options: Any) -> Self:
        options.setdefault("ann_threshold", int(arrays["ann_threshold"]))
        stage = str(arrays["backend"])
        if "ann" in arrays:
            options.setdefault("ann", str(arrays["ann"]))
        elif stage not in (ExactIndex.name, PrunedExactIndex.name):
            options.setdefault("ann", stage)  # files from before the registry: the stage was the ANN
        policy = cls(store.dim, **options)  # empty: no stage built yet worth keeping
        policy.store = store
        if policy._ann_class().unavailable():
            policy.ann = default_ann()  # saved where ScaNN is installed, read where it is not: rebuilt
        if "exact_basis" in arrays:  # older files name this stage "exact"
            policy.stage = PrunedExactIndex._restore(store, arrays)
        elif stage == policy.ann:
            policy.stage = policy._ann_class()._restore(store, arrays, **policy._ann_options)
        else:
            policy.stage = policy._ann_stage() if len(store) > policy.ann_threshold else policy._exact_stage()
        return policy
