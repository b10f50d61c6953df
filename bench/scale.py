"""Every index backend at scale: N realistic 1,280-d photo vectors, in process and through `semsearch serve`.

    python bench/scale.py                               # N = 100,000 (about 15 minutes on 2 cores)
    python bench/scale.py --n 1000000 --out /tmp/scale  # the issue's size (docs/scale.md: time, memory)
    python bench/scale.py --n 1000000 --backends ""     # the data only
    python bench/scale.py --backends exact,scann,milvus-lite --no-http
    python bench/scale.py --ray                         # Ray indexing of caltech-dev against the local pipeline

Vectors: the 1,184 real caltech-dev photo features (EfficientNet-Lite0 through the real pipeline, indexed
once into OUT/caltech-db) and copies of them, each moved by noise drawn from the real features' own
covariance (top 256 principal directions), scaled per copy so that a copy's cosine to its photo spans
0.69 / 0.80 / 0.89 (10th / 50th / 90th percentile): what re-framed, flipped, tilted and re-lit shots of a
scene measure with the real encoder (0.73 / 0.81 / 0.92, bench/photos.py's variants). Neighbours are then
as hard as real ones: a query (a fresh copy, never indexed) has its 10 nearest neighbours within ~0.02 of
cosine. The vectors are written into a real collection (catalog + vector files, logits copied from the
photos) under OUT/scale-N/ (--out, default bench/out; 8.7 GiB at a million), reused by later runs.

For each backend, one process builds the index from the collection's vector file and saves it where the
collection keeps it ("build s": until it is durable and, for Milvus Lite, compacted and indexed; "peak MB":
anonymous memory while building, not counting the input's file-backed pages; "disk MB"). A second process
loads it as a server would ("load s"; "mem MB": anonymous memory the loaded index holds; "paged MB": pages
of the index file resident after the queries, shared and evictable: a loaded index memory-maps its saved
vectors) and answers the
held-out queries one per call on one thread (recall@10 against exact search, p50/p99 latency, queries/s;
at most --query-seconds each). Then, on the saved index: a cold `semsearch similar` process ("CLI s":
process start, index load, one query) and `semsearch serve` with one keep-alive client on
`GET /api/similar/{id}` ("HTTP p50 ms"). The exact backend is the baseline of the same run.

`--ray`: caltech-dev indexed into a new collection by the in-process pipeline, by Ray with one actor of two
inference threads and with two actors of one, in turns (--repeats rounds, median photos/s), on one local
Ray instance (num_cpus = the machine's) started before the rounds, as a running cluster would be: each
Ray row includes its actors' start (model load). "identical" compares every path, hash and vector with the
local collection of the same round.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from photos import PHOTOS  # noqa: E402
from serve import HOST, free_port, load, percentiles, start_server  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
DIM = 1280
FEATURES, LOGITS = "features", "logits"  # the vector spaces of the default image model (lite0)
K = 10
NOISE_DIMS = 256
NOISE_SCALE = (0.6, 1.6)  # per-copy scale of the covariance noise: copy-photo cosine 0.69 / 0.80 / 0.89
BACKENDS = ("exact", "pruned", "scann", "hnsw", "milvus-lite")


# -- data --------------------------------------------------------------------------------------------
def real_features(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """(features, logits) of the 1,184 caltech-dev photos, from the real pipeline (indexed once)."""
    from semsearch.collection import Collection

    cache = out / "caltech-features.npz"
    if not cache.exists():
        out.mkdir(parents=True, exist_ok=True)
        with Collection(out / "caltech-db", writable=True) as collection:
            collection.sync(PHOTOS)
            snap = collection.store.snapshot([FEATURES, LOGITS])
            np.savez(cache, features=snap.vectors[FEATURES], logits=snap.vectors[LOGITS])
    with np.load(cache) as z:
        return z["features"], z["logits"]


class Copies:
    """Noisy copies of real photo features (see the module docstring)."""

    def __init__(self, features: np.ndarray) -> None:
        self.features = features
        centred = features - features.mean(axis=0)
        eigvals, eigvecs = np.linalg.eigh(centred.T.astype(np.float64) @ centred / len(features))
        top = np.argsort(eigvals)[::-1][:NOISE_DIMS]
        self.noise = (eigvecs[:, top] * np.sqrt(np.maximum(eigvals[top], 0))).T.astype(np.float32)

    def make(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, source photo of each)."""
        source = rng.integers(0, len(self.features), n)
        scale = rng.uniform(*NOISE_SCALE, n).astype(np.float32)[:, None]
        x = self.features[source] + scale * (
            rng.standard_normal((n, NOISE_DIMS), dtype=np.float32) @ self.noise
        )
        np.abs(x, out=x)  # the features are pooled ReLU outputs: never negative
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x, source


