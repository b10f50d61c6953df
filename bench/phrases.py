"""The phrase benchmark: do descriptions find the photos they describe, and do two-object queries
find photos with both objects?

    python bench/phrases.py                       # GloVe (default text space)
    python bench/phrases.py --text-model minilm

The collection is caltech-dev plus side-by-side composites of two caltech-dev photos (folder "a+b",
made here under bench/out/phrases, indexed once and reused). Queries and the labels a relevant photo
must all carry are in bench/phrases.tsv, written for this benchmark (see its header). Every method is
measured in the same run against the same collection:

  whole phrase   one vector for the phrase (its words' mean): what semsearch did before concepts
  semsearch      Collection.search, the product's default
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parents[1] / "shared/data/caltech-dev"
QUERIES = ROOT / "phrases.tsv"
PER_PAIR = 3


def read_queries(path: Path = QUERIES) -> list[tuple[str, str, frozenset[str]]]:
    """(kind, query, labels a relevant photo must all have) for each line of the TSV."""
    rows = []
    for line in path.read_text("utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            kind, query, labels = line.split("\t")
            rows.append((kind, query, frozenset(labels.split(","))))
    return rows


def make_composites(pairs: list[frozenset[str]], source: Path, target: Path) -> Path:
    """PER_PAIR side-by-side photos for each pair of classes, in folders named 'a+b' (made once)."""
    from PIL import Image

    for n, pair in enumerate(sorted(pairs, key=sorted)):
        a, b = sorted(pair)
        folder = target / f"{a}+{b}"
        if folder.is_dir():
            continue
        folder.mkdir(parents=True)
        left, right = (sorted((source / c).iterdir()) for c in (a, b))
        for i in range(PER_PAIR):
            pick = [left[(n * PER_PAIR + i) % len(left)], right[(n * PER_PAIR + i + 7) % len(right)]]
            photos = [Image.open(p).convert("RGB") for p in pick]
            photos = [p.resize((p.width * 240 // p.height, 240)) for p in photos]
            frame = Image.new("RGB", (sum(p.width for p in photos), 240), "white")
            frame.paste(photos[0], (0, 0))
            frame.paste(photos[1], (photos[0].width, 0))
            frame.save(folder / f"{a}-{pick[0].stem}+{b}-{pick[1].stem}.jpg", quality=90)
    return target


def labels_of(path: str) -> frozenset[str]:
    return frozenset(Path(path).parent.name.split("+"))


def build(db: Path, composites: Path, text_model: str):
    """A collection of caltech-dev + the composites (incremental: made once, reused)."""
    from semsearch.collection import Collection

    with Collection(db, writable=True) as collection:
        collection.use_joint(None, text_model)
        for folder in (DATA, composites):
            collection.sync(folder)
    return Collection(db)


def whole_phrase(collection) -> Callable[[str, int], list[str]]:
    """The baseline: one mean vector for the phrase, nearest joint vectors."""
    from semsearch.collection import JOINT_SPACE

    snap = collection.store.snapshot([])
    joint = collection._vectors(JOINT_SPACE, snap.rows)

    def rank(query: str, k: int) -> list[str]:
        vector, _ = collection.space.phrase(query)
        top = np.argsort(-(joint @ vector), kind="stable")[:k]
        return [snap.paths[i] for i in top]

    return rank


def product(collection) -> Callable[[str, int], list[str]]:
    """Collection.search with no score cut-off: ranking quality alone."""
    return lambda query, k: [h.path for h in collection.search(query, k, min_score=0)]


def cut_offs(collection, queries, paths: list[str]) -> dict[str, tuple[float, float]]:
    """Per kind of text score, the 10th and 50th percentiles of the best real match's score, and of the
    best score when the match is absent: each caltech-dev class's name over the other classes' photos
    (cosine), each two-object query over the photos without both objects (concepts)."""
    labels = [labels_of(p) for p in paths]
    classes = sorted({c for group in labels for c in group})
    samples: dict[str, tuple[list[float], list[float]]] = {"cosine": ([], []), "concepts": ([], [])}
    asked = [("cosine", c.replace("_", " "), frozenset([c])) for c in classes]
    asked += [("concepts", q, want) for kind, q, want in queries if kind == "pair"]
    for kind, query, want in asked:
        hits = collection.search(query, len(paths), min_score=0)
        present = [h.score for h in hits if labels_of(h.path) >= want]
        absent = [h.score for h in hits if not labels_of(h.path) >= want]
        samples[kind][0].append(max(present))
        samples[kind][1].append(max(absent))
    return {
        kind: (*np.percentile(present, [10, 50]), *np.percentile(absent, [10, 50]))
        for kind, (present, absent) in samples.items()
    }


def score(rank: Callable[[str, int], list[str]], queries, paths: list[str], k: int = 10) -> dict[str, float]:
    """Mean precision@k of 'describe' queries and recall@k of 'pair' queries."""
    relevant_count = {q: sum(labels >= want for labels in map(labels_of, paths)) for _, q, want in queries}
    out: dict[str, list[float]] = {}
    for kind, query, want in queries:
        hits = sum(labels_of(p) >= want for p in rank(query, k))
        value = hits / k if kind == "describe" else hits / min(k, relevant_count[query])
        out.setdefault(kind, []).append(value)
    return {kind: float(np.mean(v)) for kind, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--text-model", default="glove", choices=["glove", "minilm"])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "phrases")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"caltech-dev not found at {DATA}: skipping the phrase benchmark")
        return 0
    queries = read_queries()
    composites = make_composites(
        [w for kind, _, w in queries if kind == "pair"], DATA, args.out / "composites"
    )
    collection = build(args.out / f"db-{args.text_model}", composites, args.text_model)
    paths = collection.store.snapshot([]).paths
    kinds = sorted({kind for kind, _, _ in queries})
    print(
        f"{len(paths)} photos ({len(list(composites.glob('*/*')))} composites), {len(queries)} queries, "
        f"text space {args.text_model}"
    )
    print(f"{'method':<16}" + "".join(f"{k + (' P@10' if k == 'describe' else ' R@10'):>16}" for k in kinds))
    for name, method in (("whole phrase", whole_phrase), ("semsearch", product)):
        result = score(method(collection), queries, paths)
        print(f"{name:<16}" + "".join(f"{result[k]:16.3f}" for k in kinds))
    print("\nbest score of a text search (Collection.MIN_SCORES cuts at the present 10th percentile)")
    print(f"{'kind':<10}{'present p10':>12}{'present p50':>12}{'absent p10':>12}{'absent p50':>12}")
    for kind, values in cut_offs(collection, queries, paths).items():
        print(f"{kind:<10}" + "".join(f"{v:12.3f}" for v in values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
