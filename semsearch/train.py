"""`semsearch train`: learn where photos sit in a text space, and when to trust what was learnt.

Two sources of supervision:
  * a labelled folder (one sub-folder per class; the folder name is the label, read as singular words:
    `dining_tables` → "dining table", see `semsearch.labels`; a label with no known word is reported and
    skipped);
  * a captions TSV (image path <TAB> caption; several captions per image allowed; relative paths are
    relative to the TSV's folder).

Images are embedded once with the frozen image model into a cache collection under
`cache_dir()/train/<hash of the folder>` (incremental: a re-run embeds nothing). The map from pooled
features to text vectors is fitted on a seeded split of the photos (a fifth held out, stratified by class):
  * `ridge` (default): closed-form ridge regression from standardised features to each photo's mean target
    vector, the penalty chosen on the held-out photos and the map refitted on all of them. On captioned
    everyday photos it matched a contrastive MLP (0.59 vs 0.563 Recall@10) in about a second instead of
    five minutes;
  * `cosine` (DeViSE) or `infonce` (symmetric contrastive loss over the batch): a small MLP, stopped when
    the held-out photos' loss has not improved for PATIENCE epochs; the best epoch's weights are kept.
Then the gate (`semsearch.encoders.head`): the map is refitted with some classes (for captions: the photos'
top ImageNet classes) held out, and its threshold and weight are chosen where retrieval is best on
average over seen and held-out classes, among the settings that leave the held-out classes at least as
well found as ConSE alone does. When none does better, the model keeps ConSE for every photo.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semsearch.errors import SemsearchError
from semsearch.vectors import normalise

METHODS = ("ridge", "cosine", "infonce")
HIDDEN = 512
DROPOUT = 0.3
TEMPERATURE = 0.05  # InfoNCE
PATIENCE = 5  # epochs without a better held-out loss before an MLP stops
VAL_FRACTION = 0.2
RIDGE_ALPHAS = (1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)  # penalty per training photo
GATE_TEMPERATURE = 0.02  # width of the gate's soft step, in cosine units
GATE_WEIGHTS = (0.25, 0.5, 0.75, 1.0)
GATE_QUANTILES = (95, 98)  # thresholds tried: these percentiles of held-out classes' photos' similarity
GATE_FOLDS = 5
GATE_QUERIES = 1000  # queries per fold when choosing the gate (a seeded sample beyond that)
GATE_PHOTOS = 5000  # photos searched per fold (a seeded sample beyond that)
GATE_K = 10

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


# ---------------------------------------------------------------------------------------- data


@dataclass
class TrainingSet:
    """Photos and what they should map to, as arrays: one row per photo, one per target vector, one per
    (photo, target) pair."""

    features: np.ndarray  # (n, F) pooled image features
    conse: np.ndarray  # (n, d) the photos' ConSE vectors (what the gate falls back to)
    targets: np.ndarray  # (m, d) normalised text vectors: class names or captions
    image_ids: np.ndarray  # (p,) photo row of each pair
    target_ids: np.ndarray  # (p,) target row of each pair
    groups: np.ndarray  # (n,) class of each photo (for captions: its top ImageNet class)
    classes: bool  # targets are class names (scored by precision@10) rather than captions (recall@10)

    def mean_targets(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), d) mean target vector of each photo in `rows`."""
        position = np.full(len(self.features), -1)
        position[rows] = np.arange(len(rows))
        keep = position[self.image_ids] >= 0
        sums = np.zeros((len(rows), self.targets.shape[1]), np.float64)
        np.add.at(sums, position[self.image_ids[keep]], self.targets[self.target_ids[keep]])
        counts = np.bincount(position[self.image_ids[keep]], minlength=len(rows))
        return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)

    def pairs_of(self, rows: np.ndarray) -> np.ndarray:
        """Indices of the pairs whose photo is among `rows`."""
        return np.flatnonzero(np.isin(self.image_ids, rows))


