"""`semsearch train`: fit a small DeViSE-style head from frozen image features to text vectors.

Two sources of supervision:
  * a labelled folder (one sub-folder per class; the folder name is the label: `dining_table` → the text
    space's vector of "dining table"; a label with no known word is reported and skipped);
  * a captions TSV (image path <TAB> caption; several captions per image allowed; relative paths are
    relative to the TSV's folder).

Images are embedded once with the frozen backbone into a cache collection under
`cache_dir()/train/<hash of the folder>` (incremental: a re-run embeds nothing), then the head — dense,
batch-norm, ReLU, dropout, dense — is fitted with the cosine loss (DeViSE) or a symmetric InfoNCE loss over
the batch, on a seeded train/validation split, keeping the best checkpoint by validation loss.
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semsearch.errors import SemsearchError

HIDDEN = 512
DROPOUT = 0.3
TEMPERATURE = 0.05
CONSE_WEIGHT = 1.0  # weight of the zero-training ConSE vector blended into the head's output
LOSSES = ("cosine", "infonce")

Log = Callable[[str], None]


class TrainingError(SemsearchError):
    """The training data cannot train a model (too few classes, no images, unreadable captions)."""


@dataclass
class Embedded:
    """Frozen-backbone vectors of a folder's images, row-aligned."""

    features: np.ndarray
    logits: np.ndarray
    paths: list[str]
    labels: list[str | None]
    image_model: str
    skipped: list[tuple[str, str]] = field(default_factory=list)


def cache_collection(folder: Path) -> Path:
    """Where a folder's frozen-backbone vectors are cached."""
    from semsearch.paths import cache_dir

    folder = Path(folder).expanduser().absolute()
    return cache_dir() / "train" / hashlib.sha1(str(folder).encode()).hexdigest()[:16]


def embed_folder(
    folder: Path, progress: Callable[[int, int], None] | None = None, model: str = "lite0"
) -> Embedded:
    """Embed every image under `folder` once (cached, incremental) and return its vectors and labels."""
    from semsearch.collection import Collection

    folder = Path(folder).expanduser().absolute()
    if not folder.is_dir():
        raise TrainingError(f"{folder} is not a folder")
    with Collection(cache_collection(folder), writable=True, model=model) as collection:
        if collection.model.classifier() is None:
            raise TrainingError(
                f"{model} maps text into its image space already: the head is trained on an ImageNet "
                "model's features and class scores (lite0, lite2)"
            )
        report = collection.sync(folder, progress=progress)
        snap = collection.store.snapshot(["features", "logits"])
        prefix = str(folder) + os.sep
        keep = [i for i, p in enumerate(snap.paths) if p.startswith(prefix)]
        paths = [snap.paths[i] for i in keep]
        labels = [_label_of(p, folder) for p in paths]
        if not paths:
            raise TrainingError(f"no images in {folder} (expected one sub-folder of photos per class)")
        return Embedded(
            features=np.array(snap.vectors["features"][keep], dtype=np.float32),
            logits=np.array(snap.vectors["logits"][keep], dtype=np.float32),
            paths=paths,
            labels=labels,
            image_model=str(snap.meta.get("image_model", "")),
            skipped=list(report.skipped_files),
        )


def _label_of(path: str, folder: Path) -> str | None:
    parent = os.path.dirname(path)
    return None if os.path.abspath(parent) == str(folder) else os.path.basename(parent)


def class_halves(labels: list[str | None], half: str) -> list[str]:
    """The sorted class names of the first or second half (the first half takes the odd one out)."""
    classes = sorted({lab for lab in labels if lab})
    cut = (len(classes) + 1) // 2
    if half == "first":
        return classes[:cut]
    if half == "second":
        return classes[cut:]
    raise TrainingError(f"--classes-from-half must be 'first' or 'second', not {half!r}")


# ---------------------------------------------------------------------------------------- the head


def _build(feature_dim: int, dim: int, hidden: int = HIDDEN, dropout: float = DROPOUT):
    import torch.nn as nn

    return nn.Sequential(
        nn.Linear(feature_dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, dim),
    )


