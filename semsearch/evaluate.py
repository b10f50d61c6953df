"""Retrieval quality on a labelled folder, as pure functions over arrays (no I/O, no models loaded here).

* image→image precision@k: each image queries all others by feature cosine; the share of the top k with the
  query's label;
* text→image precision@k: each class name ('soccer_ball' → the text space's label vector) queries the joint
  vectors of all images; the share of the top k from that class;
* tag hit rate: share of images with any word of their true label among the words of their top-k tags
  (tags are whole names: 'soccer ball', 'German shepherd'); the name hit rate asks for a tag made only of
  label words.
For a trained head the text numbers are also split into classes it was trained on and classes held out of
training (zero-shot); the database searched is always every image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from semsearch.vectors import normalise


def image_precision(features: np.ndarray, labels: Sequence[str], k: int = 10) -> float:
    """Mean over images of the share of its k nearest other images (cosine) that share its label."""
    x = normalise(features)
    lab = np.asarray(labels)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    k = min(k, len(lab) - 1)
    if k < 1:
        return float("nan")
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return float((lab[top] == lab[:, None]).mean())


def text_precision(
    joint: np.ndarray,
    labels: Sequence[str],
    class_vectors: dict[str, np.ndarray],
    k: int = 10,
    classes: Sequence[str] | None = None,
) -> dict[str, float]:
    """Per-class precision@k of class-name queries over all images' joint vectors."""
    x = normalise(joint)
    lab = np.asarray(labels)
    out: dict[str, float] = {}
    for name in classes if classes is not None else sorted(class_vectors):
        q = class_vectors.get(name)
        if q is None:
            continue
        scores = x @ normalise(q)
        top = np.argsort(-scores, kind="stable")[:k]
        out[name] = float((lab[top] == name).mean())
    return out


def tag_hit_rate(
    tag_lists: Sequence[Sequence[str]],
    labels: Sequence[str],
    tokenize: Callable[[str], list[str]],
    whole: bool = False,
) -> float:
    """Share of images whose tags name their true label: a word of the label ('soccer_ball' → soccer, ball)
    among the words of the tags ('soccer ball'), or with `whole`, a tag made only of label words."""

    def hit(tags: Sequence[str], label: str) -> bool:
        words = set(tokenize(label))
        found = [set(tokenize(tag)) for tag in tags]
        return any(f and f <= words for f in found) if whole else any(f & words for f in found)

    hits = [hit(tags, lab) for tags, lab in zip(tag_lists, labels, strict=True)]
    return float(np.mean(hits)) if hits else float("nan")


def _mean(values: dict[str, float], names: Sequence[str] | None = None) -> float | None:
    picked = [values[n] for n in (names if names is not None else values) if n in values]
    return round(float(np.mean(picked)), 4) if picked else None


def evaluate(
    features: np.ndarray,
    labels: Sequence[str],
    joint: np.ndarray,
    class_vectors: dict[str, np.ndarray],
    tag_lists: Sequence[Sequence[str]] | None = None,
    tokenize: Callable[[str], list[str]] | None = None,
    trained_classes: Sequence[str] | None = None,
    k: int = 10,
) -> dict[str, object]:
    """All the numbers for one labelled set and one joint mapping, as a JSON-ready dict."""
    per_class = text_precision(joint, labels, class_vectors, k)
    result: dict[str, object] = {
        "images": len(labels),
        "classes": len(set(labels)),
        f"image_precision@{k}": round(image_precision(features, labels, k), 4),
        f"text_precision@{k}": _mean(per_class),
    }
    if tag_lists is not None and tokenize is not None:
        result["tag_hit_rate@5"] = round(tag_hit_rate(tag_lists, labels, tokenize), 4)
        result["tag_name_hit_rate@5"] = round(tag_hit_rate(tag_lists, labels, tokenize, whole=True), 4)
    if trained_classes is not None:
        trained = [c for c in per_class if c in set(trained_classes)]
        held = [c for c in per_class if c not in set(trained_classes)]
        result[f"text_precision@{k}_trained"] = _mean(per_class, trained)
        result[f"text_precision@{k}_heldout"] = _mean(per_class, held)
        result["trained_classes"] = len(trained)
        result["heldout_classes"] = len(held)
        if tag_lists is not None and tokenize is not None and held:
            held_set = set(held)
            rows = [i for i, lab in enumerate(labels) if lab in held_set]
            result["tag_hit_rate@5_heldout"] = round(
                tag_hit_rate([tag_lists[i] for i in rows], [labels[i] for i in rows], tokenize), 4
            )
    result["per_class_text_precision"] = {c: round(v, 4) for c, v in per_class.items()}
    return result


def evaluate_folder(
    folder,
    text_model: str = "glove",
    joint_model=None,
    k: int = 10,
    progress=None,
) -> dict[str, object]:
    """Embed (cached) a labelled folder and evaluate ConSE or a trained head on it."""
    from semsearch.encoders.head import JointHead
    from semsearch.encoders.joint import ConSE, tags, top_probabilities
    from semsearch.encoders.text import load_text_space
    from semsearch.encoders.words import tokenize
    from semsearch.errors import SemsearchError
    from semsearch.train import TrainingError, embed_folder

    data = embed_folder(folder, progress)
    rows = [i for i, lab in enumerate(data.labels) if lab]
    if not rows:
        raise TrainingError(f"{folder} has no labelled images (one sub-folder of images per class)")
    labels = [data.labels[i] for i in rows]
    if len(set(labels)) < 2:
        raise TrainingError(f"{folder} has only one class folder; evaluation needs at least 2")
    features, logits = data.features[rows], data.logits[rows]
    head = conse = None
    if joint_model is not None:
        head = JointHead.load(joint_model)
        space = load_text_space(head.space_identity)
        head.check_space(space.identity)
        joint = head.embed_images(features, logits)
        mapping = head.identity
    else:
        space = load_text_space(text_model)
        conse = ConSE(space)
        joint = conse.embed(logits)
        mapping = f"conse:{space.identity}"
    class_vectors = {}
    for name in sorted(set(labels)):
        try:  # as a search would: ConSE takes the name of a class or group ('chair') by its classes
            v = conse.named_vector(name.replace("_", " ")) if conse is not None else None
            v = space.embed_label(name) if v is None else v
        except SemsearchError:
            v = None
        if v is not None:
            class_vectors[name] = np.asarray(v, np.float32)
    tag_lists = [
        [w for w, _ in row]
        for row in tags(
            joint, 5, space=space, probabilities=top_probabilities(logits), words=head is not None
        )
    ]
    result = evaluate(
        features,
        labels,
        joint,
        class_vectors,
        tag_lists,
        tokenize,
        trained_classes=head.classes if head is not None and head.classes else None,
        k=k,
    )
    return {"folder": str(folder), "mapping": mapping, "text_model": space.identity, **result}