def split_photos(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n,) True for the held-out photos: VAL_FRACTION of each group with two or more photos."""
    val = np.zeros(len(groups), bool)
    for g in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == g))
        if len(members) > 1:
            val[members[: max(1, int(round(len(members) * VAL_FRACTION)))]] = True
    if not val.any() and len(groups) > 1:  # one photo per group: hold out a random slice overall
        val[rng.permutation(len(groups))[: max(1, int(round(len(groups) * VAL_FRACTION)))]] = True
    if val.all() or not val.any():
        raise TrainingError("too few images to split into training and validation sets")
    return val


def classifier_groups(logits: np.ndarray) -> np.ndarray:
    """Each photo's top ImageNet class: the 'classes' of a captioned set, for stratified splits and the
    gate's held-out classes. Free, and fine-grained enough that a held-out group usually has near
    neighbours among the seen ones, as a new concept would (k-means clusters are built to be far apart,
    which made held-out photos look more novel than new photos are and set the gate too low)."""
    return np.argmax(logits, axis=1)


# ---------------------------------------------------------------------------------------- fitting


@dataclass
class Fit:
    """A fitted map: its layers (as `JointHead` reads them), the setting used (ridge penalty per photo, or
    MLP epochs), and its held-out loss."""

    kind: str
    arrays: dict[str, np.ndarray]
    setting: float
    val_loss: float = float("nan")
    history: list[dict[str, float]] = field(default_factory=list)


class Ridge:
    """Ridge regression on standardised features. It solves with the smaller Gram matrix: features ×
    features (primal) for many photos, photos × photos (dual) for few, so its cost is bounded by the
    feature width however many photos there are. One eigendecomposition serves a whole path of penalties;
    a single penalty is one linear solve."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        self.n = len(x)
        self.mean, self.scale = x.mean(0), x.std(0) + 1e-6
        z = (x - self.mean) / self.scale
        self.y_mean = y.mean(0)
        self.dual = self.n < x.shape[1]
        self.z = z if self.dual else None  # the primal solution needs only the two products below
        self.gram = z @ z.T if self.dual else z.T @ z
        self.rhs = y - self.y_mean if self.dual else z.T @ (y - self.y_mean)

    def _arrays(self, solution: np.ndarray) -> dict[str, np.ndarray]:
        w = (self.z.T @ solution if self.z is not None else solution) / self.scale[:, None]
        return {"w": w.astype(np.float32), "b": (self.y_mean - self.mean @ w).astype(np.float32)}

    def arrays(self, alpha: float) -> dict[str, np.ndarray]:
        """Weights and bias in the original feature space for the penalty alpha × photos."""
        ridge = self.gram + alpha * self.n * np.eye(len(self.gram))
        return self._arrays(np.linalg.solve(ridge, self.rhs))

    def path(self, alphas) -> list[dict[str, np.ndarray]]:
        """`arrays` for each penalty, from one eigendecomposition."""
        values, basis = np.linalg.eigh(self.gram)
        projected = basis.T @ self.rhs
        return [self._arrays(basis @ (projected / (values + a * self.n)[:, None])) for a in alphas]


def _cosine_loss(vectors: np.ndarray, data: TrainingSet, pairs: np.ndarray, rows: np.ndarray) -> float:
    """Mean 1 - cosine between photos' mapped vectors (row-aligned with `rows`) and their pairs' targets."""
    position = np.full(len(data.features), -1)
    position[rows] = np.arange(len(rows))
    mapped = normalise(vectors)[position[data.image_ids[pairs]]]
    return float(np.mean(1 - (mapped * data.targets[data.target_ids[pairs]]).sum(1)))


def fit_ridge(
    data: TrainingSet, fit_rows: np.ndarray, val_rows: np.ndarray | None, alpha: float | None, log: Log
) -> Fit:
    """Ridge map on `fit_rows`; with alpha None, the penalty with the lowest cosine loss on `val_rows`,
    then refitted on both."""
    from semsearch.encoders.head import JointHead

    ridge = Ridge(data.features[fit_rows], data.mean_targets(fit_rows))
    if alpha is not None:
        return Fit("linear", ridge.arrays(alpha), alpha)
    assert val_rows is not None
    pairs = data.pairs_of(val_rows)
    losses = {}
    for a, arrays in zip(RIDGE_ALPHAS, ridge.path(RIDGE_ALPHAS), strict=True):
        head = JointHead(arrays, _layer_meta("linear", data))
        losses[a] = _cosine_loss(head.head_vectors(data.features[val_rows]), data, pairs, val_rows)
        log(f"ridge penalty {a:g} x photos: held-out loss {losses[a]:.4f}")
    best = min(losses, key=losses.get)
    every = np.sort(np.concatenate([fit_rows, val_rows]))
    history = [{"alpha": a, "val_loss": round(v, 5)} for a, v in losses.items()]
    return Fit(
        "linear",
        Ridge(data.features[every], data.mean_targets(every)).arrays(best),
        best,
        losses[best],
        history,
    )