def _arrays(net) -> dict[str, np.ndarray]:
    lin1, bn, _, _, lin2 = net
    t = lambda x: x.detach().cpu().numpy().astype(np.float32)  # noqa: E731
    return {
        "w1": t(lin1.weight),
        "b1": t(lin1.bias),
        "bn_mean": t(bn.running_mean),
        "bn_var": t(bn.running_var),
        "bn_gamma": t(bn.weight),
        "bn_beta": t(bn.bias),
        "w2": t(lin2.weight),
        "b2": t(lin2.bias),
    }


def _loss(pred, target, image_ids, target_ids, kind: str):
    import torch
    import torch.nn.functional as F

    pred = F.normalize(pred, dim=-1)
    if kind == "cosine":
        return (1 - (pred * target).sum(-1)).mean()
    # symmetric InfoNCE; every pair sharing an image or a target text counts as a positive
    sims = pred @ target.T / TEMPERATURE
    positive = (image_ids[:, None] == image_ids[None, :]) | (target_ids[:, None] == target_ids[None, :])
    neg_inf = torch.finfo(sims.dtype).min

    def direction(s):
        return -(torch.logsumexp(s.masked_fill(~positive, neg_inf), 1) - torch.logsumexp(s, 1)).mean()

    return (direction(sims) + direction(sims.T)) / 2


@dataclass
class FitResult:
    arrays: dict[str, np.ndarray]
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]]
    seconds: float


