"""A synthetic collection for latency benchmarks: random vectors written through the real Store.

Query commands read only stored vectors, so their cost does not depend on what the pixels were; this
lets the benches measure a 10,000-image collection without embedding 10,000 photos first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semsearch.collection import IMAGE_SPACE, LOGIT_SPACE, Collection
from semsearch.store import Store


def synthetic_collection(db: Path, n: int, seed: int = 0) -> str:
    """Fill the collection at `db` up to `n` random images (made-up paths) and index it; returns one path."""
    rng = np.random.default_rng(seed)
    with Store(db, writable=True, create=True) as store:
        store.set_meta(image_model="efficientnet-lite0", image_model_name="lite0")
        for start in range(store.count(), n, 1000):
            count = min(1000, n - start)
            features = np.abs(rng.normal(size=(count, 1280))).astype(
                np.float32
            )  # pooled ReLU6 features are >= 0
            features /= np.linalg.norm(features, axis=1, keepdims=True)
            logits = rng.normal(scale=2.5, size=(count, 1000)).astype(np.float32)
            first = store.append_vectors({IMAGE_SPACE: features, LOGIT_SPACE: logits})
            store.upsert(
                (f"/synthetic/{start + i:06d}.jpg", 1, 1, f"{start + i:064x}", None, first + i)
                for i in range(count)
            )
    with Collection(db, writable=True) as collection:
        collection.save_index()
    return "/synthetic/000042.jpg"
