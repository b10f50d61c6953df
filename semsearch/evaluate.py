"""Retrieval quality on a labelled folder or captioned photos, as pure functions over arrays.

* image→image precision@k: each image queries all others by feature cosine; the share of the top k with the
  query's label;
* text→image precision@k: each class name ('soccer_ball' → the text space's label vector) queries the joint
  vectors of all images; the share of the top k from that class;
* tag hit rate: share of images with any word of their true label among the words of their top-k tags
  (tags are whole names: 'soccer ball', 'German shepherd'); the name hit rate asks for a tag made only of
  label words;
* caption retrieval (captions TSV): each caption queries the captioned photos (text→image) and each photo
  queries the captions (image→text); Recall@k is the share of queries with a right answer among the top k,
  and the median rank of the first right answer (the protocol of COCO / Flickr30k retrieval, where a
  caption that describes several photos is answered by any of them).
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


QUERY_CHUNK = 1024  # queries scored at once: bounds memory to QUERY_CHUNK x items floats


def first_relevant_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """(q,) rank (1 = first) of each row's best-scored relevant column; ties count against the query, so
    constant scores never look like a hit. Every row needs at least one relevant column."""
    best = np.where(relevant, scores, -np.inf).max(axis=1)
    return 1 + ((scores >= best[:, None]) & ~relevant).sum(axis=1)


def precision_at(scores: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """(q,) share of relevant columns among each row's top k (k capped at the number of relevant ones,
    so a query with 3 right answers can score 1)."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    hits = np.take_along_axis(relevant, np.take_along_axis(top, order, 1), 1)
    cap = np.minimum(relevant.sum(axis=1), k)
    found = np.cumsum(hits, axis=1)[np.arange(len(hits)), np.maximum(cap, 1) - 1]
    return np.where(cap > 0, found / np.maximum(cap, 1), 0.0)


def retrieval_ranks(
    queries: np.ndarray, items: np.ndarray, query_ids: np.ndarray, item_ids: np.ndarray
) -> np.ndarray:
    """Rank of the first relevant item for every query that has one; (query_ids[i], item_ids[i]) are
    the relevant pairs. Scores are dot products, computed QUERY_CHUNK queries at a time."""
    asked = np.unique(query_ids)
    out = []
    for start in range(0, len(asked), QUERY_CHUNK):
        chunk = asked[start : start + QUERY_CHUNK]
        position = np.full(len(queries), -1)
        position[chunk] = np.arange(len(chunk))
        keep = position[query_ids] >= 0
        relevant = np.zeros((len(chunk), len(items)), bool)
        relevant[position[query_ids[keep]], item_ids[keep]] = True
        out.append(first_relevant_ranks(queries[chunk] @ items.T, relevant))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def recall_summary(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k for each k and the median rank, JSON-ready."""
    out = {f"R@{k}": round(float(np.mean(ranks <= k)), 4) for k in ks}
    out["median_rank"] = float(np.median(ranks))
    return out


def caption_retrieval(
    image_vectors: np.ndarray, caption_vectors: np.ndarray, image_rows: np.ndarray, caption_ids: np.ndarray
) -> dict[str, dict[str, float]]:
    """Text→image and image→text retrieval among the captioned images (rows of `image_vectors` named in
    `image_rows`) and all captions; pair i says caption `caption_ids[i]` describes image `image_rows[i]`."""
    used, item_ids = np.unique(image_rows, return_inverse=True)
    images = normalise(image_vectors[used])
    captions = normalise(caption_vectors)
    return {
        "text_to_image": recall_summary(retrieval_ranks(captions, images, caption_ids, item_ids)),
        "image_to_text": recall_summary(retrieval_ranks(images, captions, item_ids, caption_ids)),
    }


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
    captions=None,
) -> dict[str, object]:
    """Embed (cached) a folder and evaluate ConSE or a trained head on it: by its class sub-folders when
    it has two or more, and by a captions TSV when one is given."""
    from semsearch.encoders.head import JointHead
    from semsearch.encoders.joint import ConSE
    from semsearch.encoders.text import load_text_space
    from semsearch.train import TrainingError, embed_folder

    data = embed_folder(folder, progress)
    classes = {lab for lab in data.labels if lab}
    if captions is None and not classes:
        raise TrainingError(f"{folder} has no labelled images (one sub-folder of images per class)")
    if captions is None and len(classes) < 2:
        raise TrainingError(f"{folder} has only one class folder; evaluation needs at least 2")
    head = conse = None
    if joint_model is not None:
        head = JointHead.load(joint_model)
        space = load_text_space(head.space_identity)
        head.check_space(space.identity)
        joint = head.embed_images(data.features, data.logits)
        mapping = head.identity
    else:
        space = load_text_space(text_model)
        conse = ConSE(space)
        joint = conse.embed(data.logits)
        mapping = f"conse:{space.identity}"
    result: dict[str, object] = {"folder": str(folder), "mapping": mapping, "text_model": space.identity}
    if len(classes) >= 2:
        result.update(_label_report(data, joint, space, head, conse, k))
    if captions is not None:
        result["captions"] = caption_report(captions, data.paths, joint, space)
    return result


def caption_report(captions, paths: Sequence[str], joint: np.ndarray, space) -> dict[str, object]:
    """Caption retrieval for a captions TSV over embedded images (`paths`, row-aligned with `joint`), with
    what was left out of it."""
    from semsearch.captions import match_captions, read_captions

    found = match_captions(read_captions(captions), paths, space)
    return {**found.to_dict(), **caption_retrieval(joint, found.vectors, found.image_rows, found.caption_ids)}


def _label_report(data, joint: np.ndarray, space, head, conse, k: int) -> dict[str, object]:
    """The class-folder numbers, with the labels that have no vector and how folder names were read."""
    from semsearch.encoders.joint import tags, top_probabilities
    from semsearch.encoders.words import tokenize
    from semsearch.labels import label_text, label_vectors

    rows = [i for i, lab in enumerate(data.labels) if lab]
    labels = [data.labels[i] for i in rows]
    names = sorted(set(labels))
    # as a search would: ConSE takes the name of a class or group ('chair') by its classes
    class_vectors, dropped = label_vectors(space, names, conse.named_vector if conse is not None else None)
    probabilities = top_probabilities(data.logits[rows])
    tag_lists = [
        [w for w, _ in row]
        for row in tags(joint[rows], 5, space=space, probabilities=probabilities, words=head is not None)
    ]
    result = evaluate(
        data.features[rows],
        labels,
        joint[rows],
        class_vectors,
        tag_lists,
        lambda label: tokenize(label) + label_text(label).split(),
        trained_classes=head.classes if head is not None and head.classes else None,
        k=k,
    )
    result["dropped_labels"] = [{"label": n, "reason": r} for n, r in dropped.items()]
    result["labels_read_as"] = {n: label_text(n) for n in names if label_text(n) != " ".join(tokenize(n))}
    return result
