"""Image → text space with no training: ConSE (Norouzi et al. 2014), and tags grounded in ImageNet classes.

ConSE: an image's text-space vector is the probability-weighted mean of the text vectors of its top-T
ImageNet classes (softmax of the 1000 logits, weights renormalised over the top T).

Tags: words from a vocabulary of common concrete words, scored by a blend of (a) the ConSE probability mass
of the classes whose names contain the word and (b) the cosine of the word to the image's joint vector,
so tags stay grounded in what the classifier saw rather than drifting to rare neighbours of the mean.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import numpy as np

from semsearch.classes import class_synonyms
from semsearch.encoders.words import WordVectors, stop_words, tokenize
from semsearch.paths import cache_dir, write_atomically
from semsearch.vectors import normalise

TOP_T = 10
TAG_VOCAB_SIZE = 40000  # most frequent GloVe words considered as tags (GloVe's file order is by frequency)
TAG_BLEND = 0.9  # weight of class-grounded score vs cosine in tag scores
_VERSION = "1"


# ---------------------------------------------------------------- helpers


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def top_probabilities(logits: np.ndarray, top: int = TOP_T) -> np.ndarray:
    """(n, 1000) softmax probabilities kept only for each row's top `top` classes, renormalised to sum 1."""
    p = softmax(np.atleast_2d(logits))
    top = min(top, p.shape[1])
    idx = np.argpartition(-p, top - 1, axis=1)[:, :top]
    out = np.zeros_like(p)
    rows = np.arange(p.shape[0])[:, None]
    out[rows, idx] = p[rows, idx]
    return out / out.sum(axis=1, keepdims=True)


