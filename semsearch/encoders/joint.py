"""Image → text space with no training: ConSE (Norouzi et al. 2014), and tags grounded in ImageNet classes.

ConSE: an image's text-space vector is the probability-weighted mean of the text vectors of its top-T
ImageNet classes (softmax of the 1000 logits, weights renormalised over the top T).

Tags: whole names, never pieces of them ('German shepherd', not 'german'): the classes' names and the
names of their WordNet groups ('dog', 'bird', 'chair'; one common word each, see classes.py), scored by a
blend of (a) the probability mass of the classes a name covers and (b) the cosine of the name to the image's
joint vector, so tags stay grounded in what the classifier saw. A trained head also gets the common words,
by cosine. Measured on caltech-dev (int8 features; tag hit@5, a label word among the words of the top 5
tags): ConSE 0.473 with the old word tags, 0.475 with names (0.470 with every group name a tag, taxonomic
ones such as 'single-reed instrument' included; 0.432 if nested groups are not skipped); a head trained on
the first 15 classes 0.536 → 0.551 (0.523 at the old blend 0.9, where ConSE gives 0.476).
"""

from __future__ import annotations

import hashlib
import math
from functools import cache
from pathlib import Path

import numpy as np

from semsearch.classes import class_groups, class_synonyms, find_group
from semsearch.encoders.words import WordVectors, stop_words, tokenize
from semsearch.paths import cache_dir, write_atomically
from semsearch.vectors import normalise

TOP_T = 10
TAG_VOCAB_SIZE = 40000  # most frequent GloVe words considered as tags (GloVe's file order is by frequency)
TAG_BLEND = 0.85  # weight of class-grounded score vs cosine in tag scores
_VERSION = "1"


