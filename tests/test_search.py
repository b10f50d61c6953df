"""Words → images, image → words and mixed queries in the zero-training joint space (ConSE), on caltech-dev."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from semsearch.collection import Collection
from semsearch.errors import EmptyQueryError, UnknownWordError
from semsearch.query import Term, parse_query


def _classes(hits) -> Counter:
    return Counter(Path(h.path).parent.name for h in hits)


def test_parse_query_terms_weights_and_signs():
    assert parse_query("cat + ./photo.jpg - grass") == [
        Term(1.0, text="cat"),
        Term(1.0, image="./photo.jpg"),
        Term(-1.0, text="grass"),
    ]
    assert parse_query("2:beach - 0.5:people") == [Term(2.0, text="beach"), Term(-0.5, text="people")]
    assert parse_query("a t-shirt on a chair") == [Term(1.0, text="a t-shirt on a chair")]
    assert parse_query("-grass") == [Term(-1.0, text="grass")]
    for empty in ("", "   ", " + "):
        with pytest.raises(EmptyQueryError):
            parse_query(empty)


@pytest.mark.parametrize(
    "word, label", [("crocodile", "crocodile"), ("saxophone", "saxophone"), ("flamingo", "flamingo_head")]
)
def test_a_class_name_finds_its_photos(caltech_collection, word, label):
    with Collection(caltech_collection) as c:
        hits = c.search(word, k=10)
    assert _classes(hits)[label] >= 7, _classes(hits)


@pytest.mark.parametrize(
    "word, labels",
    [("bird", {"flamingo_head", "ibis"}), ("birds", {"flamingo_head", "ibis"}), ("reptile", {"crocodile"})],
)
def test_a_word_for_a_group_of_classes_finds_their_photos(caltech_collection, word, labels):
    """'bird' means ImageNet's 59 bird classes (WordNet): their photos, not whatever the word 'bird' is near."""
    with Collection(caltech_collection) as c:
        hits = c.search(word, k=10)
    assert sum(_classes(hits)[label] for label in labels) >= 6, _classes(hits)


def test_words_never_trained_on_still_find_related_photos(caltech_collection):
    with Collection(caltech_collection) as c:
        hits = c.search("ship", k=10)  # no 'ship' class: the ferry photos should come up
    assert _classes(hits)["ferry"] >= 5, _classes(hits)


def test_tags_of_a_photo_contain_its_label(caltech, caltech_collection):
    with Collection(caltech_collection) as c:
        for label, word in (
            ("laptop", "laptop"),
            ("soccer_ball", "soccer ball"),  # whole names, not 'soccer' and 'ball' apart
            ("llama", "llama"),
            ("nautilus", "chambered nautilus"),
            ("chair", "chair"),  # a WordNet group: rocking, folding and barber chairs
        ):
            photo = sorted((caltech / label).iterdir())[0]
            words = [w for w, _ in c.tags(str(photo), k=5)]
            assert word in words, (label, words)


def test_image_terms_pull_and_minus_terms_push(caltech, caltech_collection):
    okapi = str(sorted((caltech / "okapi").iterdir())[0])
    with Collection(caltech_collection) as c:
        plain = _classes(c.search("animal", k=20))
        pulled = _classes(c.search(f"animal + 2:{okapi}", k=20))
        base = _classes(c.search("crocodile", k=20))
        pushed = _classes(c.search("crocodile - reptile", k=20))
    assert pulled["okapi"] > plain["okapi"]
    assert pushed["crocodile"] < base["crocodile"]


def test_bad_queries_are_clear_errors(caltech_collection):
    with Collection(caltech_collection) as c:
        with pytest.raises(EmptyQueryError):
            c.search("   ")
        with pytest.raises(UnknownWordError, match="fwjwiwejiu"):
            c.search("fwjwiwejiu qqzzxv")
        with pytest.raises(EmptyQueryError, match="cancel"):
            c.search("cat - cat")
        vector, notes = c.encode_query("crocodile fwjwiwejiu")
    assert notes == ["not in the vocabulary: fwjwiwejiu"] and vector.shape == (50,)
