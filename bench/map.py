"""How long `GET /api/map` takes: the first call after a collection changed (the map is computed) and the
next ones (served from the per-version cache), on 1,000 and 10,000 photos.

    python bench/map.py                  # N = 1,000 and 10,000
    python bench/map.py --n 1000 5000

Collections: the 1,184 real caltech-dev photo features and logits (bench/scale.py's `real_features`,
indexed once) and noisy copies of them (`scale.Copies`: as far from their photo as re-framed shots are),
written as a real catalog under bench/out/map-N/. Each size is measured in a fresh process: the first call
right after the server started (it may wait for the server's background import of scikit-learn, about a
second of CPU), the first call after a change of the collection (what every `index` run costs the next
visitor of the map; "CPU s" is this process's CPU time in it, the wall time also counts other processes
sharing the cores), and the median of 20 calls answered from the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import OUT, Copies, build_collection, real_features  # noqa: E402

LOCAL = "http://127.0.0.1:8000"


def measure(db: Path) -> dict[str, float]:
    """`GET /api/map` on `db` through the app as `semsearch serve` runs it: right after the server
    started (scikit-learn still being imported), computed again as after a change of the collection
    (a fresh app in the same process), then cached."""
    from fastapi.testclient import TestClient

    from semsearch.server.app import create_app

    def first_call(client: TestClient) -> tuple[float, float, bytes]:
        wall, cpu = time.perf_counter(), time.process_time()
        response = client.get("/api/map")
        assert response.status_code == 200, response.text
        return time.perf_counter() - wall, time.process_time() - cpu, response.content

    with TestClient(create_app(db), base_url=LOCAL) as client:
        cold_s, _, _ = first_call(client)
    with TestClient(create_app(db), base_url=LOCAL) as client:
        changed_s, changed_cpu_s, body = first_call(client)
        cached = []
        for _ in range(20):
            t = time.perf_counter()
            assert client.get("/api/map").content == body
            cached.append(time.perf_counter() - t)
    data = json.loads(body)
    return {
        "photos": len(data["points"]),
        "cold_s": cold_s,
        "changed_s": changed_s,
        "changed_cpu_s": changed_cpu_s,
        "cached_ms": statistics.median(cached) * 1000,
        "clusters": len(data["clusters"]),
        "labels": [c["label"] for c in data["clusters"][:6]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10_000], help="collection sizes")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)), flush=True)
        return
    features, logits = real_features()
    copies = Copies(features)
    rows = []
    for n in args.n:
        db = OUT / f"map-{n}" / "db"
        build_collection(db, n, copies, logits)
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(db)], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    print(
        "| photos | first call after start s | first call after a change s (CPU s) | cached call ms "
        "| clusters | largest clusters |"
    )
    print("|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['photos']:,} | {r['cold_s']:.2f} | {r['changed_s']:.2f} ({r['changed_cpu_s']:.2f}) "
            f"| {r['cached_ms']:.1f} | {r['clusters']} | {', '.join(r['labels'])} |"
        )


if __name__ == "__main__":
    main()