def _layer_meta(kind: str, data: TrainingSet) -> dict:
    """The header JointHead needs to run layers alone (during training)."""
    return {
        "space_identity": "",
        "dim": data.targets.shape[1],
        "feature_dim": data.features.shape[1],
        "head": kind,
    }


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


def fit_mlp(
    data: TrainingSet,
    fit_rows: np.ndarray,
    val_rows: np.ndarray | None,
    *,
    loss: str,
    epochs: int,
    seed: int,
    log: Log,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
) -> Fit:
    """The MLP on the pairs of `fit_rows`. With `val_rows`, stops once their loss has not improved for
    PATIENCE epochs and keeps the best epoch; without, trains exactly `epochs` epochs."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(np.ascontiguousarray(data.features, dtype=np.float32))
    targets = torch.from_numpy(np.ascontiguousarray(data.targets, dtype=np.float32))
    image_ids = torch.from_numpy(data.image_ids.astype(np.int64))
    target_ids = torch.from_numpy(data.target_ids.astype(np.int64))
    train_pairs = data.pairs_of(fit_rows)
    val_pairs = torch.from_numpy(data.pairs_of(val_rows)) if val_rows is not None else None

    def pair_loss(idx):
        i, t = image_ids[idx], target_ids[idx]
        return _loss(net(x[i]), targets[t], i, t, loss)

    net = _build(x.shape[1], targets.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    best, best_epoch, best_arrays, history = float("inf"), epochs, _arrays(net), []
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.from_numpy(rng.permutation(train_pairs))
        total, batches = 0.0, 0
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            if len(idx) < 2:
                continue
            value = pair_loss(idx)
            opt.zero_grad()
            value.backward()
            opt.step()
            total, batches = total + float(value.detach()), batches + 1
        sched.step()
        if val_pairs is None:
            continue
        net.eval()
        with torch.no_grad():
            val = float(pair_loss(val_pairs))
        train_loss = total / max(batches, 1)
        history.append({"epoch": epoch, "train_loss": round(train_loss, 5), "val_loss": round(val, 5)})
        marker = ""
        if val < best - 1e-5:
            best, best_epoch, best_arrays, marker = val, epoch, _arrays(net), "  *best"
        log(f"epoch {epoch:3d}/{epochs}  train {train_loss:.4f}  val {val:.4f}{marker}")
        if epoch - best_epoch >= PATIENCE:
            log(f"stopped: no better held-out loss for {PATIENCE} epochs")
            break
    if val_pairs is None:
        net.eval()
        return Fit("mlp", _arrays(net), epochs)
    return Fit("mlp", best_arrays, best_epoch, best, history)


def fit_map(
    data: TrainingSet,
    method: str,
    fit_rows: np.ndarray,
    val_rows: np.ndarray | None,
    setting: float | None,
    *,
    epochs: int = 50,
    seed: int = 0,
    log: Log,
) -> Fit:
    """One map by `method`: its setting (ridge penalty, MLP epochs up to `epochs`) chosen on `val_rows`
    when `setting` is None, else fixed."""
    if method == "ridge":
        return fit_ridge(data, fit_rows, val_rows, setting, log)
    if method not in METHODS:
        raise TrainingError(f"unknown method {method!r}: use {', '.join(METHODS)}")
    epochs = epochs if setting is None else int(setting)
    return fit_mlp(data, fit_rows, val_rows, loss=method, epochs=epochs, seed=seed, log=log)


# ---------------------------------------------------------------------------------------- the gate


def group_prototypes(features: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(groups, F) unit mean of each group's unit features."""
    unit = normalise(features)
    return normalise(np.stack([unit[groups == g].mean(0) for g in np.unique(groups)]))


@dataclass
class _Fold:
    """One held-out-class fold, reduced to what scoring a gate setting needs."""

    head_scores: np.ndarray  # (q, db) query · head vector
    conse_scores: np.ndarray  # (q, db) query · ConSE vector
    agreement: np.ndarray  # (db,) head vector · ConSE vector
    similarity: np.ndarray  # (db,) cosine to the nearest prototype of the fold's training classes
    relevant: np.ndarray  # (q, db)
    unseen: np.ndarray  # (q,) True for a query about held-out classes
    unseen_photos: np.ndarray  # (db,) True for a photo of a held-out class


