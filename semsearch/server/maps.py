"""The map of a collection: every photo placed in 2-D so that photos that look alike lie together, in
regions named by what they show ('dog', 'laptop').

Layout: the image features (unit length) are reduced to REDUCED dimensions by a randomized PCA fitted on
SAMPLE photos, summarised by k-means into at most LANDMARKS landmarks, and the landmarks laid out by an
exact t-SNE (few points: fast); each photo then sits among its NEIGHBOURS most similar landmarks, weighted
by a softmax of its similarity to each. Measured on caltech-dev (1,184 photos, 30 classes): a photo's 10
nearest neighbours on the map share its class 91% of the time (2-D PCA of the features, the map before:
39%; t-SNE of every photo: 94% but 22 s). Landmarks are then grouped into at most REGIONS regions by
k-means on their positions (weighted by size), so a region is a patch of the map.

Names: a region is named by the class or WordNet group (the names tags use) holding the largest share of
its photos' class probability, each share weighted by 1 - log(classes held) / log(1000): 'dalmatian' when
most are dalmatians, 'dog' for mixed breeds (118 classes: a breed must hold a third of what all breeds
do), 'computer' for laptops and notebooks. On caltech-dev, by region: 'computer' (laptop), 'ship' (ferry),
'bird' (ibis: not an ImageNet class), 'revolver', 'soccer ball', 'chair', 'accordion', 'cougar'.

Time and memory: features are read and reduced in chunks of CHUNK photos; 10,000 photos take about
0.5 s (`python bench/map.py`). The server computes a map once per catalog version (`state.Epoch.cached`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from semsearch.vectors import normalise

if TYPE_CHECKING:
    from semsearch.collection import Collection

REDUCED = 48  # PCA dimensions the landmarks are found in
SAMPLE = 2000  # photos the PCA is fitted on
LANDMARKS = 64  # most k-means landmarks the layout is made of
NEIGHBOURS = 3  # landmarks a photo is placed among
SHARPNESS = 0.05  # softmax temperature of a photo's similarity to its landmarks
SPREAD = 0.3  # a landmark's photos spread this share of the way to the next landmark
REGIONS = 24  # most named regions (about sqrt(photos) of them)
CHUNK = 8192  # photos read and reduced at once
PER_NAME = 200  # photos of a region whose class probabilities name it
BOX = (10, 50, 90)  # a cluster's box holds the middle 80% of its photos on each axis; its centre: the median
EXAMPLES = 6  # example queries a collection's overview offers


def collection_map(collection: Collection) -> dict[str, object]:
    """``{"points": [{id, x, y, cluster}], "clusters": [{label, x, y, size, box}]}``: x and y in [0, 1];
    a point's `cluster` indexes `clusters` (largest first); a cluster's x, y is the median of its photos'
    and `box` [x0, y0, x1, y1] holds most of them (BOX), so labels can be placed beside the photos.

    scikit-learn's k-means runs on one OpenMP thread here: a server's concurrency comes from its requests,
    and on a loaded 2-core machine OpenMP threads waiting for each other made it take 0.3 s, not 0.02 s."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        return _compute(collection)


def _compute(collection: Collection) -> dict[str, object]:
    store, space = collection.store, collection.image_space
    snap = store.snapshot([])
    n = len(snap)
    if n == 0:
        return {"points": [], "clusters": []}
    sample = np.sort(np.random.default_rng(0).permutation(n)[:SAMPLE])
    reduced = _reduce(lambda rows: store.vectors_at(space, rows), snap.rows, sample)
    xy, landmark, landmark_xy = _layout(reduced, sample)
    sizes = np.bincount(landmark, minlength=len(landmark_xy))
    region = _regions(landmark_xy, sizes, min(REGIONS, max(1, round(math.sqrt(n)))))[landmark]
    span = xy.max(axis=0) - xy.min(axis=0)
    xy = np.where(span > 1e-9, (xy - xy.min(axis=0)) / np.maximum(span, 1e-9), 0.5)
    names = _names(collection, snap.rows, region)
    order = np.argsort(-np.bincount(region), kind="stable")
    order = order[np.bincount(region)[order] > 0]
    renumber = np.empty(len(names), dtype=np.int64)
    renumber[order] = np.arange(len(order))
    xy = xy.astype(np.float64).round(5)
    clusters = []
    for r in order:
        members = xy[region == r]
        (x0, y0), (x, y), (x1, y1) = np.percentile(members, BOX, axis=0).round(5).tolist()
        clusters.append({"label": names[r], "x": x, "y": y, "size": len(members), "box": [x0, y0, x1, y1]})
    points = [
        {"id": i, "x": x, "y": y, "cluster": c}
        for i, (x, y), c in zip(snap.ids.tolist(), xy.tolist(), renumber[region].tolist())
    ]
    return {"points": points, "clusters": clusters}


