"""Duplicate photos: byte-identical copies (same content hash) and near-duplicates (resized, re-encoded,
cropped a little, re-coloured, burst frames), grouped from the stored image features.

Every photo's nearest neighbours come from the collection's vector index (exact search below its ANN
threshold, ANN above); each pair at or above a cosine threshold links two photos, identical files are linked
whatever their neighbours, and the groups are the connected components of those links. The neighbour graph,
the costly part, does not depend on the threshold: a server keeps one per catalog version and groups at any
threshold from it in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from semsearch.errors import QueryError
from semsearch.paths import shown

#: Cosine of image features at or above which two photos are near-duplicates. `python bench/dupes.py`
#: (300 real caltech-dev photos x 16 kinds of edited copy, against 22,819 pairs of different photos of the
#: same class): recall 0.944 and precision 0.986 at 0.85, where 0.90 gives 0.887 and 0.994 (the README has
#: the table; many of the "false" pairs are the same picture twice in Caltech-101, so precision is higher).
DEFAULT_THRESHOLD = 0.85

#: Neighbours looked up per photo. A photo with more near-duplicates than this still joins them all: the
#: groups are connected components, so one shared neighbour is enough.
NEIGHBOURS = 10

#: Groups up to this size list the score of every pair of members; larger ones (a low threshold, a long
#: burst) list the links that made the group, so the answer grows with the photos, not with their square.
MAX_PAIRWISE = 24

#: Queries sent to the index at a time: bounds the (queries x k) arrays and lets progress be shown.
CHUNK = 512

Progress = Callable[[int, int], None]


def check_threshold(threshold: float) -> float:
    """The threshold as a float in (0, 1], or a QueryError saying what is allowed."""
    value = float(threshold)
    if not (0 < value <= 1) or math.isnan(value):
        raise QueryError(
            f"threshold must be above 0 and at most 1 (a cosine similarity), not {threshold}; "
            f"the default is {DEFAULT_THRESHOLD}"
        )
    return value


@dataclass(frozen=True)
class DuplicateGroup:
    """Photos that are copies of each other: ids (ascending) with their paths, the sets of byte-identical
    files among them, and scores (cosine of features) of pairs as (id, id, score), best first."""

    ids: tuple[int, ...]
    paths: tuple[str, ...]
    identical: tuple[tuple[int, ...], ...]
    pairs: tuple[tuple[int, int, float], ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "ids": list(self.ids),
            "paths": [shown(p) for p in self.paths],
            "identical": [list(ids) for ids in self.identical],
            "pairs": [{"a": a, "b": b, "score": round(s, 6)} for a, b, s in self.pairs],
        }


@dataclass(frozen=True)
class NeighbourGraph:
    """Each photo's nearest neighbours in one space, by position in `ids` (-1: none)."""

    ids: np.ndarray  # (n,) int64, ascending
    paths: list[str]
    hashes: list[str]
    rows: np.ndarray  # (n,) the photos' rows in the collection's vector files
    neighbours: np.ndarray  # (n, k) positions
    scores: np.ndarray  # (n, k) float32 cosine

    def groups(self, threshold: float, vectors: Callable[[np.ndarray], np.ndarray]) -> list[DuplicateGroup]:
        """Groups at a threshold, largest first; `vectors(rows)` gives members' vectors for pair scores."""
        threshold = check_threshold(threshold)
        n = len(self.ids)
        if n < 2:
            return []
        near = (self.scores >= threshold) & (self.neighbours >= 0)
        src = np.repeat(np.arange(n), self.neighbours.shape[1])[near.ravel()]
        dst = self.neighbours.ravel()[near.ravel()]
        same = _identical_links(self.hashes)
        src, dst = np.concatenate([src, same[0]]), np.concatenate([dst, same[1]])
        links = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
        count, component = connected_components(links, directed=False)
        sizes = np.bincount(component, minlength=count)
        found = []
        for c in np.flatnonzero(sizes >= 2):
            members = np.flatnonzero(component == c)
            found.append(self._group(members, threshold, near, vectors))
        found.sort(key=lambda g: (-len(g.ids), g.ids[0]))
        return found

    def _group(
        self, members: np.ndarray, threshold: float, near: np.ndarray, vectors: Callable
    ) -> DuplicateGroup:
        ids = self.ids[members]
        by_hash: dict[str, list[int]] = {}
        for pos in members.tolist():
            by_hash.setdefault(self.hashes[pos], []).append(int(self.ids[pos]))
        identical = tuple(tuple(v) for v in by_hash.values() if len(v) > 1)
        if len(members) <= MAX_PAIRWISE:
            v = vectors(self.rows[members])
            scores = v @ v.T
            i, j = np.triu_indices(len(members), k=1)
            pairs = [(int(ids[a]), int(ids[b]), float(scores[a, b])) for a, b in zip(i, j)]
        else:  # the links that made the group: near neighbours within it
            inside = np.isin(self.neighbours[members], members) & near[members]
            a, b = np.nonzero(inside)
            seen = {}
            for src, col in zip(members[a].tolist(), b.tolist()):
                dst = int(self.neighbours[src, col])
                key = (min(self.ids[src], self.ids[dst]), max(self.ids[src], self.ids[dst]))
                seen[int(key[0]), int(key[1])] = float(self.scores[src, col])
            pairs = [(a_, b_, s) for (a_, b_), s in seen.items()]
        pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
        return DuplicateGroup(
            ids=tuple(int(i) for i in ids),
            paths=tuple(self.paths[p] for p in members.tolist()),
            identical=identical,
            pairs=tuple(pairs),
        )


def _identical_links(hashes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Links joining files with the same content hash (each to the next one with its hash)."""
    _, inverse = np.unique(np.asarray(hashes, dtype=object), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    same = inverse[order][1:] == inverse[order][:-1]
    return order[:-1][same], order[1:][same]


def neighbour_graph(
    ids: np.ndarray,
    paths: list[str],
    hashes: list[str],
    rows: np.ndarray,
    vectors: Callable[[np.ndarray], np.ndarray],
    index,
    *,
    k: int = NEIGHBOURS,
    progress: Progress | None = None,
) -> NeighbourGraph:
    """Every photo's `k` nearest others, searched in the index `CHUNK` photos at a time; `vectors(rows)`
    reads the photos' own vectors (the queries)."""
    order = np.argsort(ids, kind="stable")
    ids, rows = np.asarray(ids, dtype=np.int64)[order], np.asarray(rows, dtype=np.int64)[order]
    paths, hashes = [paths[i] for i in order], [hashes[i] for i in order]
    n = len(ids)
    want = min(k + 1, n)  # the photo itself comes back too
    neighbours = np.full((n, max(want - 1, 0)), -1, dtype=np.int64)
    scores = np.full(neighbours.shape, -np.inf, dtype=np.float32)
    for a in range(0, n if want > 1 else 0, CHUNK):
        found, sims = index.search(vectors(rows[a : a + CHUNK]), want)
        pos = np.searchsorted(ids, found)
        pos = np.where((found >= 0) & (pos < n), pos, 0)
        known = (found >= 0) & (ids[pos] == found) & (pos != np.arange(a, a + len(found))[:, None])
        for r in range(len(found)):  # each row: its neighbours except itself, best first
            keep = pos[r][known[r]][: want - 1]
            neighbours[a + r, : len(keep)] = keep
            scores[a + r, : len(keep)] = sims[r][known[r]][: want - 1]
        if progress:
            progress(min(n, a + CHUNK), n)
    return NeighbourGraph(ids, paths, hashes, rows, neighbours, scores)
