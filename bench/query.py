"""End-to-end latency of CLI queries on a 10,000-image collection, process start included.

The collection is synthetic (random unit features and logits written through the real Store, then indexed
by the real Collection code) so the bench needs no 10k photos; query commands read only stored vectors,
so their cost does not depend on what the pixels were. Baselines in the same run: a bare `python -c pass`
and `python -c "import numpy"`.

    python bench/query.py [--images 10000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from semsearch.collection import Collection
from semsearch.store import Store


def synthetic_collection(db: Path, n: int, seed: int = 0) -> str:
    """Write n random images' vectors into a collection at `db`; returns one indexed path."""
    rng = np.random.default_rng(seed)
    with Store(db, writable=True, create=True) as store:
        store.set_meta(image_model="efficientnet-lite0", image_model_name="lite0")
        for start in range(0, n, 1000):
            count = min(1000, n - start)
            features = np.abs(rng.normal(size=(count, 1280))).astype(np.float32)
            features /= np.linalg.norm(features, axis=1, keepdims=True)
            logits = rng.normal(scale=3, size=(count, 1000)).astype(np.float32)
            first = store.append_vectors({"features": features, "logits": logits})
            store.upsert(
                (f"/photos/{start + i:06d}.jpg", 1, 1, f"{start + i:064x}", None, first + i) for i in range(count)
            )
    with Collection(db, writable=True) as collection:
        collection.save_index()
    return "/photos/000042.jpg"


def timed(command: list[str], repeats: int) -> tuple[float, float]:
    """Median and max wall time of a command (first run discarded as a warm-up of the page cache)."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), max(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "semsearch.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db"
        indexed = synthetic_collection(db, args.images)
        rows = [
            ("python -c pass (baseline)", [sys.executable, "-c", "pass"]),
            ("python -c 'import numpy' (baseline)", [sys.executable, "-c", "import numpy"]),
            ("semsearch similar INDEXED", [*cli, "similar", indexed, "--db", str(db), "--json"]),
            ("semsearch similar INDEXED --focus", [*cli, "similar", indexed, "--db", str(db), "--focus", "tabby"]),
            ("semsearch search 'cat'", [*cli, "search", "cat", "--db", str(db), "--json"]),
            ("semsearch words cat", [*cli, "words", "cat", "--json"]),
        ]
        results = [(name, *timed(command, args.repeats)) for name, command in rows]
    base = results[0][1]
    print(f"CLI query latency, {args.images:,} images, end to end incl. process start ({args.repeats} runs)")
    print(f"{'command':40s} {'median s':>9s} {'max s':>7s} {'x python':>9s}")
    for name, median, worst in results:
        print(f"{name:40s} {median:9.3f} {worst:7.3f} {median / base:9.1f}")


if __name__ == "__main__":
    main()