def build_collection(db: Path, n: int, copies: Copies, logits: np.ndarray) -> None:
    """A collection of `n` copies: catalog rows (id = row + 1) and features + logits vector files."""
    from semsearch.store import Store

    if (db / "done").exists():
        return
    shutil.rmtree(db, ignore_errors=True)
    rng = np.random.default_rng(0)
    with Store(db, writable=True, create=True) as store:
        for a in range(0, n, 50_000):
            x, source = copies.make(min(50_000, n - a), rng)
            first = store.append_vectors({FEATURES: x, LOGITS: logits[source]})
            store.upsert(
                (f"/synthetic/{first + i:07d}.jpg", 0, 0, f"{first + i:064x}", None, first + i)
                for i in range(len(x))
            )
            print(f"collection: {a + len(x):,} / {n:,}", file=sys.stderr, flush=True)
    (db / "done").touch()


def exact_truth(db: Path, queries: np.ndarray) -> np.ndarray:
    """Ids of the exact top-K of every query (cached beside the collection)."""
    cache = db.parent / f"truth-{hashlib.sha1(queries.tobytes()).hexdigest()[:12]}.npy"
    if cache.exists():
        return np.load(cache)
    vectors = collection_vectors(db)
    best = np.full((len(queries), K), -np.inf, dtype=np.float32)
    rows = np.zeros((len(queries), K), dtype=np.int64)
    for a in range(0, len(vectors), 100_000):
        scores = queries @ vectors[a : a + 100_000].T
        part = np.argpartition(-scores, K, axis=1)[:, :K]
        merged_scores = np.concatenate([best, np.take_along_axis(scores, part, 1)], axis=1)
        merged_rows = np.concatenate([rows, part + a], axis=1)
        top = np.argsort(-merged_scores, axis=1, kind="stable")[:, :K]
        best, rows = np.take_along_axis(merged_scores, top, 1), np.take_along_axis(merged_rows, top, 1)
    truth = rows + 1  # catalog id = row + 1
    np.save(cache, truth)
    return truth


def collection_vectors(db: Path) -> np.ndarray:
    """The collection's image features, memory-mapped (row r = catalog id r + 1)."""
    return np.memmap(db / "features.0.f32", dtype=np.float32, mode="r").reshape(-1, DIM)


# -- one backend, in its own process -------------------------------------------------------------------
class AnonPeak:
    """Peak anonymous resident memory (MB) of this process while the block runs, sampled every 10 ms."""

    def __enter__(self) -> AnonPeak:
        self.peak = self.start = anon_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, anon_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_mb())