def _folds(
    data: TrainingSet, method: str, setting: float, val: np.ndarray, seed: int, log: Log
) -> list[_Fold]:
    """Up to GATE_FOLDS refits with a share of the groups held out; each searches its held-out photos (all
    photos of held-out groups, the validation photos of the others) with the targets they pair with."""
    from semsearch.encoders.head import JointHead, prototype_similarity

    rng = np.random.default_rng(seed + 1)
    names = rng.permutation(np.unique(data.groups))
    folds = min(GATE_FOLDS, len(names))
    out = []
    for f in range(folds):
        held = np.isin(data.groups, names[f::folds])
        fit_rows = np.flatnonzero(~held & ~val)
        database = np.flatnonzero(held | val)
        if len(database) > GATE_PHOTOS:
            database = np.sort(rng.choice(database, GATE_PHOTOS, replace=False))
        if len(fit_rows) < 2 or len(database) < 2:
            continue
        fit = fit_map(data, method, fit_rows, None, setting, seed=seed, log=lambda _m: None)
        head = JointHead(fit.arrays, _layer_meta(fit.kind, data)).head_vectors(data.features[database])
        conse = data.conse[database]
        pairs = data.pairs_of(database)
        asked = np.unique(data.target_ids[pairs])
        if len(asked) > GATE_QUERIES:
            asked = np.sort(rng.choice(asked, GATE_QUERIES, replace=False))
        position = np.full(len(data.features), -1)
        position[database] = np.arange(len(database))
        query_of = np.full(len(data.targets), -1)
        query_of[asked] = np.arange(len(asked))
        pairs = pairs[query_of[data.target_ids[pairs]] >= 0]
        relevant = np.zeros((len(asked), len(database)), bool)
        relevant[query_of[data.target_ids[pairs]], position[data.image_ids[pairs]]] = True
        unseen = (relevant & held[database][None, :]).sum(1) / relevant.sum(1) > 0.5
        queries = data.targets[asked]
        protos = group_prototypes(data.features[fit_rows], data.groups[fit_rows])
        out.append(
            _Fold(
                head_scores=queries @ head.T,
                conse_scores=queries @ conse.T,
                agreement=(head * conse).sum(1),
                similarity=prototype_similarity(data.features[database], protos),
                relevant=relevant,
                unseen=unseen,
                unseen_photos=held[database],
            )
        )
        log(f"gate fold {f + 1}/{folds}: {len(asked)} queries, {int(unseen.sum())} about held-out classes")
    return out


def _quality(fold: _Fold, weight: float, tau: float | None, classes: bool) -> np.ndarray:
    """(q,) retrieval quality of each query with the gate (weight, tau): precision@10 for classes, the
    reciprocal rank of the first right photo for captions (a hit in the top 10 saturates when a caption
    describes many photos)."""
    from semsearch.encoders.head import gate_weights
    from semsearch.evaluate import first_relevant_ranks, precision_at

    g = gate_weights(fold.similarity, weight, tau, GATE_TEMPERATURE)
    norm = np.sqrt(np.maximum(g * g + (1 - g) ** 2 + 2 * g * (1 - g) * fold.agreement, 1e-12))
    scores = (g * fold.head_scores + (1 - g) * fold.conse_scores) / norm
    if classes:
        return precision_at(scores, fold.relevant, GATE_K)
    return 1.0 / first_relevant_ranks(scores, fold.relevant)


def choose_gate(
    data: TrainingSet, method: str, setting: float, val: np.ndarray, seed: int, log: Log
) -> dict[str, object]:
    """The gate (weight, tau) with the best mean of seen- and held-out-class retrieval, among those that
    find held-out classes at least as well as ConSE; weight 0 (ConSE alone) when none does."""
    folds = _folds(data, method, setting, val, seed, log)
    if not folds:
        return {"weight": 0.0, "tau": None, "temperature": GATE_TEMPERATURE, "note": "too few photos to test"}
    similarity = np.concatenate([f.similarity[f.unseen_photos] for f in folds])
    taus = [float(t) for t in np.percentile(similarity, GATE_QUANTILES)]
    settings = [(0.0, None), *((w, t) for t in taus for w in GATE_WEIGHTS)]

    def mean(values: list[np.ndarray]) -> float | None:
        joined = np.concatenate(values)
        return float(joined.mean()) if len(joined) else None

    scored = []
    for weight, tau in settings:
        quality = [_quality(f, weight, tau, data.classes) for f in folds]
        seen = mean([q[~f.unseen] for q, f in zip(quality, folds, strict=True)])
        unseen = mean([q[f.unseen] for q, f in zip(quality, folds, strict=True)])
        scored.append((weight, tau, seen, unseen))
    _, _, conse_seen, conse_unseen = scored[0]

    def overall(row) -> float:
        parts = [v for v in row[2:] if v is not None]
        return float(np.mean(parts)) if parts else 0.0

    allowed = [
        r for r in scored if conse_unseen is None or (r[3] is not None and r[3] >= conse_unseen - 1e-9)
    ]
    weight, tau, seen, unseen = max(allowed, key=overall)  # the first best: ConSE wins ties
    r4 = lambda v: None if v is None else round(v, 4)  # noqa: E731
    return {
        "weight": weight,
        "tau": None if tau is None else round(tau, 5),
        "temperature": GATE_TEMPERATURE,
        "folds": len(folds),
        "seen": r4(seen),
        "held_out": r4(unseen),
        "conse_seen": r4(conse_seen),
        "conse_held_out": r4(conse_unseen),
    }


