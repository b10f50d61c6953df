"""Descriptions with several concepts: "a crocodile next to a laptop" must find photos with a crocodile
*and* a laptop, not the photos nearest to the mean of the words, which drifts to whichever word is
strongest (or to none of them).

A description is split into concepts: content words, with the names of ImageNet classes and WordNet
groups kept whole ("soccer ball", "golden retriever", "musical instrument"). Each concept gets a
distribution over the 1000 ImageNet classes: its classes if it names a class or a group, else the
classes whose names' vectors are nearest to it in the text space. A photo shows a concept with the
probability its classifier gives those classes (the full softmax, so a second object in the frame
counts), and photos rank by the product of those probabilities over the concepts: a soft AND.

A concept that no photo of the collection shows with probability SEEN or more is left out and
reported: ImageNet classes cannot see verbs, colours or grass, and a word that nothing matches would
otherwise decide the order at random. Left with one concept, a description ranks by that concept's
joint-space cosine, as a single word always has. Mixed queries (+, -, weights, images) still combine
one vector per term.

Measured with `python bench/phrases.py` (caltech-dev + two-object composites, queries written for it):
two-object queries' recall@10 0.20 -> 0.41 with GloVe and 0.19 -> 0.50 with MiniLM; one object described
with context words, precision@10 0.45 -> 0.69 with GloVe (MiniLM, whose sentence vectors already read
descriptions well: 0.69 -> 0.65).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from semsearch.classes import class_synonyms, find_group
from semsearch.encoders.words import stop_words, tokenize

#: A concept counts when some photo shows it with at least this probability.
SEEN = 0.1
#: Floor of a photo's probability of showing a concept: below it, "not there" is all that counts, so
#: one absent concept costs a photo the same whatever the classifier's tiny probabilities say.
FLOOR = 1e-4
#: Sharpness of a non-name concept's distribution over classes (a softmax of cosines / SHARPNESS).
SHARPNESS = 0.05
#: Longest class or group name merged into one concept, in words.
LONGEST_NAME = 4


@cache
def _names() -> frozenset[str]:
    """Every multi-word class synonym, lower-case and tokenised ('soccer ball', 'golden retriever')."""
    names = {" ".join(tokenize(name)) for synonyms in class_synonyms() for name in synonyms}
    return frozenset(n for n in names if " " in n)


def _is_name(words: list[str]) -> bool:
    text = " ".join(words)
    return text in _names() or find_group(text) is not None


def split(text: str) -> list[str]:
    """The concepts of a description, in order: content words, class and group names kept whole."""
    stops = stop_words()
    words = [w for w in tokenize(text) if w.lower() not in stops]
    concepts: list[str] = []
    i = 0
    while i < len(words):
        for n in range(min(LONGEST_NAME, len(words) - i), 1, -1):
            if _is_name([w.lower() for w in words[i : i + n]]):
                concepts.append(" ".join(words[i : i + n]))
                i += n
                break
        else:
            concepts.append(words[i])
            i += 1
    return list(dict.fromkeys(concepts))


def class_distribution(concept: str, vector: np.ndarray, class_vectors: np.ndarray) -> np.ndarray:
    """(1000,) how much each ImageNet class is `concept`: its classes if it names a class or group, else
    a sharp softmax over the cosines of the class names' vectors to `vector` (the concept's)."""
    group = None if concept.isdigit() else find_group(concept)
    members = list(group.classes) if group is not None else None
    out = np.zeros(len(class_vectors), np.float32)
    if members:
        out[members] = 1.0 / len(members)
        return out
    cosine = class_vectors @ vector
    weights = np.exp((cosine - cosine.max()) / SHARPNESS)
    return (weights / weights.sum()).astype(np.float32)


def and_scores(probabilities: np.ndarray, distributions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft-AND scores of photos for concepts, and which concepts some photo shows.

    probabilities: (n, 1000) each photo's softmax over classes; distributions: (m, 1000). Returns the
    geometric mean over seen concepts of each photo's probability of showing it ((n,), in (0, 1]) and
    the (m,) mask of seen concepts (all of them when none is).
    """
    shows = probabilities @ distributions.T  # (n, m)
    seen = shows.max(axis=0) >= SEEN
    if not seen.any():
        seen[:] = True
    logs = np.log((FLOOR + shows[:, seen]) / (1 + FLOOR))  # each in (log FLOOR, 0]: scores stay <= 1
    return np.exp(logs.mean(axis=1)), seen


@dataclass(frozen=True)
class Ranking:
    """What a description comes to: the concepts photos are ranked by, the ones left out, and the
    soft-AND scores of the photos given (None when one concept is left: rank by its cosine instead)."""

    used: list[str]
    left_out: list[str]
    scores: np.ndarray | None


def rank(
    concepts: list[str],
    vectors: list[np.ndarray],
    class_vectors: np.ndarray,
    probabilities: np.ndarray,
) -> Ranking:
    """Rank photos (their (n, 1000) class probabilities) for known concepts with their text vectors."""
    distributions = np.stack(
        [class_distribution(c, v, class_vectors) for c, v in zip(concepts, vectors, strict=True)]
    )
    scores, seen = and_scores(probabilities, distributions)
    used = [c for c, s in zip(concepts, seen, strict=True) if s]
    left_out = [c for c, s in zip(concepts, seen, strict=True) if not s]
    return Ranking(used, left_out, scores if len(used) > 1 else None)
