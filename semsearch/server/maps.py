"""The map of a collection: every photo placed in 2-D by its image features, with labelled clusters."""

from __future__ import annotations

from collections import Counter

import numpy as np

from semsearch.errors import SemsearchError
from semsearch.paths import shown
from semsearch.server.state import ServedCollection


def projection(collection: ServedCollection) -> dict[str, object]:
    """2-D PCA of every image's features, plus k-means clusters labelled by their members' top tags."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    snap = collection.store.snapshot([collection.image_space])
    n = len(snap)
    if n == 0:
        return {"points": [], "clusters": []}
    features = np.asarray(snap.vectors[collection.image_space], dtype=np.float32)
    if n >= 3:
        xy = PCA(n_components=2, random_state=0).fit_transform(features)
    else:
        xy = np.zeros((n, 2), dtype=np.float32) + np.arange(n, dtype=np.float32)[:, None]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    xy = (xy - lo) / np.maximum(hi - lo, 1e-9)
    points = [
        {"id": int(i), "x": round(float(x), 5), "y": round(float(y), 5)} for i, (x, y) in zip(snap.ids, xy)
    ]
    n_clusters = int(min(16, max(1, round((n / 2) ** 0.5))))
    clusters = []
    if n >= 2:
        model = KMeans(n_clusters=min(n_clusters, n), n_init=4, random_state=0).fit(xy)
        labels, centres = model.labels_, model.cluster_centers_
    else:
        labels, centres = np.zeros(n, dtype=int), xy[:1]
    tags = getattr(collection, "tags", None)
    for c, centre in enumerate(centres):
        members = np.flatnonzero(labels == c)
        if not len(members):
            continue
        nearest = members[np.argsort(np.linalg.norm(xy[members] - centre, axis=1))[:8]]
        votes: Counter[str] = Counter()
        for pos in nearest:
            image_id = int(snap.ids[pos])
            if tags is not None:
                try:
                    for word, score in tags(image_id, 3):
                        votes[word] += float(score)
                except SemsearchError:
                    pass
            else:
                record = collection.store.get(image_id)
                if record is not None and record.label:
                    votes[shown(record.label).replace("_", " ")] += 1.0
        label = ", ".join(w for w, _ in votes.most_common(2))
        clusters.append(
            {
                "x": round(float(centre[0]), 5),
                "y": round(float(centre[1]), 5),
                "size": len(members),
                "label": label,
            }
        )
    return {"points": points, "clusters": clusters}