@dataclass
class Fitted:
    """A trained joint model ready to save: layers, prototypes, gate, and how they were chosen."""

    kind: str
    arrays: dict[str, np.ndarray]
    gate: dict[str, object]
    setting: float
    val_loss: float
    history: list[dict[str, float]]
    seconds: float


def fit_joint(
    data: TrainingSet, method: str = "ridge", *, epochs: int = 50, seed: int = 0, log: Log | None = None
) -> Fitted:
    """Fit the map (setting chosen on held-out photos) and its gate (chosen on held-out classes)."""
    if method not in METHODS:
        raise TrainingError(f"unknown method {method!r}: use {', '.join(METHODS)}")
    if epochs < 1:
        raise TrainingError("--epochs must be at least 1")
    say = log or (lambda _msg: None)
    start = time.perf_counter()
    val = split_photos(data.groups, np.random.default_rng(seed))
    fit = fit_map(
        data, method, np.flatnonzero(~val), np.flatnonzero(val), None, epochs=epochs, seed=seed, log=say
    )
    gate = choose_gate(data, method, fit.setting, val, seed, say)
    arrays = {**fit.arrays, "prototypes": group_prototypes(data.features, data.groups)}
    return Fitted(fit.kind, arrays, gate, fit.setting, fit.val_loss, fit.history, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------- sources


def folder_training_set(data: Embedded, space, wanted: set[str], conse: np.ndarray, say: Log):
    """Class folders → a TrainingSet with class-name targets; also the classes and the dropped labels."""
    from semsearch.labels import label_vectors

    present = sorted({lab for lab in data.labels if lab})
    unknown = sorted(wanted - set(present))
    if unknown:
        raise TrainingError(f"no class folder named {', '.join(unknown)}")
    vectors, dropped = label_vectors(space, [c for c in present if not wanted or c in wanted])
    for name, reason in dropped.items():
        say(f"skipped label {name!r}: {reason}")
    if len(vectors) < 2:
        raise TrainingError(
            f"{len(vectors)} usable class folder(s); training needs at least 2 "
            "(one sub-folder of images per class, named by the class)"
        )
    names = sorted(vectors)
    rows = np.array([i for i, lab in enumerate(data.labels) if lab in vectors])
    target_ids = np.array([names.index(data.labels[i]) for i in rows])
    training = TrainingSet(
        features=data.features[rows],
        conse=conse[rows],
        targets=normalise(np.stack([vectors[n] for n in names])),
        image_ids=np.arange(len(rows)),
        target_ids=target_ids,
        groups=target_ids,
        classes=True,
    )
    return training, names, dropped


def caption_training_set(data: Embedded, captions, conse: np.ndarray, say: Log) -> TrainingSet:
    """Captioned photos → a TrainingSet with caption targets, grouped by their top ImageNet class."""
    used, image_ids = np.unique(captions.image_rows, return_inverse=True)
    if len(used) < 2:
        raise TrainingError("fewer than 2 readable images have usable captions")
    say(f"{len(used)} captioned photos, {len(captions.texts)} distinct captions")
    return TrainingSet(
        features=data.features[used],
        conse=conse[used],
        targets=normalise(captions.vectors),
        image_ids=image_ids,
        target_ids=captions.caption_ids,
        groups=classifier_groups(data.logits[used]),
        classes=False,
    )


@dataclass
class TrainReport:
    out: str
    source: str
    text_model: str
    method: str
    images: int
    targets: int
    train_targets: list[str]
    dropped_labels: dict[str, str]
    skipped_images: list[tuple[str, str]]
    setting: dict[str, float]
    val_loss: float
    gate: dict[str, object]
    seconds: float
    captions: dict[str, object] | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "out": self.out,
            "source": self.source,
            "text_model": self.text_model,
            "method": self.method,
            "images": self.images,
            "targets": self.targets,
            "classes": self.train_targets,
            "dropped_labels": [{"label": n, "reason": r} for n, r in self.dropped_labels.items()],
            "skipped_images": [{"path": p, "reason": r} for p, r in self.skipped_images],
            **self.setting,
            "val_loss": round(self.val_loss, 6),
            "gate": self.gate,
            "seconds": round(self.seconds, 2),
            **({"captions": self.captions} if self.captions is not None else {}),
        }


