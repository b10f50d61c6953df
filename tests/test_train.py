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


def _training_set(features, logits, labels, classes, space):
    """What `semsearch train` fits on for a labelled folder, restricted to `classes`."""
    from semsearch.encoders.joint import ConSE
    from semsearch.train import Embedded, folder_training_set

    data = Embedded(features, logits, [f"/p/{i}.jpg" for i in range(len(labels))], labels, "lite0")
    training, _, _ = folder_training_set(data, space, set(classes), ConSE(space).embed(logits), print)
    return training


def _train_head(features, logits, labels, classes, space, method="ridge", epochs=50):
    """Fit a joint model on `classes` as `semsearch train` does; the head as a search would load it."""
    from semsearch.encoders.head import JointHead
    from semsearch.encoders.joint import class_vectors
    from semsearch.train import fit_joint

    fitted = fit_joint(_training_set(features, logits, labels, classes, space), method, epochs=epochs)
    meta = {
        "space_identity": space.identity,
        "feature_dim": features.shape[1],
        "dim": space.dim,
        "head": fitted.kind,
        "gate": fitted.gate,
        "classes": sorted(classes),
    }
    return JointHead({**fitted.arrays, "class_vectors": class_vectors(space)}, meta), fitted


def _precision(joint, labels, space, classes):
    from semsearch.labels import label_vectors

    queries, _ = label_vectors(space, classes)
    return float(np.mean(list(text_precision(joint, labels, queries).values())))


def test_training_beats_conse_on_its_classes(caltech_vectors, glove):
    from semsearch.encoders.joint import ConSE

    features, logits, labels = caltech_vectors
    classes = ["accordion", "anchor", "ant", "beaver", "crocodile", "wrench"]
    before = _precision(ConSE(glove).embed(logits), labels, glove, classes)
    head, _ = _train_head(features, logits, labels, classes, glove)
    after = _precision(head.embed_images(features, logits), labels, glove, classes)
    assert after >= 0.9 and after > before + 0.1, (before, after)


@pytest.mark.parametrize("half", ["first", "second"])
def test_head_never_hurts_classes_it_never_saw(caltech_vectors, glove, half):
    """Trained on 15 caltech-dev classes, the other 15 are found at least as well as by ConSE alone (the
    model before the gate, trained on the first half, found the second at 0.66 against ConSE's 0.767),
    and the trained ones far better."""
    from semsearch.encoders.joint import ConSE
    from semsearch.train import class_halves

    features, logits, labels = caltech_vectors
    trained = class_halves(labels, half)
    held = sorted(set(labels) - set(trained))
    assert len(trained) == len(held) == 15
    conse = ConSE(glove).embed(logits)
    head, fitted = _train_head(features, logits, labels, trained, glove)
    joint = head.embed_images(features, logits)
    assert _precision(joint, labels, glove, held) >= _precision(conse, labels, glove, held) - 0.02
    assert _precision(joint, labels, glove, trained) >= 0.95
    assert fitted.gate["weight"] > 0 and fitted.gate["held_out"] >= fitted.gate["conse_held_out"]


def test_ridge_is_least_squares_with_the_penalty_chosen_on_held_out_photos(caltech_vectors, glove):
    """The closed form equals scikit-learn's Ridge on standardised features (both primal and dual
    solves), and the penalty kept is the one with the lowest held-out loss, refitted on all photos."""
    from sklearn.linear_model import Ridge as Reference

    from semsearch.train import RIDGE_ALPHAS, Ridge, fit_ridge, split_photos

    features, logits, labels = caltech_vectors
    data = _training_set(features, logits, labels, ["ant", "chair", "laptop", "llama"], glove)
    for n in (60, len(data.features)):  # fewer photos than features (dual), and more (primal)
        rows = np.arange(n)
        x, y = data.features[rows], data.mean_targets(rows)
        scale = x.std(0) + 1e-6
        want = Reference(alpha=0.3 * n).fit((x - x.mean(0)) / scale, y)
        got = Ridge(x, y)
        for arrays in (got.arrays(0.3), got.path([0.1, 0.3])[1]):
            assert np.allclose(
                x @ arrays["w"] + arrays["b"], want.predict((x - x.mean(0)) / scale), atol=1e-3
            )
    val = split_photos(data.groups, np.random.default_rng(0))
    fit = fit_ridge(data, np.flatnonzero(~val), np.flatnonzero(val), None, print)
    losses = {row["alpha"]: row["val_loss"] for row in fit.history}
    assert list(losses) == list(RIDGE_ALPHAS) and fit.setting == min(losses, key=losses.get)
    everything = Ridge(data.features, data.mean_targets(np.arange(len(data.features)))).arrays(fit.setting)
    assert np.allclose(fit.arrays["w"], everything["w"], atol=1e-6)


