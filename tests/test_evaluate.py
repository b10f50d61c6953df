"""Evaluation metrics: hand-made arrays with known answers, and the ConSE baseline on caltech-dev."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from semsearch.evaluate import (
    caption_retrieval,
    evaluate,
    first_relevant_ranks,
    image_precision,
    precision_at,
    recall_summary,
    retrieval_ranks,
    tag_hit_rate,
    text_precision,
)


def test_image_precision_counts_same_label_neighbours():
    features = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    assert image_precision(features, ["a", "a", "b", "b"], k=1) == 1.0
    assert image_precision(features, ["a", "b", "a", "b"], k=1) == 0.0
    assert image_precision(features, ["a", "a", "b", "b"], k=3) == pytest.approx(1 / 3)


def test_text_precision_per_class():
    joint = np.array([[1, 0], [1, 0.1], [0, 1], [1, -0.5]], np.float32)
    labels = ["x", "x", "y", "y"]
    scores = text_precision(joint, labels, {"x": np.array([1.0, 0]), "y": np.array([0, 1.0])}, k=2)
    assert scores == {"x": 1.0, "y": 0.5}


def test_tag_hit_rate_uses_label_words():
    from semsearch.encoders.words import tokenize

    assert tag_hit_rate([["ball", "grass"], ["cat"]], ["soccer_ball", "dog"], tokenize) == 0.5
    # tags are whole names: a word of the label among the tags' words, or (whole=True) a tag made only of
    # label words ('German shepherd' is not a 'shepherd': a crook-carrying person is)
    tag_lists, labels = (
        [["soccer ball"], ["German shepherd", "dog"], ["dog"]],
        ["soccer_ball", "shepherd", "cat"],
    )
    assert tag_hit_rate(tag_lists, labels, tokenize) == 2 / 3
    assert tag_hit_rate(tag_lists, labels, tokenize, whole=True) == 1 / 3


def test_evaluate_splits_trained_and_held_out():
    joint = np.eye(3, dtype=np.float32)
    result = evaluate(
        joint, ["a", "b", "c"], joint, {n: joint[i] for i, n in enumerate("abc")}, trained_classes=["a"], k=1
    )
    assert result["text_precision@1_trained"] == 1.0 and result["text_precision@1_heldout"] == 1.0
    assert result["trained_classes"] == 1 and result["heldout_classes"] == 2


def test_conse_baseline_on_caltech(caltech_collection):
    """The no-training numbers the README quotes: image→image ≥ 0.90, class name→image ≥ 0.70."""
    from semsearch.collection import Collection
    from semsearch.encoders.joint import ConSE
    from semsearch.encoders.words import load_words

    with Collection(caltech_collection) as c:
        snap = c.store.snapshot(["features", "logits"])
        labels = [os.path.basename(os.path.dirname(p)) for p in snap.paths]
        features, logits = np.array(snap.vectors["features"]), np.array(snap.vectors["logits"])
    glove = load_words()
    queries = {n: glove.embed_label(n) for n in set(labels)}
    result = evaluate(features, labels, ConSE(glove).embed(logits), queries)
    assert result["image_precision@10"] >= 0.90
    assert result["text_precision@10"] >= 0.70


def test_first_relevant_rank_counts_ties_against_the_query():
    scores = np.array([[0.9, 0.5, 0.7, 0.1], [0.2, 0.2, 0.2, 0.2], [0.1, 0.9, 0.3, 0.9]])
    relevant = np.array([[0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 0, 0]], bool)
    assert first_relevant_ranks(scores, relevant).tolist() == [2, 4, 2]


def test_precision_at_caps_k_at_the_relevant_count():
    scores = np.tile([0.9, 0.8, 0.7, 0.1], (3, 1))
    relevant = np.array([[1, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], bool)
    assert precision_at(scores, relevant, 3).tolist() == [1.0, 0.5, 0.0]  # plain P@3: 1/3, 2/3, 0
    assert precision_at(scores, relevant, 1).tolist() == [1.0, 1.0, 0.0]


def test_caption_retrieval_on_known_vectors():
    """Three photos, four captions: 'cat' twice (photo 0 and its duplicate 2), 'dog' and a caption that
    matches nothing well; ranks worked out by hand."""
    images = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0.1]], np.float32)
    captions = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0]], np.float32)
    image_rows = np.array([0, 2, 1, 1, 0])
    caption_ids = np.array([0, 0, 1, 2, 3])
    result = caption_retrieval(images, captions, image_rows, caption_ids)
    # text→image: cat → photo 0 rank 1; dog → 1; caption 2 ~ photo 2 first (0.1), its photo 1 second;
    # caption 3 → photo 1 (0.8) above its photo 0 (0.6): rank 2
    assert result["text_to_image"] == {"R@1": 0.5, "R@5": 1.0, "R@10": 1.0, "median_rank": 1.5}
    # image→text: photo 0 → cat 1st; photo 1 → dog 1st; photo 2 → cat 1st
    assert result["image_to_text"] == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "median_rank": 1.0}


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float32, (7, 5), elements=st.floats(-1, 1, width=32)),
    arrays(np.float32, (9, 5), elements=st.floats(-1, 1, width=32)),
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 8)), min_size=1, max_size=20),
    st.integers(1, 4),
)
def test_retrieval_ranks_match_a_plain_loop(queries, items, pairs, chunk):
    """Chunked, vectorised ranks equal ranks counted one query at a time, for any vectors and pairs."""
    import semsearch.evaluate as ev

    query_ids, item_ids = (np.array(side) for side in zip(*pairs, strict=True))
    expected = []
    for q in np.unique(query_ids):
        scores = items @ queries[q]
        mine = set(item_ids[query_ids == q].tolist())
        best = max(scores[i] for i in mine)
        expected.append(1 + sum(1 for i in range(len(items)) if i not in mine and scores[i] >= best))
    old, ev.QUERY_CHUNK = ev.QUERY_CHUNK, chunk
    try:
        got = retrieval_ranks(queries, items, query_ids, item_ids)
    finally:
        ev.QUERY_CHUNK = old
    assert got.tolist() == expected
    summary = recall_summary(got, (1, 9))
    assert summary["R@9"] == 1.0 and summary["R@1"] == pytest.approx(np.mean(got == 1), abs=1e-4)


def test_eval_captions_cli_on_unlabelled_photos_and_bad_files(small_photos, tmp_path, capsys):
    """Caption retrieval on a flat folder of photos (no class folders); a malformed TSV or one whose
    photos are all elsewhere is a one-line error."""
    import json
    import shutil

    from semsearch.cli import main

    flat = tmp_path / "flat"
    flat.mkdir()
    lines = []
    for path in sorted(small_photos.rglob("*.jpg")):
        shutil.copy2(path, flat / f"{path.parent.name}-{path.name}")
        lines.append(f"flat/{path.parent.name}-{path.name}\tphoto of a {path.parent.name.replace('_', ' ')}")
    lines.append("flat/missing.jpg\ta photo that is not there")
    tsv = tmp_path / "captions.tsv"
    tsv.write_text("\n".join(lines) + "\n")
    main(["eval", str(flat), "--captions", str(tsv), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert "classes" not in result and result["captions"]["caption_images"] == 12
    assert result["captions"]["missing_images"] == 1 and result["captions"]["text_to_image"]["R@1"] >= 2 / 3
    main(["eval", str(flat), "--captions", str(tsv)])
    assert "captions text_to_image R@10" in capsys.readouterr().out
    bad = tmp_path / "bad.tsv"
    for content, message in (
        ("flat/a.jpg\tfine\nno tab on this line\n", "bad.tsv:2: expected"),
        ("elsewhere/a.jpg\ta cat\n", "no caption both names an image"),
    ):
        bad.write_text(content)
        with pytest.raises(SystemExit) as info:
            main(["eval", str(flat), "--captions", str(bad)])
        err = capsys.readouterr().err
        assert info.value.code == 1 and message in err and err.count("\n") == 1, err