def _reduce(read, rows: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """(n, <= REDUCED) PCA coordinates of the unit-length vectors at catalog `rows`, read by `read(rows)`
    in chunks; the PCA is fitted on the `sample` positions (randomized: a few matrix products)."""
    from sklearn.decomposition import PCA

    fitted = normalise(read(rows[sample]))
    dims = min(REDUCED, len(fitted) - 1, fitted.shape[1])
    if dims < 2:  # one or two photos: no directions to learn
        return fitted - fitted.mean(axis=0)
    pca = PCA(dims, svd_solver="randomized", iterated_power=2, random_state=0).fit(fitted)
    chunks = [pca.transform(normalise(read(rows[a : a + CHUNK]))) for a in range(0, len(rows), CHUNK)]
    return np.concatenate(chunks).astype(np.float32)


def _layout(reduced: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xy of each photo, its nearest landmark, the landmarks' xy). Landmarks: k-means of the `sample`; a
    collection of at most LANDMARKS photos is its own landmarks."""
    from sklearn.cluster import KMeans

    if len(reduced) <= LANDMARKS:
        centres = reduced
    else:
        kmeans = KMeans(LANDMARKS, n_init=1, max_iter=50, random_state=0).fit(reduced[sample])
        centres = kmeans.cluster_centers_.astype(np.float32)
    landmark_xy = _place_landmarks(centres)
    similarity = normalise(reduced) @ normalise(centres).T
    m = min(NEIGHBOURS, len(centres))
    near = np.argpartition(-similarity, m - 1, axis=1)[:, :m]
    closeness = np.take_along_axis(similarity, near, axis=1)
    weights = np.exp((closeness - closeness.max(axis=1, keepdims=True)) / SHARPNESS)
    weights /= weights.sum(axis=1, keepdims=True)
    own = similarity.argmax(axis=1)
    xy = np.einsum("nm,nmd->nd", weights, landmark_xy[near]) + _spread(reduced, centres, own, landmark_xy)
    return xy, own, landmark_xy


def _spread(reduced: np.ndarray, centres: np.ndarray, own: np.ndarray, landmark_xy: np.ndarray) -> np.ndarray:
    """Offsets that keep a landmark's photos from piling up on one spot: each photo's offset from its
    landmark along the first two principal axes, scaled so that the farthest lies SPREAD of the way to
    the nearest other landmark."""
    if len(centres) < 2:
        return np.zeros((len(reduced), 2), np.float32)
    offset = reduced[:, :2] - centres[own, :2]
    reach = np.zeros(len(centres), np.float32)
    np.maximum.at(reach, own, np.linalg.norm(offset, axis=1))
    gaps = np.linalg.norm(landmark_xy[:, None] - landmark_xy[None], axis=2)
    np.fill_diagonal(gaps, np.inf)
    scale = SPREAD * gaps.min(axis=1) / np.maximum(reach, 1e-9)
    return offset * scale[own][:, None]


def _place_landmarks(centres: np.ndarray) -> np.ndarray:
    """(k, 2) positions of the landmarks: t-SNE for six or more, the first two principal axes below."""
    k = len(centres)
    if k >= 6:
        from sklearn.manifold import TSNE

        tsne = TSNE(
            2, perplexity=min(10.0, (k - 1) / 3), init="pca", method="exact", max_iter=500, random_state=0
        )
        return tsne.fit_transform(centres).astype(np.float32)
    centred = centres - centres.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    xy = np.zeros((k, 2), np.float32)
    xy[:, : min(2, len(axes))] = centred @ axes[:2].T
    return xy


def _regions(landmark_xy: np.ndarray, sizes: np.ndarray, count: int) -> np.ndarray:
    """The region of each landmark: k-means of their positions, each weighted by its photos."""
    from sklearn.cluster import KMeans

    count = min(count, int((sizes > 0).sum()))
    if count <= 1:
        return np.zeros(len(landmark_xy), dtype=np.int64)
    kmeans = KMeans(count, n_init=4, random_state=0).fit(landmark_xy, sample_weight=sizes)
    return kmeans.labels_


def _names(collection: Collection, rows: np.ndarray, region: np.ndarray) -> list[str]:
    """The name of each region, from the class probabilities of up to PER_NAME of its photos (chosen at
    random: the time does not grow with the collection)."""
    spaces = [s.name for s in collection.model.spaces]
    count = region.max() + 1
    shuffled = np.random.default_rng(1).permutation(len(region))
    picked = np.sort(np.concatenate([shuffled[region[shuffled] == r][:PER_NAME] for r in range(count)]))
    read = {s: collection.store.vectors_at(s, rows[picked]) for s in spaces}
    mass = np.eye(region.max() + 1)[region[picked]].T @ collection.class_probabilities(read)
    return region_names(mass)


def region_names(mass: np.ndarray) -> list[str]:
    """A name for each row of class probability mass ((regions, 1000), summed over a region's photos): the
    tag name (class or WordNet group) whose share of the mass, weighted by how specific it is, is largest."""
    from semsearch.encoders.joint import tag_names

    names, member = tag_names()
    held = member.sum(axis=0)  # classes per name
    specific = 1.0 - np.log(held) / math.log(member.shape[0])
    share = mass / np.maximum(mass.sum(axis=1, keepdims=True), 1e-12)
    return [names[i] for i in np.argmax((share @ member) * specific, axis=1)]


def examples(made: dict[str, object]) -> list[str]:
    """Queries that find photos of this collection: the names of its map's largest regions, each once (a
    name is a class or group name, which a search ranks by the classifier's probability for it)."""
    names = dict.fromkeys(c["label"] for c in made["clusters"] if c["label"])
    return list(names)[:EXAMPLES]


def prepare() -> None:
    """Import what a map needs and read the tag names (about a second of CPU), so that a server's first
    map costs only its computation: run in a background thread when the server starts."""
    import sklearn.cluster
    import sklearn.decomposition
    import sklearn.manifold  # noqa: F401

    from semsearch.encoders.joint import tag_names

    tag_names()
