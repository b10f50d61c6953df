"""Latency of `semsearch serve` under concurrent load, on loopback only.

    python bench/serve.py [--images 10000] [--clients 16] [--seconds 20] [--db DIR]

The collection is 10,000 real photos (bench/photos.py: caltech-dev and re-framed copies of it), indexed
by the real pipeline, so the search runs on real image features.

Rows of the table:
* ``direct Collection``: the same call in this process on a plain `Collection` (what the CLI does once
  per process: it rebuilds the whole-collection tables for each query);
* ``in-process, cached``: the server's own collection object (shared per-catalog-version caches), one
  caller, no HTTP — the floor the server can reach;
* ``HTTP, N clients``: `semsearch serve` in a separate process, N closed-loop clients with
  keep-alive connections for `--seconds` each, on 127.0.0.1 only.

Queries: "text" = words/phrases; "image" = similar to an indexed photo (`GET /api/similar/{id}`);
"upload" = similar to a posted JPEG (`POST /api/similar`), which the server decodes and runs through the
CNN on every request.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from photos import add_collection_options, bench_collection

HOST = "127.0.0.1"  # never anything else
WORDS = [
    "dog",
    "beach",
    "car",
    "red flower",
    "mountain lake",
    "cat",
    "guitar",
    "pizza",
    "bird on a tree",
    "laptop",
]


def percentiles(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def time_calls(fn, args: list, repeat: int) -> list[float]:
    out = []
    for i in range(repeat):
        t = time.perf_counter()
        fn(args[i % len(args)])
        out.append(time.perf_counter() - t)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(db: Path, port: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "semsearch.cli",
        "serve",
        "--db",
        str(db),
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def load(
    port: int, urls: list[str], clients: int, seconds: float, bodies: list[bytes] | None = None
) -> tuple[list[float], int, float]:
    """Closed-loop clients (one keep-alive connection each) for `seconds`: latencies, errors, wall time.
    With `bodies`, each request POSTs one of them as an image/jpeg upload."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = time.monotonic()
    end = start + seconds

    def client(i: int) -> None:
        rnd = random.Random(i)
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        while time.monotonic() < end:  # bounded by the clock
            url = rnd.choice(urls)
            body = rnd.choice(bodies) if bodies else None
            t = time.perf_counter()
            try:
                if body is None:
                    conn.request("GET", url)
                else:
                    conn.request("POST", url, body=body, headers={"Content-Type": "image/jpeg"})
                response = conn.getresponse()
                body = response.read()
                ok = response.status == 200 and body.startswith(b"[")
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=30)
            latencies[i].append(time.perf_counter() - t)
            errors[i] += not ok
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for lat in latencies for x in lat], sum(errors), time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_collection_options(parser)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with bench_collection(args) as (db, indexed):
        rows = measure(args, db, indexed)
    print(f"\n{args.images} images, {os.cpu_count()} CPUs, loopback\n")
    print("| query | how | clients | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for kind, how, clients, rps, p50, p99, errors in rows:
        print(f"| {kind} | {how} | {clients} | {rps:.0f} | {p50:.1f} | {p99:.1f} | {errors} |")
    print(
        json.dumps(
            [dict(zip(("query", "how", "clients", "rps", "p50_ms", "p99_ms", "errors"), r)) for r in rows]
        ),
        file=sys.stderr,
    )


def measure(args: argparse.Namespace, db: Path, indexed: str) -> list[tuple]:
    """The table's rows: in-process baselines, then HTTP load on a `semsearch serve` of `db`."""
    from semsearch.collection import Collection
    from semsearch.server.app import Served, _one_blas_thread

    _one_blas_thread()  # same conditions as the server process for the in-process rows

    rng = random.Random(0)
    with Collection(db) as c:
        ids = sorted(r.id for r in c.store.records().values())
    sample_ids = rng.sample(ids, 50)
    rows: list[tuple[str, str, int, float, float, float, int]] = []

    # Baselines in this process.
    with Collection(db) as plain:
        for kind, fn, qs in (
            ("text", plain.search, WORDS),
            ("image", lambda i: plain.similar(i, k=10), sample_ids),
        ):
            fn(qs[0]) if kind == "image" else fn(qs[0], k=10)
            call = (lambda q: fn(q, k=10)) if kind == "text" else fn
            lat = time_calls(call, qs, 20)
            p50, p99 = percentiles(lat)
            rows.append((kind, "direct Collection (CLI path)", 1, len(lat) / sum(lat), p50, p99, 0))
    served = Served(db)
    with served.collection() as cached:
        for kind, call, qs in (
            ("text", lambda q: cached.search(q, k=10), WORDS),
            ("image", lambda i: cached.similar(i, k=10), sample_ids),
        ):
            call(qs[0])
            lat = time_calls(call, qs, 300)
            p50, p99 = percentiles(lat)
            rows.append(
                (kind, "in-process, cached (server's Collection)", 1, len(lat) / sum(lat), p50, p99, 0)
            )
    served.close()

    port = free_port()
    server = start_server(db, port)
    try:
        text_urls = [f"/api/search?q={w.replace(' ', '+')}&k=10" for w in WORDS]
        image_urls = [f"/api/similar/{i}?k=10" for i in sample_ids]
        # Uploads: photos of the collection's classes, re-encoded by the server's CNN on every request.
        uploads = [p.read_bytes() for p in sorted(Path(indexed).parents[1].glob("*/*-0.jpg"))[::40]]
        upload_url = ["/api/similar?k=10"]
        for kind, urls, bodies, clients in (
            ("text", text_urls, None, args.clients),
            ("image", image_urls, None, args.clients),
            ("upload", upload_url, uploads, 1),  # the CNN's latency alone
            ("upload", upload_url, uploads, args.clients),
        ):
            load(port, urls[:2], 2, 1.0, bodies)  # warm: builds the cached tables, loads the encoder
            lat, errors, wall = load(port, urls, clients, args.seconds, bodies)
            p50, p99 = percentiles(lat)
            how = f"HTTP, {clients} client{'s' * (clients > 1)}, {args.seconds:.0f} s"
            rows.append((kind, how, clients, len(lat) / wall, p50, p99, errors))
    finally:
        server.terminate()
        server.wait(10)

    return rows


if __name__ == "__main__":
    main()