def anon_mb(field: str = "RssAnon") -> float:
    """Resident memory of this process (MB): anonymous (private), or with "RssFile" file-backed pages."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def disk_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def build(args: argparse.Namespace) -> dict:
    """Build one backend's index of the collection from its vector file and save it where the collection
    keeps it: build time (until durable and, for Milvus Lite, compacted and indexed), peak memory, disk."""
    from semsearch.collection import INDEX_DIR, Collection
    from semsearch.index import create_index, resolve_spec

    with Collection(args.db) as collection:
        spec = collection.store.meta()["vectors"]
    name, options = resolve_spec(spec, "features")
    vectors = collection_vectors(args.db)
    path = args.db / INDEX_DIR / "features.idx"
    gc.collect()
    with AnonPeak() as memory:
        start = time.perf_counter()
        index = create_index(name, DIM, **options)
        step = index.add_batch or len(vectors)  # as a collection fills it
        for a in range(0, len(vectors), step):
            index.add(np.arange(a + 1, min(a + step, len(vectors)) + 1), vectors[a : a + step])
        index.save(path)
        config = index.describe()
        index.close()
        if "uri" in options:  # Milvus Lite compacts and indexes in the background until it is closed
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(options["uri"])
        seconds = time.perf_counter() - start
    disk = disk_mb(path) + (disk_mb(Path(options["uri"])) if "uri" in options else 0.0)
    return {"config": config, "build_s": seconds, "peak_mb": memory.peak - memory.start, "disk_mb": disk}


def serve_queries(args: argparse.Namespace) -> dict:
    """Load the saved index as a fresh process would and answer the held-out queries one per call on one
    thread: load time, memory held, recall@10, latency, queries/s."""
    from threadpoolctl import threadpool_limits

    from semsearch.collection import INDEX_DIR
    from semsearch.index import VectorIndex

    queries, truth = np.load(args.db.parent / "queries.npy"), np.load(args.db.parent / "truth.npy")
    gc.collect()
    before, before_file = anon_mb(), anon_mb("RssFile")
    start = time.perf_counter()
    index = VectorIndex.load(args.db / INDEX_DIR / "features.idx")
    loaded = time.perf_counter() - start
    gc.collect()
    held = anon_mb() - before
    if hasattr(index, "threads"):
        index.threads = 1  # queries: one thread, one query per call
    times, found = [], []
    with threadpool_limits(1):
        for q in queries[:5]:
            index.search(q, K)
        deadline = time.perf_counter() + args.query_seconds
        for q in queries:
            t = time.perf_counter()
            ids, _ = index.search(q, K)
            times.append(time.perf_counter() - t)
            found.append(ids[0])
            if time.perf_counter() > deadline and len(times) >= 20:
                break
    paged = anon_mb("RssFile") - before_file
    index.close()
    p50, p99 = percentiles(times)
    return {
        "load_s": loaded,
        "mem_mb": held,
        "file_mb": paged,
        "recall": float(np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth)])),
        "queries": len(times),
        "p50_ms": p50,
        "p99_ms": p99,
        "qps": len(times) / sum(times),
    }


# -- Ray indexing against the local pipeline --------------------------------------------------------
def collection_contents(db: Path) -> dict[str, tuple[str, np.ndarray]]:
    """path -> (hash, features and logits side by side) of every indexed photo."""
    from semsearch.collection import Collection

    with Collection(db) as collection:
        records = collection.store.records()
        rows = np.array([r.row for r in records.values()])
        vectors = np.hstack([collection.store.vectors_at(s, rows) for s in (FEATURES, LOGITS)])
        return {p: (r.sha256, vectors[i]) for i, (p, r) in enumerate(records.items())}


def ray_indexing(out: Path, repeats: int) -> None:
    """Photos/s of Ray indexing with 1 and 2 workers against the local pipeline, in the same run."""
    import logging

    import ray

    from semsearch.collection import Collection
    from semsearch.pipeline import EncodedBatch, encode_paths
    from semsearch.scale.raydata import RayEncode, quiet

    start = time.perf_counter()
    ray.init(
        num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False
    )
    quiet(ray)
    ray_start = time.perf_counter() - start
    pipelines = {
        "local (in process)": encode_paths,
        "ray, 1 worker x 2 threads": RayEncode(workers=1, threads=2),
        "ray, 2 workers x 1 thread": RayEncode(workers=2, threads=1),
    }
    rates: dict[str, list[tuple[float, float, float]]] = {name: [] for name in pipelines}
    worst: dict[str, float] = dict.fromkeys(pipelines, 0.0)
    same: dict[str, bool] = dict.fromkeys(pipelines, True)
    added = 0
    for round_ in range(repeats):
        local: dict[str, tuple[str, np.ndarray]] = {}
        for name, encode in pipelines.items():
            db = out / "ray-bench" / "db"
            shutil.rmtree(db, ignore_errors=True)
            marks: list[tuple[float, int]] = []  # (when, photos) of each batch the writer received

            def timed(paths, model, batch_size):
                for item in encode(paths, model, batch_size):
                    if isinstance(item, EncodedBatch):
                        marks.append((time.perf_counter(), len(item.paths)))
                    yield item

            with Collection(db, writable=True) as collection:
                collection.model.runtime  # noqa: B018 -- loaded before the clock, for every row alike
                t = time.perf_counter()
                report = collection.sync(PHOTOS, encode=timed)
                total = time.perf_counter() - t
            steady = sum(n for _, n in marks[1:]) / (marks[-1][0] - marks[0][0])
            rates[name].append((report.added / total, marks[0][0] - t, steady))
            added = report.added
            got = collection_contents(db)
            print(f"round {round_ + 1}: {name}: {rates[name][-1]}", file=sys.stderr, flush=True)
            if encode is encode_paths:
                local = got
                continue
            same[name] &= sorted(got) == sorted(local) and all(got[p][0] == local[p][0] for p in local)
            worst[name] = max(worst[name], max(float(np.abs(got[p][1] - local[p][1]).max()) for p in local))
    ray.shutdown()
    median = {name: [statistics.median(r[i] for r in rates[name]) for i in range(3)] for name in pipelines}
    base = median["local (in process)"]
    print(
        f"\ncaltech-dev ({added} photos) indexed into a new collection, median of {repeats} rounds; "
        f"{os.cpu_count()} CPUs; the local Ray instance started once, in {ray_start:.1f} s. "
        "'first batch s': until the writer has the first batch (Ray: actors start, model loads); "
        "'steady photos/s': after it\n"
    )
    print(
        "| pipeline | photos/s | x local | first batch s | steady photos/s | x local | "
        "identical to local (max abs diff) |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, (rate, first, steady) in median.items():
        check = (
            "-" if name == "local (in process)" else f"{'yes' if same[name] else 'NO'} ({worst[name]:.1e})"
        )
        print(
            f"| {name} | {rate:.0f} | {rate / base[0]:.2f} | {first:.2f} | {steady:.0f} | {steady / base[2]:.2f} "
            f"| {check} |"
        )


# -- the run -----------------------------------------------------------------------------------------
def spec_of(backend: str, db: Path) -> str:
    return f"milvus-lite:{db.parent / 'vectors.db'}" if backend == "milvus-lite" else backend


def cli_seconds(db: Path, query_path: str, repeats: int = 3) -> float:
    """Median wall time of a cold `semsearch similar` process on the collection."""
    command = [sys.executable, "-m", "semsearch.cli", "similar", query_path, "--db", str(db), "--json"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode:
            raise SystemExit(f"semsearch similar failed: {done.stderr}")
    return statistics.median(times)


def http_p50(db: Path, ids: list[int], seconds: float) -> tuple[float, float]:
    """p50 and p99 (ms) of `GET /api/similar/{id}` from one keep-alive client on `semsearch serve`."""
    port = free_port()
    server = start_server(db, port)
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=3600)  # the first request loads the index
        conn.request("GET", f"/api/similar/{ids[0]}?k={K}")
        response = conn.getresponse()
        if response.status != 200:
            raise SystemExit(f"server answered {response.status}: {response.read()[:200]!r}")
        response.read()
        conn.close()
        latencies, errors, _ = load(port, [f"/api/similar/{i}?k={K}" for i in ids], 1, seconds)
        if errors:
            raise SystemExit(f"{errors} failed requests")
        return percentiles(latencies)
    finally:
        server.terminate()
        server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the collection")
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma list of " + ",".join(BACKENDS))
    parser.add_argument(
        "--query-seconds", type=float, default=30.0, help="most time for one backend's queries"
    )
    parser.add_argument("--http-seconds", type=float, default=15.0)
    parser.add_argument("--no-http", action="store_true", help="skip the CLI and HTTP columns")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"where collections and caches go (default {OUT})"
    )
    parser.add_argument("--ray", action="store_true", help="measure Ray indexing instead (see above)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of --ray")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"build": build, "query": serve_queries}[args.child](args)), flush=True)
        return
    if args.ray:
        ray_indexing(args.out, args.repeats)
        return

    from semsearch.collection import Collection

    features, logits = real_features(args.out)
    copies = Copies(features)
    db = args.out / f"scale-{args.n}" / "db"
    t = time.perf_counter()
    build_collection(db, args.n, copies, logits)
    queries, _ = copies.make(args.queries, np.random.default_rng(1))
    np.save(db.parent / "queries.npy", queries)
    truth = exact_truth(db, queries)
    np.save(db.parent / "truth.npy", truth)
    print(f"data ready ({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
    sample = [int(i) for i in np.random.default_rng(2).choice(args.n, 200, replace=False) + 1]

    rows = []
    for backend in filter(None, args.backends.split(",")):  # none: the data only
        if backend not in BACKENDS:
            raise SystemExit(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")
        shutil.rmtree(db.parent / "vectors.db", ignore_errors=True)
        with Collection(db, writable=True) as collection:
            collection.use_vectors(spec_of(backend, db))
        if backend == "milvus-lite":  # use_vectors opened the file: let the build process have it
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(str(db.parent / "vectors.db"))
        row = {"backend": backend}
        for phase in ("build", "query"):
            print(f"{backend}: {phase}", file=sys.stderr, flush=True)
            command = [sys.executable, __file__, "--child", phase, "--db", str(db)]
            done = subprocess.run(
                [*command, "--query-seconds", str(args.query_seconds)], capture_output=True, text=True
            )
            if done.returncode:
                raise SystemExit(f"{backend} {phase} failed: {done.stderr[-3000:]}")
            row.update(json.loads(done.stdout.strip().splitlines()[-1]))
        if not args.no_http:
            print(f"{backend}: CLI and HTTP", file=sys.stderr, flush=True)
            row["cli_s"] = cli_seconds(db, f"/synthetic/{sample[0] - 1:07d}.jpg")
            row["http_p50_ms"], row["http_p99_ms"] = http_p50(db, sample, args.http_seconds)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    print(
        f"\n{args.n:,} x {DIM}-d vectors ({args.n * DIM * 4 / 2**30:.2f} GiB fp32), {len(queries)} held-out queries, "
        f"k={K}; queries one per call on one thread; {os.cpu_count()} CPUs\n"
    )
    print(
        "| backend | build s | peak MB | disk MB | load s | mem MB | paged MB | recall@10 | p50 ms | p99 ms "
        "| q/s | CLI s | HTTP p50 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cli = f"{r['cli_s']:.2f}" if "cli_s" in r else "-"
        web = f"{r['http_p50_ms']:.1f}" if "http_p50_ms" in r else "-"
        print(
            f"| {r['backend']} | {r['build_s']:.1f} | {r['peak_mb']:.0f} | {r['disk_mb']:.0f} | {r['load_s']:.2f} "
            f"| {r['mem_mb']:.0f} | {r.get('file_mb', 0):.0f} | {r['recall']:.3f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['qps']:.0f} "
            f"| {cli} | {web} |"
        )
    for r in rows:
        print(f"{r['backend']}: {r['config']} ({r['queries']} queries timed)")
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
