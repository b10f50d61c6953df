"""Caption training and caption retrieval on caltech-dev, with hand-written captions (no captioned photo set
exists here; see bench/caltech_captions.py for what the captions are and are not).

Each protocol is printed with its no-training baseline (ConSE) measured in the same run:
  * new photos, new wording: train on the even-numbered photos of every class with the first five
    captions of each class; test on the odd-numbered photos with the other three captions (wording never
    trained on). Once more with two label-derived captions added to training ('a photo of a crocodile',
    'crocodile');
  * held-out classes: train as above on 15 classes only, test on the other 15 (concepts the map never
    saw: the gate must keep ConSE's answers for them), both ways round.
Then the time `semsearch train` takes to fit on 6,000 photos once features exist: caltech-dev's features
repeated five times with small noise (feature-space copies), five captions each.

    python bench/captions.py [--text-models glove minilm] [--methods ridge cosine infonce] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from caltech_captions import CAPTIONS, TRAIN_CAPTIONS

from semsearch.evaluate import caption_report
from semsearch.labels import label_text
from semsearch.train import embed_folder, train

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "caltech-dev"


def write_tsv(folder: Path, classes: list[str], split: str, labels: bool = False) -> Path:
    """A captions TSV (absolute paths) for the even ('train') or odd ('test') photos of `classes`; with
    `labels`, training captions include two made from the class name."""
    lines = []
    for name in classes:
        wording = CAPTIONS[name][:TRAIN_CAPTIONS] if split == "train" else CAPTIONS[name][TRAIN_CAPTIONS:]
        if labels:
            wording = (*wording, f"a photo of a {label_text(name)}", label_text(name))
        for i, photo in enumerate(sorted((PHOTOS / name).iterdir())):
            if i % 2 == (0 if split == "train" else 1):
                lines += [f"{photo}\t{caption}" for caption in wording]
    path = folder / f"{split}-{classes[0]}-{len(classes)}{'-labels' if labels else ''}.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def row(label: str, result: dict, seconds: float | None = None) -> str:
    t2i, i2t = result["text_to_image"], result["image_to_text"]
    took = f"{seconds:8.1f}" if seconds is not None else " " * 8
    return (
        f"{label:42s} {t2i['R@1']:6.3f} {t2i['R@5']:6.3f} {t2i['R@10']:6.3f} {t2i['median_rank']:6.1f}"
        f"   {i2t['R@1']:6.3f} {i2t['R@10']:6.3f} {took}"
    )


def protocols(folder: Path, text_models: list[str], methods: list[str], epochs: int) -> None:
    from semsearch.encoders.head import JointHead
    from semsearch.encoders.joint import ConSE
    from semsearch.encoders.text import load_text_space

    data = embed_folder(PHOTOS)
    classes = sorted(CAPTIONS)
    first, second = classes[:15], classes[15:]
    runs = {
        "new photos, new wording": (write_tsv(folder, classes, "train"), write_tsv(folder, classes, "test")),
        "new photos, new wording, label-derived captions in training": (
            write_tsv(folder, classes, "train", labels=True),
            write_tsv(folder, classes, "test"),
        ),
        "held-out classes (trained on the first 15)": (
            write_tsv(folder, first, "train"),
            write_tsv(folder, second, "test"),
        ),
        "held-out classes (trained on the last 15)": (
            write_tsv(folder, second, "train"),
            write_tsv(folder, first, "test"),
        ),
    }
    header = f"{'':42s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'medr':>6s}   {'i2t@1':>6s} {'i2t@10':>6s} {'train s':>8s}"
    for name, (train_tsv, test_tsv) in runs.items():
        print(f"\n{name}: text→image over the test photos ({test_tsv.name}), image→text over their captions")
        print(header)
        for text_model in text_models:
            space = load_text_space(text_model)
            base = caption_report(test_tsv, data.paths, ConSE(space).embed(data.logits), space)
            print(row(f"ConSE, {text_model} (no training)", base))
            for method in methods:
                out = folder / f"{train_tsv.stem}-{text_model}-{method}.npz"
                report = train(train_tsv, out, text_model=text_model, method=method, epochs=epochs)
                joint = JointHead.load(out).embed_images(data.features, data.logits)
                gate = report.gate
                label = f"{method}, {text_model} (gate {gate['weight']}@{gate['tau']})"
                print(
                    row(label, caption_report(test_tsv, data.paths, joint, space), report.seconds), flush=True
                )


def timing(text_model: str, methods: list[str], copies: int, epochs: int) -> None:
    """Seconds to fit on len(caltech-dev) x copies photos, five caption targets each, features given."""
    from semsearch.captions import encode_texts
    from semsearch.encoders.joint import ConSE
    from semsearch.encoders.text import load_text_space
    from semsearch.train import TrainingSet, classifier_groups, fit_joint
    from semsearch.vectors import normalise

    data = embed_folder(PHOTOS)
    space = load_text_space(text_model)
    rng = np.random.default_rng(0)
    n = len(data.paths) * copies
    noise = rng.normal(0, 0.1 * data.features.std(), (n, data.features.shape[1])).astype(np.float32)
    features = np.tile(data.features, (copies, 1)) + noise
    classes = [label for label in data.labels] * copies
    texts = sorted({c for name in CAPTIONS for c in CAPTIONS[name][:TRAIN_CAPTIONS]})
    vectors = normalise(np.stack(encode_texts(space, texts)))
    index = {t: i for i, t in enumerate(texts)}
    image_ids = np.repeat(np.arange(n), TRAIN_CAPTIONS)
    target_ids = np.array([index[c] for label in classes for c in CAPTIONS[label][:TRAIN_CAPTIONS]])
    conse = np.tile(ConSE(space).embed(data.logits), (copies, 1))
    groups = np.tile(classifier_groups(data.logits), copies)
    training = TrainingSet(features, conse, vectors, image_ids, target_ids, groups, classes=False)
    print(f"\ntraining time, {n} photos x {TRAIN_CAPTIONS} captions ({text_model}, features given):")
    for method in methods:
        fitted = fit_joint(training, method, epochs=epochs)
        print(f"  {method:8s} fit + gate: {fitted.seconds:.1f} s (setting {fitted.setting})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-models", nargs="+", default=["glove", "minilm"])
    parser.add_argument("--methods", nargs="+", default=["ridge"])
    parser.add_argument("--epochs", type=int, default=50, help="MLP epochs at most")
    parser.add_argument("--copies", type=int, default=5, help="caltech-dev copies for the timing run")
    parser.add_argument("--keep", type=Path, help="Write the TSVs and models here (default: a temp dir).")
    args = parser.parse_args()
    if not PHOTOS.is_dir():
        sys.exit(f"the benchmark photos are missing: {PHOTOS}")
    with tempfile.TemporaryDirectory(prefix="semsearch-captions-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        protocols(folder, args.text_models, args.methods, args.epochs)
        timing(args.text_models[-1], args.methods, args.copies, args.epochs)


if __name__ == "__main__":
    main()
