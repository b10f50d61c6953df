"""Evaluation metrics: hand-made arrays with known answers, and the ConSE baseline on caltech-dev."""

from __future__ import annotations

import os

import numpy as np
import pytest

from semsearch.evaluate import evaluate, image_precision, tag_hit_rate, text_precision


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
