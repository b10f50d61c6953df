"""End-to-end latency of CLI queries on a 10,000-image collection, process start included, and the
same queries in process (what a running `serve` pays).

The collection is 10,000 real photos (bench/photos.py: caltech-dev and re-framed copies of it, with EXIF
dates, cameras and GPS positions). Baselines in the same run: a bare `python -c pass`
and `python -c "import numpy"`. Filter rows say how many photos the filter allows.

    python bench/query.py [--images 10000] [--repeats 7] [--db DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from photos import add_collection_options, bench_collection


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
    add_collection_options(parser)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "semsearch.cli"]
    with bench_collection(args) as (db, indexed):
        rows = [
            ("python -c pass (baseline)", [sys.executable, "-c", "pass"]),
            ("python -c 'import numpy' (baseline)", [sys.executable, "-c", "import numpy"]),
            ("semsearch similar INDEXED", [*cli, "similar", indexed, "--db", str(db), "--json"]),
            (
                "semsearch similar INDEXED --focus",
                [*cli, "similar", indexed, "--db", str(db), "--focus", "tabby"],
            ),
            ("semsearch search 'cat'", [*cli, "search", "cat", "--db", str(db), "--json"]),
            ("semsearch words cat", [*cli, "words", "cat", "--json"]),
        ]
        rows += [
            (f"semsearch search '{query}'", [*cli, "search", query, "--db", str(db), "--json"])
            for query in FILTERED
        ]
        rows.append(
            (
                "semsearch similar INDEXED --filter after:2023",
                [*cli, "similar", indexed, "--db", str(db), "--json", "--filter", "after:2023"],
            )
        )
        results = [(name, *timed(command, args.repeats)) for name, command in rows]
        in_process = in_process_latency(db, indexed, args.repeats)
    base = results[0][1]
    print(f"CLI query latency, {args.images:,} images, end to end incl. process start ({args.repeats} runs)")
    print(f"{'command':58s} {'median s':>9s} {'max s':>7s} {'x python':>9s}")
    for name, median, worst in results:
        print(f"{name:58s} {median:9.3f} {worst:7.3f} {median / base:9.1f}")
    print(f"\nin process (Collection opened once, index loaded), median of {args.repeats * 5} queries")
    print(f"{'query':58s} {'allowed':>8s} {'ms':>8s}")
    for name, allowed, ms in in_process:
        print(f"{name:58s} {allowed:>8s} {ms:8.2f}")


#: Queries with filters of every kind and selectivity (search rows; filters alone list by date).
FILTERED = [
    "cat after:2020",
    "cat camera:canon",
    "cat in:ferry",
    "cat near:48.85,2.35,50km",
    "cat after:2019-06 before:2019-07",
    "dog on a sofa after:2022",
    "after:2019 before:2020 camera:nikon",
]


def in_process_latency(db, indexed: str, repeats: int) -> list[tuple[str, str, float]]:
    """(query, photos its filters allow, median ms) for the unfiltered and filtered queries in process."""
    from semsearch.collection import Collection
    from semsearch.query import parse_filters, split_filters

    out = []
    with Collection(db) as c:
        c.search("cat", k=10)  # loads the word table and the indexes once, as a server does
        target = c.store.lookup(indexed).id

        def median_ms(run) -> float:
            times = []
            for _ in range(repeats * 5):
                start = time.perf_counter()
                run()
                times.append((time.perf_counter() - start) * 1000)
            return statistics.median(times)

        for query in ["cat", *FILTERED]:
            filters = split_filters(query)[1]
            allowed = str(len(c.store.matching(filters))) if filters else "all"
            out.append(
                (f"search '{query}'", allowed, median_ms(lambda q=query: c.search(q, k=10, min_score=0)))
            )
        for text in ("", "after:2023", "camera:canon", "near:48.85,2.35,50km"):
            filters = parse_filters(text) if text else None
            allowed = str(len(c.store.matching(filters))) if filters else "all"
            out.append(
                (
                    f"similar INDEXED {text}".strip(),
                    allowed,
                    median_ms(lambda f=filters: c.similar(target, k=10, filters=f)),
                )
            )
        filters = split_filters("after:2020")[1]
        out.append(
            (
                "SQLite only: ids for after:2020",
                str(len(c.store.matching(filters))),
                median_ms(lambda: c.store.matching(filters)),
            )
        )
    return out


if __name__ == "__main__":
    main()
