"""End-to-end latency of CLI queries on a 10,000-image collection, process start included.

The collection is 10,000 real photos (bench/photos.py: caltech-dev and re-framed copies of it).
Baselines in the same run: a bare `python -c pass`
and `python -c "import numpy"`.

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
        results = [(name, *timed(command, args.repeats)) for name, command in rows]
    base = results[0][1]
    print(f"CLI query latency, {args.images:,} images, end to end incl. process start ({args.repeats} runs)")
    print(f"{'command':40s} {'median s':>9s} {'max s':>7s} {'x python':>9s}")
    for name, median, worst in results:
        print(f"{name:40s} {median:9.3f} {worst:7.3f} {median / base:9.1f}")


if __name__ == "__main__":
    main()
