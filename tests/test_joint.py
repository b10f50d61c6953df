"""ConSE joint space and tags, on real GloVe vectors and real EfficientNet-Lite0 logits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from semsearch.classes import class_groups, class_synonyms, resolve_class
from semsearch.encoders import joint
from semsearch.encoders.joint import ConSE, class_vectors, tag_vocabulary, tags, top_probabilities
from semsearch.encoders.words import load_words


@pytest.fixture(scope="module")
def glove():
    return load_words()


@pytest.fixture(scope="module")
def conse(glove):
    return ConSE(glove)


@pytest.fixture(scope="module")
def chelsea_logits():
    import skimage.data

    from semsearch.encoders.efficientnet import EfficientNetLite

    pixels = np.asarray(
        Image.fromarray(skimage.data.chelsea()).convert("RGB").resize((224, 224), Image.BILINEAR)
    )
    return EfficientNetLite("lite0", runtime="torch").encode(pixels[None])["logits"]


def test_top_probabilities_keep_top_t():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 1000)).astype(np.float32)
    p = top_probabilities(logits, 10)
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert ((p > 0).sum(axis=1) == 10).all()
    assert (np.argmax(p, axis=1) == np.argmax(logits, axis=1)).all()


def test_conse_vectors_are_normalised(conse):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3, size=(5, 1000)).astype(np.float32)
    x = conse.embed(logits)
    assert x.shape == (5, 50) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert conse.identity == "conse-t10:glove-6b-50d+abtt3" and conse.dim == 50


def test_confident_logits_give_the_class_vector(conse, glove):
    logits = np.zeros((1, 1000), np.float32)
    logits[0, resolve_class("zebra")] = 50.0
    assert np.allclose(conse.embed(logits)[0], glove.vector("zebra"), atol=1e-4)


def test_class_vector_is_nearest_its_own_name(glove):
    vectors = class_vectors(glove)
    assert vectors.shape == (1000, 50)
    for name in ("zebra", "goldfish", "airliner", "banana", "volcano", "umbrella"):
        c = resolve_class(name)
        assert glove.nearest(vectors[c], 1)[0][0] == name
    # multi-word classes: the class is near the words of its name
    c = resolve_class("tabby")
    near = [w for w, _ in glove.nearest(vectors[c], 5)]
    assert "tabby" in near or "cat" in near


def _fragments() -> set[str]:
    """Words of multi-word class or group names that name nothing on their own ('german', 'little')."""
    names = {n.lower() for syns in class_synonyms() for n in syns} | {g.name.lower() for g in class_groups()}
    return {w for n in names if " " in n for w in n.split()} - names


def test_tag_vocabulary_is_whole_names_then_clean_words(glove):
    words, vectors = tag_vocabulary(glove)
    assert len(words) == vectors.shape[0] > 10000
    assert not {"the", "and", "of", "2010", "us", "said"} & set(words)
    assert {"German shepherd", "Siamese cat", "dog", "bird", "cat", "zebra"} <= set(words)
    assert "tree" in words  # a plain word, for trained heads
    assert len({w.lower() for w in words}) == len(words)
    norms = np.linalg.norm(vectors, axis=1)  # 0: a class name GloVe lacks ('komondor'), a tag by probability
    assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0)) and (norms == 0).sum() < 50


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 999), min_size=1, max_size=4), st.floats(0.5, 30.0))
def test_tags_are_never_fragments_of_names(conse, classes, peak):
    """Whatever the classifier says, tags are whole names or plain words, never a piece of a name."""
    logits = np.random.default_rng(sum(classes)).normal(size=(1, 1000)).astype(np.float32)
    logits[0, classes] += peak
    found = [w.lower() for w, _ in conse.tags(logits, 8)[0]]
    assert len(found) == 8
    assert not set(found) & _fragments(), found


def test_a_breed_is_tagged_with_its_name_and_its_groups(conse):
    logits = np.zeros((1, 1000), np.float32)
    logits[0, resolve_class("German shepherd")] = 12.0
    found = [w for w, _ in conse.tags(logits, 5)[0]]
    assert found[0] == "German shepherd"
    assert "dog" in found, found


def test_chelsea_is_tagged_cat(conse, glove, chelsea_logits):
    top_class = int(np.argmax(chelsea_logits[0]))
    assert "cat" in " ".join(class_synonyms()[top_class]).lower()
    found = conse.tags(chelsea_logits, 5)[0]
    assert len(found) == 5
    assert "cat" in [w for w, _ in found]
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)
    # plain cosine tags (no probabilities) work on joint vectors alone
    plain = tags(conse.embed(chelsea_logits), 10, space=glove)[0]
    assert len(plain) == 10


def test_class_vectors_cached_per_space(glove):
    assert class_vectors(glove) is class_vectors(glove)
    assert joint.stop_words() and "the" in joint.stop_words()
