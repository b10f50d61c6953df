"""Training the joint head: real EfficientNet features of caltech-dev, real GloVe vectors."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from semsearch.errors import ModelError
from semsearch.evaluate import text_precision


@pytest.fixture(scope="module")
def glove():
    from semsearch.encoders.words import load_words

    return load_words()


@pytest.fixture(scope="module")
def caltech_vectors(caltech_collection):
    from semsearch.collection import Collection

    with Collection(caltech_collection) as c:
        snap = c.store.snapshot(["features", "logits"])
        labels = [os.path.basename(os.path.dirname(p)) for p in snap.paths]
        return np.array(snap.vectors["features"]), np.array(snap.vectors["logits"]), labels


def _train_head(features, logits, labels, classes, space, tmp_path, epochs=30, conse_weight=1.0):
    """What `semsearch train` does after embedding, on a subset of classes; returns the reloaded head."""
    from semsearch.encoders.head import JointHead, save_head
    from semsearch.encoders.joint import class_vectors
    from semsearch.train import fit_head

    rows = [i for i, lab in enumerate(labels) if lab in classes]
    names = sorted(classes)
    vectors = np.stack([space.embed_label(n) for n in names])
    target_ids = np.array([names.index(labels[i]) for i in rows])
    fit = fit_head(
        features[rows], vectors[target_ids], np.arange(len(rows)), target_ids, epochs=epochs, seed=0
    )
    meta = {
        "space_identity": space.identity,
        "image_model": "efficientnet-lite0",
        "feature_dim": features.shape[1],
        "dim": vectors.shape[1],
        "conse_weight": conse_weight,
        "classes": names,
        "fingerprint": "test",
    }
    path = tmp_path / "head.npz"
    save_head(path, {**fit.arrays, "class_vectors": class_vectors(space)}, meta)
    return JointHead.load(path, space.identity)


def test_training_beats_conse_on_its_classes(caltech_vectors, glove, tmp_path):
    from semsearch.encoders.joint import ConSE

    features, logits, labels = caltech_vectors
    classes = ["accordion", "anchor", "ant", "beaver", "crocodile", "wrench"]
    queries = {c: glove.embed_label(c) for c in classes}
    before = np.mean(list(text_precision(ConSE(glove).embed(logits), labels, queries).values()))
    head = _train_head(features, logits, labels, classes, glove, tmp_path)
    after = np.mean(list(text_precision(head.embed_images(features, logits), labels, queries).values()))
    assert after >= 0.9 and after > before + 0.1, (before, after)


def test_held_out_classes_are_still_found(caltech_vectors, glove, tmp_path):
    from semsearch.train import class_halves

    features, logits, labels = caltech_vectors
    trained = class_halves(labels, "first")
    held = class_halves(labels, "second")
    assert len(trained) == len(held) == 15 and not set(trained) & set(held)
    head = _train_head(features, logits, labels, trained, glove, tmp_path)
    queries = {c: glove.embed_label(c) for c in held if glove.embed_label(c) is not None}
    scores = text_precision(head.embed_images(features, logits), labels, queries)
    assert np.mean(list(scores.values())) >= 0.4, scores  # chance is ~1/30


def test_numpy_inference_matches_torch(tmp_path):
    import torch

    from semsearch.encoders.head import JointHead, save_head
    from semsearch.train import _arrays, _build

    torch.manual_seed(0)
    net = _build(1280, 50)
    bn = net[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.randn(17, 1280)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(net(x), dim=-1).numpy()
    meta = {"space_identity": "glove-6b-50d", "feature_dim": 1280, "dim": 50, "conse_weight": 0.0}
    save_head(tmp_path / "m.npz", _arrays(net), meta)
    head = JointHead.load(tmp_path / "m.npz")
    got = head.embed_images(x.numpy(), np.zeros((17, 1000), np.float32))
    assert got.shape == (17, 50) and head.dim == 50 and head.space_identity == "glove-6b-50d"
    assert np.allclose(got, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    with pytest.raises(ModelError, match="trained for text space glove-6b-50d"):
        JointHead.load(tmp_path / "m.npz", "minilm-l6-v2")


def _good_model(tmp_path):
    from semsearch.encoders.head import save_head
    from semsearch.train import _arrays, _build

    path = tmp_path / "good.npz"
    save_head(
        path, _arrays(_build(1280, 50)), {"space_identity": "glove-6b-50d", "feature_dim": 1280, "dim": 50}
    )
    return path


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "text", "other_npz"])
def test_corrupt_model_files_are_refused(tmp_path, damage):
    from semsearch.encoders.head import JointHead

    good = _good_model(tmp_path)
    bad = tmp_path / "bad.npz"
    data = good.read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "text":
        bad.write_text("hello\n")
    else:
        np.savez(bad, w1=np.zeros(3))
    with pytest.raises(ModelError) as info:
        JointHead.load(bad)
    assert "\n" not in str(info.value) and str(bad) in str(info.value)


def test_cli_refuses_bad_folders_and_keeps_existing_out(caltech, tmp_path, capsys):
    from semsearch.cli import main

    out = tmp_path / "model.npz"
    out.write_bytes(b"precious")
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    one = tmp_path / "one"
    (one / "crocodile").mkdir(parents=True)
    for src in sorted((caltech / "crocodile").iterdir())[:2]:
        shutil.copy2(src, one / "crocodile" / src.name)
    for folder, message in (
        (empty, "no images"),
        (one, "at least 2"),
        (tmp_path / "missing", "does not exist"),
    ):
        with pytest.raises(SystemExit) as info:
            main(["train", str(folder), "--out", str(out), "--json"])
        assert info.value.code != 0
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert out.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model")] == []


def test_captions_train_and_eval_end_to_end(caltech, tmp_path, capsys):
    """A captions TSV trains with InfoNCE; the saved model loads and `eval --joint` reads it."""
    import json

    from semsearch.cli import main

    photos = tmp_path / "photos"
    lines = []
    for name in ("crocodile", "laptop", "soccer_ball"):
        (photos / name).mkdir(parents=True)
        for src in sorted((caltech / name).iterdir())[:6]:
            shutil.copy2(src, photos / name / src.name)
            lines.append(f"photos/{name}/{src.name}\ta photo of a {name.replace('_', ' ')}")
            lines.append(f"photos/{name}/{src.name}\t{name.replace('_', ' ')}")
    (tmp_path / "captions.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "cap.npz"
    main(
        [
            "train",
            str(tmp_path / "captions.tsv"),
            "--out",
            str(out),
            "--loss",
            "infonce",
            "--epochs",
            "5",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 18 and report["loss"] == "infonce" and out.is_file()
    main(["eval", str(photos), "--joint", str(out), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["classes"] == 3 and 0 <= result["text_precision@10"] <= 1