# ---------------------------------------------------------------- helpers


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities, in float32 and in place on one copy: a phrase query takes it over thousands of
    candidates' 1,000 logits (float64 took 0.23 s of a 1 s CLI query for 5,000 photos)."""
    z = np.array(logits, dtype=np.float32)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


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
    """Built once per machine and word space, then read (a GloVe build takes ~0.4 s of every CLI query)."""

    def build_words() -> np.ndarray:
        return np.stack([_glove_class_vector(space, syn) for syn in class_synonyms()])

    def build_sentences() -> np.ndarray:
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

    build = build_words if _is_word_space(space) else build_sentences
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

    def named_vector(self, text: str) -> np.ndarray | None:
        """For the name of an ImageNet class or of a WordNet group of them ('dog', 'birds'), the mean of
        its classes' vectors; None for other text. Images here are mixes of class vectors, so a bird photo
        sits near the bird classes' names and not near the word 'bird' (caltech-dev, P@10 of the photos of
        the right folders for 18 such words: 0.59 with the word vector, 0.86 with this)."""
        if text.strip().isdigit():  # a number in a search is a word, not a class index
            return None
        group = find_group(text)
        if group is None:
            return None
        return normalise(self.class_vectors[list(group.classes)].mean(axis=0))

    def phrase(self, text: str) -> tuple[np.ndarray, list[str]]:
        """As the text space's phrase(): a query vector and its unknown words, for a class or group name
        its classes' mean vector."""
        vector = self.named_vector(text)
        return (vector, []) if vector is not None else self.space.phrase(text)

    def tags(self, logits: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k tag words of each image, grounded in its class probabilities."""
        p = self.probabilities(logits)
        return tags(normalise(p @ self.class_vectors), k, space=self.space, probabilities=p)


# ---------------------------------------------------------------- tags


def _good_tag(word: str, stops: frozenset[str]) -> bool:
    return len(word) >= 3 and word.isalpha() and word.isascii() and word not in stops


OTHER_NAME_WEIGHT = 0.6  # 'sax' first, its synonym 'saxophone' after
TAG_GROUP_RANK = 20000  # a group is a tag when its name is one word among the 20,000 most frequent


@cache
def _tag_names() -> tuple[tuple[str, ...], np.ndarray, dict[int, frozenset[int]]]:
    """Whole names that can be tags, (1000, names) how strongly each class is each name, and the classes
    of each name that is a WordNet group (by its position).

    A class is named by its display name (1.0) and its other common one-word names (OTHER_NAME_WEIGHT).
    A group holds each member class with weight (1 - log|group| / log 1000)^2, so its score (its members'
    summed probability, scaled) passes one breed's only when several breeds share the probability, and
    the broadest groups ('organism', 'animal') come last."""
    n = len(class_synonyms())
    rows: dict[str, dict[int, float]] = {}
    shown: dict[str, str] = {}
    groups: dict[str, frozenset[int]] = {}

    def add(name: str, classes: tuple[int, ...], weight: float) -> None:
        shown.setdefault(name.lower(), name)
        row = rows.setdefault(name.lower(), {})
        for c in classes:
            row[c] = max(row.get(c, 0.0), weight)

    for c, synonyms in enumerate(class_synonyms()):
        for j, name in enumerate(_class_names(synonyms)):
            if j == 0 or " " not in name:
                add(name, (c,), 1.0 if j == 0 else OTHER_NAME_WEIGHT)
    ranks = _common_ranks()
    for group in class_groups():
        if " " not in group.name and ranks.get(group.name, TAG_GROUP_RANK) < TAG_GROUP_RANK:
            add(group.name, group.classes, (1.0 - math.log(len(group.classes)) / math.log(n)) ** 2)
            groups[group.name.lower()] = groups.get(group.name.lower(), frozenset()) | set(group.classes)
    member = np.zeros((n, len(rows)), np.float32)
    for t, row in enumerate(rows.values()):
        member[list(row), t] = list(row.values())
    position = {key: t for t, key in enumerate(rows)}
    return tuple(shown[key] for key in rows), member, {position[key]: c for key, c in groups.items()}


def tag_names() -> tuple[tuple[str, ...], np.ndarray]:
    """The whole names tags are made of (class names, then one-word WordNet group names) and a (1000, names)
    boolean matrix of the classes each name holds: what names a set of photos ('dog', 'laptop')."""
    names, member, _ = _tag_names()
    return names, member > 0


def _vocabulary_words(space) -> list[str]:
    """The whole names first, then the common words (a trained head's vectors land near any word)."""
    stops = stop_words()
    names = list(_tag_names()[0])
    taken = {n.lower() for n in names}
    if _is_word_space(space):
        common = space.words[:TAG_VOCAB_SIZE]
    else:  # a sentence encoder knows every word: take the common words from the packaged GloVe list
        from semsearch.encoders.words import load_words

        common = load_words().words[:TAG_VOCAB_SIZE]
    return names + [w for w in common if _good_tag(w, stops) and w not in taken]


_VOCABS: dict[str, tuple[list[str], np.ndarray]] = {}


def tag_vocabulary(space) -> tuple[list[str], np.ndarray]:
    """Whole class and group names, then common words, usable as tags, and their (V, d) vectors in `space`."""
    if space.identity not in _VOCABS:
        words = _vocabulary_words(space)
        if _is_word_space(space):
            rows = [space.embed_words(tokenize(w)) for w in words]
            vectors = np.stack([np.zeros(space.dim, np.float32) if v is None else v for v in rows])
        else:
            key = _key(_VERSION, str(TAG_VOCAB_SIZE), *words[:50], str(len(words)))
            vectors = _cached_array(f"tags-{space.identity}-{key}", lambda: _encode_texts(space, words))
        _VOCABS[space.identity] = (words, vectors)
    return _VOCABS[space.identity]


def tags(
    joint_vectors: np.ndarray,
    k: int = 5,
    space=None,
    probabilities: np.ndarray | None = None,
    blend: float = TAG_BLEND,
    words: bool = False,
) -> list[list[tuple[str, float]]]:
    """Top-k tags of each joint vector: whole class and group names by cosine, blended with the class
    probability mass behind each name when `probabilities` ((n, 1000), e.g. ConSE.probabilities) are given.
    A k past the vocabulary's size gives every tag.

    `words` adds the common words, by cosine alone: for a trained head, whose vectors land near the words
    it was taught ('menorah'); a ConSE vector is a mix of class names, and its nearest words are pieces of
    them ('german') or their neighbours ('casino' for a flamingo). A group is left out when a group above
    or below it ranks higher: 'dog' and not also 'canine', 'carnivore', 'mammal'."""
    if space is None:
        from semsearch.encoders.words import load_words

        space = load_words()
    vocabulary, vectors = tag_vocabulary(space)
    names, member, _ = _tag_names()
    if not words:  # the names come first
        vectors = vectors[: len(names)]
    scores = normalise(np.atleast_2d(joint_vectors)) @ vectors.T
    if probabilities is not None:
        scores *= 1 - blend
        scores[:, : len(names)] += blend * np.minimum(np.atleast_2d(probabilities) @ member, 1.0)
    return [[(vocabulary[i], float(row[i])) for i in _pick(row, k)] for row in scores]


def _pick(scores: np.ndarray, k: int) -> list[int]:
    """The k best tags by score, skipping a group nested in (or holding) a better-scoring group."""
    covers = _tag_names()[2]
    m = min(len(scores), 4 * k + 20)
    top = np.argpartition(-scores, m - 1)[:m]
    chosen: list[int] = []
    for i in top[np.argsort(-scores[top], kind="stable")].tolist():
        group = covers.get(i)
        if group is None or not any(
            c in covers and (group <= covers[c] or covers[c] <= group) for c in chosen
        ):
            chosen.append(i)
        if len(chosen) == k:
            break
    return chosen