def fit_head(
    features: np.ndarray,
    targets: np.ndarray,
    image_ids: np.ndarray,
    target_ids: np.ndarray,
    *,
    loss: str = "cosine",
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.2,
    seed: int = 0,
    log: Log | None = None,
) -> FitResult:
    """Fit the head on (feature, target vector) pairs; the split is by image, seeded; best by val loss."""
    import torch

    if loss not in LOSSES:
        raise TrainingError(f"unknown loss {loss!r}: use cosine or infonce")
    if epochs < 1:
        raise TrainingError("--epochs must be at least 1")
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    unique_images = np.unique(image_ids)
    # stratified by target: each target keeps ~val_fraction of its images for validation
    val_images: set[int] = set()
    first_target = {int(i): int(t) for i, t in zip(image_ids[::-1], target_ids[::-1], strict=True)}
    by_target: dict[int, list[int]] = {}
    for img in unique_images.tolist():
        by_target.setdefault(first_target[img], []).append(img)
    for imgs in by_target.values():
        imgs = rng.permutation(imgs)
        n_val = int(round(len(imgs) * val_fraction))
        if len(imgs) > 1:
            val_images.update(int(i) for i in imgs[: max(n_val, 1 if len(by_target) == 1 else n_val)])
    if not val_images:  # too few images per target: hold out a random slice overall
        pick = rng.permutation(unique_images)[: max(1, int(round(len(unique_images) * val_fraction)))]
        val_images = set(int(i) for i in pick)
    is_val = np.isin(image_ids, list(val_images))
    if is_val.all() or not is_val.any():
        raise TrainingError("too few images to split into training and validation sets")

    X = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    T = torch.nn.functional.normalize(
        torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)), dim=-1
    )
    image_index, G = (
        torch.from_numpy(image_ids.astype(np.int64)),
        torch.from_numpy(target_ids.astype(np.int64)),
    )
    train_idx = np.flatnonzero(~is_val)
    val_idx = torch.from_numpy(np.flatnonzero(is_val))
    net = _build(X.shape[1], T.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    best, best_epoch, best_arrays, history = float("inf"), 0, _arrays(net), []
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.from_numpy(rng.permutation(train_idx))
        total, batches = 0.0, 0
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            if len(idx) < 2:
                continue
            value = _loss(net(X[idx]), T[idx], image_index[idx], G[idx], loss)
            opt.zero_grad()
            value.backward()
            opt.step()
            total, batches = total + float(value.detach()), batches + 1
        sched.step()
        net.eval()
        with torch.no_grad():
            val = float(_loss(net(X[val_idx]), T[val_idx], image_index[val_idx], G[val_idx], loss))
        train_loss = total / max(batches, 1)
        history.append({"epoch": epoch, "train_loss": round(train_loss, 5), "val_loss": round(val, 5)})
        marker = ""
        if val < best:
            best, best_epoch, best_arrays, marker = val, epoch, _arrays(net), "  *best"
        if log:
            log(f"epoch {epoch:3d}/{epochs}  train {train_loss:.4f}  val {val:.4f}{marker}")
    return FitResult(best_arrays, best_epoch, best, history, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------- sources


def read_captions(tsv: Path) -> list[tuple[str, str]]:
    """(absolute image path, caption) rows of a TSV; relative paths are relative to the TSV's folder."""
    tsv = Path(tsv).expanduser().absolute()
    rows: list[tuple[str, str]] = []
    try:
        with open(tsv, encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if not row or not "".join(row).strip() or row[0].startswith("#"):
                    continue
                if len(row) < 2 or not row[1].strip():
                    if n == 1:
                        continue  # a header line or a stray first line
                    raise TrainingError(f"{tsv}:{n}: expected 'image path<TAB>caption'")
                path = Path(row[0].strip()).expanduser()
                path = path if path.is_absolute() else tsv.parent / path
                rows.append((os.path.abspath(path), " ".join("\t".join(row[1:]).split())))
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"cannot read captions {tsv}: {exc}") from None
    if not rows:
        raise TrainingError(f"{tsv} has no 'image path<TAB>caption' rows")
    return rows


@dataclass
class TrainReport:
    out: str
    source: str
    text_model: str
    loss: str
    images: int
    train_targets: list[str]
    skipped_labels: list[str]
    skipped_images: list[tuple[str, str]]
    best_epoch: int
    best_val_loss: float
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "out": self.out,
            "source": self.source,
            "text_model": self.text_model,
            "loss": self.loss,
            "images": self.images,
            "classes": self.train_targets,
            "skipped_labels": self.skipped_labels,
            "skipped_images": [{"path": p, "reason": r} for p, r in self.skipped_images],
            "best_epoch": self.best_epoch,
            "best_val_loss": round(self.best_val_loss, 6),
            "seconds": round(self.seconds, 2),
        }


def train(
    source: Path,
    out: Path,
    *,
    text_model: str = "glove",
    loss: str = "cosine",
    epochs: int = 50,
    seed: int = 0,
    classes: list[str] | None = None,
    classes_from_half: str | None = None,
    conse_weight: float = CONSE_WEIGHT,
    log: Log | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrainReport:
    """Train a head from a labelled folder or a captions TSV and save it to `out` (atomically)."""
    from semsearch.encoders.head import save_head
    from semsearch.encoders.joint import class_vectors
    from semsearch.encoders.text import load_text_space

    source = Path(source).expanduser().absolute()
    out = Path(out).expanduser().absolute()
    if loss not in LOSSES:
        raise TrainingError(f"unknown loss {loss!r}: use cosine or infonce")
    if out.is_dir():
        raise TrainingError(f"--out {out} is a directory; give a file name such as model.npz")
    if not source.exists():
        raise TrainingError(f"{source} does not exist")
    say = log or (lambda _msg: None)
    space = load_text_space(text_model)
    skipped_labels: list[str] = []
    if source.is_dir():
        data = embed_folder(source, progress)
        labels = data.labels
        wanted = set(classes or [])
        if classes_from_half:
            wanted = set(class_halves(labels, classes_from_half))
        present = sorted({lab for lab in labels if lab})
        unknown = sorted(wanted - set(present))
        if unknown:
            raise TrainingError(f"no class folder named {', '.join(unknown)} in {source}")
        chosen = [c for c in present if not wanted or c in wanted]
        vectors: dict[str, np.ndarray] = {}
        for name in chosen:
            v = space.embed_label(name)
            if v is None:
                skipped_labels.append(name)
                say(f"skipped label {name!r}: no word of it is in {space.identity}")
            else:
                vectors[name] = np.asarray(v, np.float32)
        if not data.paths:
            raise TrainingError(f"no images in {source}")
        if len(vectors) < 2:
            raise TrainingError(
                f"{source} has {len(vectors)} usable class folder(s); training needs at least 2 "
                "(one sub-folder of images per class, named by the class)"
            )
        names = sorted(vectors)
        rows = [i for i, lab in enumerate(labels) if lab in vectors]
        features = data.features[rows]
        target_ids = np.array([names.index(labels[i]) for i in rows])
        targets = np.stack([vectors[n] for n in names])[target_ids]
        image_ids = np.arange(len(rows))
        image_model, skipped_images, train_targets = data.image_model, data.skipped, names
    else:
        pairs = read_captions(source)
        root = Path(os.path.commonpath([os.path.dirname(p) for p, _ in pairs]))
        data = embed_folder(root, progress)
        row_of = {p: i for i, p in enumerate(data.paths)}
        missing = sorted({p for p, _ in pairs if p not in row_of})
        for p in missing[:10]:
            say(f"skipped caption image {p}: not found or not a readable image")
        pairs = [(p, c) for p, c in pairs if p in row_of]
        if len({p for p, _ in pairs}) < 2:
            raise TrainingError(f"{source}: fewer than 2 readable images have captions")
        captions = sorted({c for _, c in pairs})
        encode = getattr(space, "encode", None)
        if encode is not None:
            caption_vectors = encode(captions)
        else:
            caption_vectors = []
            for c in captions:
                try:
                    caption_vectors.append(space.embed_query(c))
                except SemsearchError:
                    caption_vectors.append(None)
        keep_caption = {c: v for c, v in zip(captions, caption_vectors, strict=True) if v is not None}
        dropped = [c for c in captions if c not in keep_caption]
        skipped_labels = dropped
        if dropped:
            say(f"skipped {len(dropped)} caption(s) with no known word")
        pairs = [(p, c) for p, c in pairs if c in keep_caption]
        if len({p for p, _ in pairs}) < 2:
            raise TrainingError(f"{source}: fewer than 2 images have usable captions")
        cap_index = {c: i for i, c in enumerate(sorted(keep_caption))}
        cap_matrix = np.stack([keep_caption[c] for c in sorted(keep_caption)]).astype(np.float32)
        image_index = {p: i for i, p in enumerate(sorted({p for p, _ in pairs}))}
        features = data.features[[row_of[p] for p, _ in pairs]]
        target_ids = np.array([cap_index[c] for _, c in pairs])
        targets = cap_matrix[target_ids]
        image_ids = np.array([image_index[p] for p, _ in pairs])
        image_model = data.image_model
        skipped_images = data.skipped + [(p, "not found or not a readable image") for p in missing]
        train_targets = []
    say(
        f"training on {len(np.unique(image_ids))} images, {len(np.unique(target_ids))} targets, "
        f"{space.identity}, {loss} loss, {epochs} epochs"
    )
    fit = fit_head(features, targets, image_ids, target_ids, loss=loss, epochs=epochs, seed=seed, log=say)
    arrays = dict(fit.arrays)
    if conse_weight > 0:
        arrays["class_vectors"] = class_vectors(space)
    fingerprint = hashlib.sha1(b"".join(np.ascontiguousarray(a).tobytes() for a in fit.arrays.values()))
    report = TrainReport(
        out=str(out),
        source=str(source),
        text_model=space.identity,
        loss=loss,
        images=len(np.unique(image_ids)),
        train_targets=train_targets,
        skipped_labels=skipped_labels,
        skipped_images=skipped_images,
        best_epoch=fit.best_epoch,
        best_val_loss=fit.best_val_loss,
        seconds=fit.seconds,
    )
    meta = {
        "space_identity": space.identity,
        "image_model": image_model,
        "feature_dim": int(features.shape[1]),
        "dim": int(targets.shape[1]),
        "hidden": HIDDEN,
        "bn_eps": 1e-5,
        "conse_weight": float(conse_weight),
        "classes": train_targets,
        "fingerprint": fingerprint.hexdigest()[:12],
        "report": {k: v for k, v in report.to_dict().items() if k != "skipped_images"},
        "history": fit.history,
    }
    save_head(out, arrays, meta)
    say(f"best epoch {fit.best_epoch} (val loss {fit.best_val_loss:.4f}); saved {out}")
    return report
