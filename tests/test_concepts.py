"""Descriptions with several concepts (semsearch/concepts.py) and the text-search score cut-off, on real
photos: caltech-dev plus two-object composites made as bench/phrases.py makes them."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch import concepts
from semsearch.collection import Collection

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import phrases as bench  # noqa: E402


def test_split_keeps_names_whole_and_drops_filler() -> None:
    assert concepts.split("a soccer ball next to a chair") == ["soccer ball", "chair"]
    assert concepts.split("A photo of a golden retriever on the beach") == ["golden retriever", "beach"]
    assert concepts.split("dog, dog and DOG") == ["dog"]
    assert concepts.split("the of a") == []


@settings(max_examples=50, deadline=None)
@given(
    shown=st.lists(st.floats(0, 1), min_size=2, max_size=4),
    missing=st.integers(0, 3),
)
def test_a_photo_showing_every_concept_outranks_one_missing_any(shown: list[float], missing: int) -> None:
    """Soft AND: the same photo with one concept taken away never scores higher, and scores stay in (0, 1]."""
    m = len(shown)
    distributions = np.eye(m, 1000, dtype=np.float32)  # concept i is class i
    full = np.zeros((1, 1000), np.float32)
    full[0, :m] = np.array(shown) / max(1.0, sum(shown))
    less = full.copy()
    less[0, missing % m] = 0.0
    scores, seen = concepts.and_scores(np.concatenate([full, less]), distributions)
    assert np.all((scores > 0) & (scores <= 1))
    if seen[missing % m]:
        assert scores[0] >= scores[1]


def test_unseen_concepts_are_left_out() -> None:
    probabilities = np.zeros((3, 1000), np.float32)
    probabilities[:, 0] = [0.9, 0.1, 0.0]
    probabilities[:, 1] = [0.0, 0.8, 0.9]
    probabilities[:, 2] = 0.001  # nobody shows concept 2 with any confidence
    scores, seen = concepts.and_scores(probabilities, np.eye(3, 1000, dtype=np.float32))
    assert seen.tolist() == [True, True, False]
    assert int(np.argmax(scores)) == 1  # the only photo with both seen concepts


@pytest.fixture(scope="module")
def phrase_collection(caltech, caltech_collection, tmp_path_factory) -> Collection:
    """The session's caltech-dev collection (copied) plus the benchmark's composites."""
    queries = bench.read_queries()
    work = tmp_path_factory.mktemp("phrases")
    composites = bench.make_composites([w for kind, _, w in queries if kind == "pair"], caltech, work / "c")
    shutil.copytree(caltech_collection, work / "db")
    with Collection(work / "db", writable=True) as collection:
        collection.sync(composites)
    return Collection(work / "db")


def test_two_object_queries_find_both_objects(phrase_collection: Collection) -> None:
    """On the phrase benchmark, ranking by every concept beats the phrase's mean vector, by a margin."""
    queries = bench.read_queries()
    paths = phrase_collection.store.snapshot([]).paths
    whole = bench.score(bench.whole_phrase(phrase_collection), queries, paths)
    ours = bench.score(bench.product(phrase_collection), queries, paths)
    assert ours["pair"] >= whole["pair"] + 0.15, (ours, whole)
    assert ours["describe"] >= whole["describe"] + 0.1, (ours, whole)


def test_notes_say_which_concepts_no_photo_shows(phrase_collection: Collection) -> None:
    notes: list[str] = []
    hits = phrase_collection.search("a crocodile lying on a muddy river bank", 5, notes)
    assert all("crocodile" in h.path for h in hits)
    assert any("'muddy'" in n and "left out" in n for n in notes), notes


def test_results_under_the_cut_off_are_dropped_and_said(phrase_collection: Collection) -> None:
    every = phrase_collection.search("laptop", 50, min_score=0)
    default = phrase_collection.search("laptop", 50)
    cut = Collection.MIN_SCORES["cosine"]
    assert [h.id for h in default] == [h.id for h in every if h.score >= cut]
    notes: list[str] = []
    assert phrase_collection.search("laptop", 10, notes, min_score=1.01) == []
    assert any("no photo matches 'laptop' well" in n for n in notes), notes


def test_the_word_space_is_chosen_per_query_without_indexing_again(phrase_collection: Collection) -> None:
    """`--text-model minilm` on a GloVe collection: joint vectors come from the stored class scores."""
    root = phrase_collection.root
    before = sorted((p.name, p.stat().st_mtime_ns) for p in root.iterdir() if p.is_file())
    with Collection(root, text_model="minilm") as minilm:
        assert (
            minilm.space.identity == "minilm-l6-v2"
            and phrase_collection.space.identity != minilm.space.identity
        )
        hits = minilm.search("a laptop computer", 10, min_score=0)
    assert sum("laptop" in h.path for h in hits) >= 8
    after = sorted((p.name, p.stat().st_mtime_ns) for p in root.iterdir() if p.is_file())
    assert after == before  # nothing was embedded or written again