def train(
    source: Path,
    out: Path,
    *,
    text_model: str = "glove",
    method: str = "ridge",
    epochs: int = 50,
    seed: int = 0,
    classes: list[str] | None = None,
    classes_from_half: str | None = None,
    log: Log | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrainReport:
    """Train a joint model from a labelled folder or a captions TSV and save it to `out` (atomically)."""
    from semsearch.encoders.head import save_head
    from semsearch.encoders.joint import ConSE
    from semsearch.encoders.text import load_text_space

    source = Path(source).expanduser().absolute()
    out = Path(out).expanduser().absolute()
    if method not in METHODS:
        raise TrainingError(f"unknown method {method!r}: use {', '.join(METHODS)}")
    if out.is_dir():
        raise TrainingError(f"--out {out} is a directory; give a file name such as model.npz")
    if not source.exists():
        raise TrainingError(f"{source} does not exist")
    say = log or (lambda _msg: None)
    space = load_text_space(text_model)
    dropped: dict[str, str] = {}
    caption_report = None
    names: list[str] = []
    if source.is_dir():
        data = embed_folder(source, progress)
        wanted = set(class_halves(data.labels, classes_from_half) if classes_from_half else classes or [])
        training, names, dropped = folder_training_set(
            data, space, wanted, ConSE(space).embed(data.logits), say
        )
    else:
        from semsearch.captions import match_captions, read_captions

        pairs = read_captions(source)
        data = embed_folder(Path(os.path.commonpath([os.path.dirname(p) for p, _ in pairs])), progress)
        captions = match_captions(pairs, data.paths, space)
        caption_report = captions.to_dict()
        for p in captions.missing_images[:10]:
            say(f"skipped caption image {p}: not found or not a readable image")
        if captions.dropped_captions:
            say(f"skipped {len(captions.dropped_captions)} caption(s) with no known word")
        training = caption_training_set(data, captions, ConSE(space).embed(data.logits), say)
    say(
        f"training on {len(training.features)} images, {len(training.targets)} targets, "
        f"{space.identity}, {method}"
    )
    fitted = fit_joint(training, method, epochs=epochs, seed=seed, log=say)
    from semsearch.encoders.joint import class_vectors

    arrays = {**fitted.arrays, "class_vectors": class_vectors(space)}
    fingerprint = hashlib.sha1(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values()))
    setting = {"ridge_alpha": fitted.setting} if method == "ridge" else {"best_epoch": int(fitted.setting)}
    report = TrainReport(
        out=str(out),
        source=str(source),
        text_model=space.identity,
        method=method,
        images=len(training.features),
        targets=len(training.targets),
        train_targets=names,
        dropped_labels=dropped,
        skipped_images=data.skipped,
        setting=setting,
        val_loss=fitted.val_loss,
        gate=fitted.gate,
        seconds=fitted.seconds,
        captions=caption_report,
    )
    meta = {
        "space_identity": space.identity,
        "image_model": data.image_model,
        "feature_dim": int(training.features.shape[1]),
        "dim": int(training.targets.shape[1]),
        "head": fitted.kind,
        "hidden": HIDDEN,
        "bn_eps": 1e-5,
        "gate": {k: fitted.gate[k] for k in ("weight", "tau", "temperature")},
        "classes": names,
        "fingerprint": fingerprint.hexdigest()[:12],
        "report": {k: v for k, v in report.to_dict().items() if k != "skipped_images"},
        "history": fitted.history,
    }
    save_head(out, arrays, meta)
    say(f"saved {out}")
    return report