def _cached_array(name: str, build) -> np.ndarray:
    """An array kept in cache_dir()/joint/<name>.npy, built once (atomic write)."""
    path = cache_dir() / "joint" / f"{name}.npy"
    try:
        return np.load(path)
    except (OSError, ValueError):
        pass
    array = np.ascontiguousarray(build(), dtype=np.float32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a path
            np.save(f, array)

    write_atomically(path, write)
    return array


def _key(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _classes_key() -> str:
    return _key(repr(class_synonyms()))


def _is_word_space(space) -> bool:
    return isinstance(space, WordVectors)


def _encode_texts(space, texts: list[str]) -> np.ndarray:
    """Sentence vectors of many texts at once (sentence encoders only)."""
    return space.encode(texts)


# ---------------------------------------------------------------- class vectors


COMMON_RANK = 100000  # a synonym other than the first is used only if all its words are this common


@cache
def _common_ranks() -> dict[str, int]:
    from semsearch.encoders.words import load_words

    words = load_words().words
    return {w: i for i, w in enumerate(words[:COMMON_RANK])}


def _class_names(synonyms: tuple[str, ...]) -> list[str]:
    """Common names of a class: the first synonym, and the others whose words are all common English
    (drops Latin binomials such as 'Tinca tinca' or 'Crocodylus niloticus')."""
    ranks = _common_ranks()
    rest = [s for s in synonyms[1:] if tokenize(s) and all(t in ranks for t in tokenize(s))]
    return [synonyms[0], *rest]


def _glove_class_vector(space: WordVectors, synonyms: tuple[str, ...]) -> np.ndarray:
    """Mean over the class's common names of each name's phrase vector; first name counts double."""
    vectors, weights = [], []
    for i, name in enumerate(_class_names(synonyms)):
        v = space.embed_words(tokenize(name))
        if v is not None:
            vectors.append(v)
            weights.append(2.0 if i == 0 else 1.0)
    if not vectors:
        return np.zeros(space.dim, np.float32)
    return normalise(np.average(np.stack(vectors), axis=0, weights=weights))


def class_vectors(space) -> np.ndarray:
    """(1000, d) normalised text vector of each ImageNet class (zero row if no name of it is known)."""
    return _class_vectors(space.identity, _SPACES_BY_ID.setdefault(space.identity, space))


_SPACES_BY_ID: dict[str, object] = {}


@cache
def _class_vectors(identity: str, space) -> np.ndarray:
    if _is_word_space(space):
        return np.stack([_glove_class_vector(space, syn) for syn in class_synonyms()])

    def build() -> np.ndarray:
        rows, owners, weights = [], [], []
        for c, syn in enumerate(class_synonyms()):
            for i, name in enumerate(_class_names(syn)):
                rows.append(name)
                owners.append(c)
                weights.append(2.0 if i == 0 else 1.0)
        enc = _encode_texts(space, rows) * np.asarray(weights, np.float32)[:, None]
        out = np.zeros((len(class_synonyms()), enc.shape[1]), np.float32)
        np.add.at(out, np.asarray(owners), enc)
        return normalise(out)

    return _cached_array(f"classes-{identity}-{_key(_VERSION, _classes_key())}", build)


class ConSE:
    """Convex combination of semantic embeddings: logits (n, 1000) → (n, d) normalised text-space vectors."""

    def __init__(self, space, top: int = TOP_T):
        self.space = space
        self.top = top
        self.dim = int(space.dim)
        self.identity = f"conse-t{top}:{space.identity}"
        self.class_vectors = class_vectors(space)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return top_probabilities(logits, self.top)

    def embed(self, logits: np.ndarray) -> np.ndarray:
        return normalise(self.probabilities(logits) @ self.class_vectors)

    def tags(self, logits: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k tag words of each image, grounded in its class probabilities."""
        p = self.probabilities(logits)
        return tags(normalise(p @ self.class_vectors), k, space=self.space, probabilities=p)


# ---------------------------------------------------------------- tags


def _good_tag(word: str, stops: frozenset[str]) -> bool:
    return len(word) >= 3 and word.isalpha() and word.isascii() and word not in stops


HEAD_WEIGHT, MODIFIER_WEIGHT = 1.0, 0.5  # 'african crocodile': crocodile names the thing, african does not
FIRST_NAME_WEIGHT, OTHER_NAME_WEIGHT = 1.0, 0.6  # 'dragonfly' over its synonym 'mosquito hawk'


@cache
def _class_tokens() -> tuple[dict[str, float], ...]:
    """Tag-worthy tokens of each class's common names, each with how strongly it names the class."""
    stops = stop_words()
    out = []
    for syn in class_synonyms():
        weights: dict[str, float] = {}
        for j, name in enumerate(_class_names(syn)):
            toks = tokenize(name)
            for i, t in enumerate(toks):
                if not _good_tag(t, stops):
                    continue
                w = (HEAD_WEIGHT if i == len(toks) - 1 else MODIFIER_WEIGHT) * (
                    FIRST_NAME_WEIGHT if j == 0 else OTHER_NAME_WEIGHT
                )
                weights[t] = max(weights.get(t, 0.0), w)
        out.append(weights)
    return tuple(out)


def _vocabulary_words(space) -> list[str]:
    stops = stop_words()
    words = dict.fromkeys(t for toks in _class_tokens() for t in toks)
    if _is_word_space(space):
        words = {w: None for w in words if w in space}
        for w in space.words[:TAG_VOCAB_SIZE]:
            if _good_tag(w, stops):
                words.setdefault(w, None)
    else:  # a sentence encoder knows every word: take the common words from the packaged GloVe list
        from semsearch.encoders.words import load_words

        for w in load_words().words[:TAG_VOCAB_SIZE]:
            if _good_tag(w, stops):
                words.setdefault(w, None)
    return list(words)


_VOCABS: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {}


def _vocab(space) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(words, vectors, class→word membership (1000, V) float32)."""
    if space.identity in _VOCABS:
        return _VOCABS[space.identity]
    words = _vocabulary_words(space)
    if _is_word_space(space):
        vectors = np.asarray(space.vectors[[space.index_of(w) for w in words]], dtype=np.float32)
    else:
        key = _key(_VERSION, str(TAG_VOCAB_SIZE), *words[:50], str(len(words)))
        vectors = _cached_array(f"tags-{space.identity}-{key}", lambda: _encode_texts(space, words))
    position = {w: i for i, w in enumerate(words)}
    member = np.zeros((len(class_synonyms()), len(words)), np.float32)
    for c, toks in enumerate(_class_tokens()):
        for t, w in toks.items():
            if t in position:
                member[c, position[t]] = w
    _VOCABS[space.identity] = (words, vectors, member)
    return _VOCABS[space.identity]


def tag_vocabulary(space) -> tuple[list[str], np.ndarray]:
    """Common concrete words usable as tags, and their (V, d) normalised vectors in `space`."""
    words, vectors, _ = _vocab(space)
    return words, vectors


def tags(
    joint_vectors: np.ndarray,
    k: int = 5,
    space=None,
    probabilities: np.ndarray | None = None,
    blend: float = TAG_BLEND,
) -> list[list[tuple[str, float]]]:
    """Top-k tags of each joint vector: cosine to the tag vocabulary, blended with the class probability
    mass behind each word when `probabilities` ((n, 1000), e.g. ConSE.probabilities) are given. A k past
    the vocabulary's size gives every tag."""
    if space is None:
        from semsearch.encoders.words import load_words

        space = load_words()
    words, vectors, member = _vocab(space)
    k = min(k, len(words))
    q = normalise(np.atleast_2d(joint_vectors))
    scores = q @ vectors.T
    if probabilities is not None:
        grounded = np.minimum(np.atleast_2d(probabilities) @ member, 1.0)
        scores = blend * grounded + (1 - blend) * scores
    out = []
    for row in scores:
        top = np.argpartition(-row, k - 1)[:k]
        top = top[np.argsort(-row[top], kind="stable")]
        out.append([(words[i], float(row[i])) for i in top])
    return out