def test_mlp_stops_early_and_keeps_its_best_epoch(caltech_vectors, glove):
    """With 300 epochs allowed, training stops PATIENCE epochs after the held-out loss last improved and
    keeps that epoch's weights (it used to run every epoch)."""
    from semsearch.encoders.head import JointHead
    from semsearch.train import PATIENCE, _cosine_loss, _layer_meta, fit_mlp, split_photos

    features, logits, labels = caltech_vectors
    data = _training_set(features, logits, labels, ["ant", "chair", "laptop", "llama", "wrench"], glove)
    val = split_photos(data.groups, np.random.default_rng(0))
    rows, held = np.flatnonzero(~val), np.flatnonzero(val)
    fit = fit_mlp(data, rows, held, loss="cosine", epochs=300, seed=0, log=print)
    losses = [h["val_loss"] for h in fit.history]
    assert len(losses) < 300 and len(losses) == fit.setting + PATIENCE
    assert fit.setting == int(np.argmin(losses)) + 1 and fit.val_loss == pytest.approx(min(losses), abs=1e-5)
    kept = JointHead(fit.arrays, _layer_meta("mlp", data)).head_vectors(data.features[held])
    assert _cosine_loss(kept, data, data.pairs_of(held), held) == pytest.approx(min(losses), abs=1e-3)


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


@pytest.mark.parametrize("method", ["ridge", "infonce"])
def test_captions_train_and_eval_end_to_end(caltech, tmp_path, capsys, method):
    """A captions TSV trains a model (`--loss` still names the method); the saved model loads, and
    `eval --captions` measures caption retrieval with it and without it."""
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
            method,
            "--epochs",
            "3",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 18 and report["method"] == method and out.is_file()
    assert report["captions"]["caption_pairs"] == 36 and 0 <= report["gate"]["weight"] <= 1
    for joint in ([], ["--joint", str(out)]):
        main(["eval", str(photos), *joint, "--captions", str(tmp_path / "captions.tsv"), "--json"])
        result = json.loads(capsys.readouterr().out)
        assert result["classes"] == 3 and result["captions"]["captions"] == 6
        assert result["captions"]["text_to_image"]["R@1"] >= 0.5
        assert result["captions"]["image_to_text"]["R@5"] >= 0.8


def test_models_of_format_1_still_blend_at_their_constant_weight(tmp_path):
    """A file written before the gate (format 1, `conse_weight`) gives normalise(head + w·ConSE), as it did."""
    import json

    import torch

    from semsearch.encoders.head import JointHead
    from semsearch.encoders.joint import top_probabilities
    from semsearch.train import _arrays, _build
    from semsearch.vectors import normalise

    torch.manual_seed(0)
    net = _build(1280, 50).eval()
    rng = np.random.default_rng(0)
    class_vectors = normalise(rng.normal(size=(1000, 50)))
    header = {"format": "semsearch-joint-head", "version": 1, "space_identity": "glove-6b-50d"}
    header |= {"feature_dim": 1280, "dim": 50, "conse_weight": 0.7}
    path = tmp_path / "v1.npz"
    np.savez(
        path,
        **_arrays(net),
        class_vectors=class_vectors,
        header=np.frombuffer(json.dumps(header).encode(), np.uint8),
    )
    features, logits = (
        rng.normal(size=(5, 1280)).astype(np.float32),
        rng.normal(size=(5, 1000)).astype(np.float32),
    )
    head = JointHead.load(path)
    with torch.no_grad():
        trained = normalise(net(torch.from_numpy(features)).numpy())
    conse = normalise(top_probabilities(logits) @ class_vectors)
    assert np.allclose(head.embed_images(features, logits), normalise(trained + 0.7 * conse), atol=1e-5)


def test_a_trained_model_serves_search_and_tags(small_photos, tmp_path, capsys):
    """`train` on class folders, then `index --joint`: a class name finds its photos, tags name them."""
    import json

    from semsearch.cli import main

    out, db = tmp_path / "m.npz", tmp_path / "db"
    main(["train", str(small_photos), "--out", str(out), "--json"])
    assert json.loads(capsys.readouterr().out)["classes"] == ["crocodile", "laptop", "soccer_ball"]
    main(["index", str(small_photos), "--db", str(db), "--joint", str(out), "--json"])
    capsys.readouterr()
    main(["search", "laptop", "--db", str(db), "-k", "4", "--json"])
    hits = json.loads(capsys.readouterr().out)
    assert [h["path"].split("/")[-2] for h in hits] == ["laptop"] * 4
    photo = sorted((small_photos / "soccer_ball").iterdir())[0]
    main(["tags", str(photo), "--db", str(db), "-k", "5", "--json"])
    assert "ball" in {row["word"] for row in json.loads(capsys.readouterr().out)}
