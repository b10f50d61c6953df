"""EfficientNet-Lite on the runtime (real weights, real photos): export, checks, int8 on every CPU, and
the encode_paths pipeline."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from semsearch.encoders import runtime
from semsearch.encoders.efficientnet import EfficientNetLite, classifier_weights, graph, preprocess
from semsearch.encoders.samples import calibration_photos, check_photos
from semsearch.errors import ModelError
from semsearch.pipeline import EncodedBatch, Skipped, encode_paths

LITE0 = graph("lite0")


@pytest.fixture
def cache(model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of its own for a test that breaks a step of the preparation on purpose.

    The other steps reuse the session's real fp32 export (copied in, never re-exported), so each such
    test pays only for the step it breaks.
    """
    EfficientNetLite("lite0", runtime="onnx").runtime  # noqa: B018 -- the session's export exists
    good = runtime.model_paths(LITE0.key)["onnx"]
    monkeypatch.setenv("SEMSEARCH_CACHE", str(tmp_path))
    monkeypatch.setattr(runtime, "export", lambda graph, path, inputs: shutil.copyfile(good, path))
    return tmp_path


@pytest.fixture(scope="module")
def encoder() -> EfficientNetLite:
    return EfficientNetLite("lite0", runtime="onnx")


def _stats(got: dict[str, np.ndarray]) -> dict[str, float]:
    """Agreement with the untouched torch model on the check photos."""
    reference = runtime.torch_run(LITE0, {"pixels": preprocess(check_photos(224))})
    return runtime.compare(reference, got, LITE0)


def test_onnx_matches_torch(encoder: EfficientNetLite) -> None:
    pixels = check_photos(encoder.pixels.size)
    assert len(pixels) >= 6
    stats = _stats(encoder.encode(pixels))
    assert stats["top1_agree"] == 1.0
    assert stats["min_cosine"] > 0.999
    assert stats["max_logit_diff"] < 1e-2
    meta = runtime.prepare(LITE0)
    assert meta["runtime"] in runtime.RUNTIMES and meta["check"]["top1_agree"] == 1.0


def test_known_labels_and_normalised(encoder: EfficientNetLite) -> None:
    pixels = check_photos(encoder.pixels.size)[:2]  # chelsea, coffee
    out = encoder.encode(pixels)
    feats, logits = out["features"], out["logits"]
    assert feats.shape == (2, 1280) and feats.dtype == np.float32
    assert logits.shape == (2, 1000) and logits.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    top = logits.argmax(1)
    assert 281 <= top[0] <= 285, top  # chelsea: a cat
    assert top[1] in (967, 968), top  # coffee: espresso or cup
    # the stored classifier reproduces the logits from the (unnormalised) features' direction
    w, b = classifier_weights("lite0")
    assert w.shape == (1000, 1280) and b.shape == (1000,)
    reference = runtime.torch_run(LITE0, {"pixels": preprocess(pixels)})
    np.testing.assert_allclose(reference["features"] @ w.T + b, reference["logits"], atol=1e-3)


def test_torch_runtime_agrees(encoder: EfficientNetLite) -> None:
    torch_enc = EfficientNetLite("lite0", runtime="torch")
    pixels = check_photos(224)[:3]
    a, b = encoder.encode(pixels), torch_enc.encode(pixels)
    assert np.all(np.sum(a["features"] * b["features"], axis=1) > 0.999)
    assert np.array_equal(a["logits"].argmax(1), b["logits"].argmax(1))


def test_bad_export_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export that disagrees with torch (here: Swish swapped in) is deleted and not used."""
    import copy

    import torch

    def broken_export(graph: runtime.Graph, path: Path, inputs: dict) -> None:
        bad = copy.deepcopy(runtime._torch_module(graph)[0])
        bad.net.set_swish(memory_efficient=False)  # the classic mistake
        example = (torch.zeros(1, 3, 224, 224),)
        torch.onnx.export(
            bad,
            example,
            str(path),
            input_names=["pixels"],
            output_names=list(graph.outputs),
            dynamic_axes=graph.dynamic,
            opset_version=17,
            dynamo=False,
        )

    monkeypatch.setattr(runtime, "export", broken_export)
    meta = runtime.prepare(LITE0, force=True)
    assert meta["runtime"] == "torch"
    assert "error" not in meta["check"], meta["check"]  # it exported fine, and was caught by the check
    assert meta["check"]["min_cosine"] < 0.999 or meta["check"]["top1_agree"] < 1.0
    assert not list((cache / "models").glob("*.onnx"))
    with pytest.raises(ModelError):
        EfficientNetLite("lite0", runtime="onnx").runtime  # noqa: B018


def test_int8_passes_its_check(encoder: EfficientNetLite) -> None:
    """The int8 model agrees with torch within its bar (top-1 >= 7/8, min feature cosine >= 0.97)."""
    int8 = EfficientNetLite("lite0", runtime="onnx-int8")
    assert int8.runtime == "onnx-int8"
    pixels = check_photos(int8.pixels.size)
    stats = _stats(int8.encode(pixels))
    assert stats["top1_agree"] >= runtime.INT8_MIN_TOP1 == 7 / 8, stats
    assert stats["min_cosine"] >= runtime.INT8_MIN_COSINE >= 0.97, stats
    assert runtime.int8_passes(stats)
    # close to the fp32 export too, and the bar is really looser than the fp32 one
    cosines = np.sum(encoder.encode(pixels)["features"] * int8.encode(pixels)["features"], axis=1)
    assert np.all(cosines > 0.97)
    meta = runtime.prepare(LITE0)
    assert runtime.int8_passes(meta["check_int8"]), meta
    # the recorded choice is stable: a later prepare reads it instead of re-timing
    assert runtime.prepare(LITE0) == meta
    assert EfficientNetLite("lite0").runtime == meta["runtime"]
    # the calibration photos never include the check photos (nor caltech-dev)
    calib = calibration_photos(224)
    assert len(calib) >= 16
    assert not any(np.array_equal(c, p) for c in calib for p in pixels)


def test_broken_int8_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An int8 file that does not load (corrupt bytes) is deleted, recorded, and never chosen."""

    def corrupt(graph: runtime.Graph, fp32_path: Path, path: Path) -> None:
        path.write_bytes(fp32_path.read_bytes()[:5000] + b"garbage" * 100)

    monkeypatch.setattr(runtime, "quantize_int8", corrupt)
    meta = runtime.prepare(LITE0, force=True)
    assert meta["check"]["top1_agree"] == 1.0  # the fp32 export itself is fine
    assert "error" in meta["check_int8"], meta["check_int8"]
    assert meta["runtime"] in ("onnx", "torch")
    assert not list((cache / "models").glob("*.int8*.onnx"))
    with pytest.raises(ModelError):
        EfficientNetLite("lite0", runtime="onnx-int8").runtime  # noqa: B018


def test_badly_calibrated_int8_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An int8 model that loads but disagrees (activation ranges calibrated on blank frames) fails the bar."""
    from semsearch.encoders import efficientnet

    blank = np.full((8, 224, 224, 3), 127, np.uint8)
    monkeypatch.setattr(efficientnet, "calibration_photos", lambda size: blank)
    meta = runtime.prepare(LITE0, force=True)
    assert "error" not in meta["check_int8"], meta["check_int8"]  # it quantised and ran, and was caught
    assert not runtime.int8_passes(meta["check_int8"]), meta["check_int8"]
    assert meta["runtime"] in ("onnx", "torch")
    assert not list((cache / "models").glob("*.int8*.onnx"))


def test_warm_path_does_not_import_torch(encoder: EfficientNetLite) -> None:
    code = (
        "import sys\n"
        "from semsearch.encoders.efficientnet import classifier_weights\n"
        "from semsearch.encoders.registry import load_image_model\n"
        "w, b = classifier_weights('lite0'); assert w.shape == (1000, 1280)\n"
        "model = load_image_model('lite0')\n"
        "assert model.runtime in ('onnx', 'onnx-int8'), model.runtime\n"
        "assert 'torch' not in sys.modules, 'torch imported on the warm path'\n"
    )
    encoder.classifier()  # prepared here, so the subprocess is a warm start
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_encode_paths_each_once(encoder: EfficientNetLite, tmp_path: Path) -> None:
    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    paths: list[Path] = []
    for i in range(7):
        p = tmp_path / f"good{i}.jpg"
        Image.fromarray(photos[i % 4]).save(p, "JPEG")
        paths.append(p)
    bad = {
        tmp_path / "empty.jpg": b"",
        tmp_path / "text.png": b"hello world",
        tmp_path / "cut.jpg": paths[0].read_bytes()[:3000],
    }
    for p, raw in bad.items():
        p.write_bytes(raw)
    missing = tmp_path / "missing.jpg"
    order = [
        *paths[:2],
        tmp_path / "empty.jpg",
        *paths[2:5],
        tmp_path / "text.png",
        missing,
        *paths[5:],
        tmp_path / "cut.jpg",
    ]

    results = list(encode_paths(order, encoder, batch_size=3))
    seen: list[Path] = []
    skipped: dict[Path, str] = {}
    for r in results:
        if isinstance(r, Skipped):
            skipped[r.path] = r.reason
            seen.append(r.path)
        else:
            assert isinstance(r, EncodedBatch)
            assert 1 <= len(r.paths) <= 3
            features, logits = r.vectors["features"], r.vectors["logits"]
            assert features.shape == (len(r.paths), 1280) and logits.shape == (len(r.paths), 1000)
            np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
            seen.extend(r.paths)
    assert sorted(seen) == sorted(order) and len(seen) == len(order)
    assert skipped == {
        tmp_path / "empty.jpg": "empty file",
        tmp_path / "text.png": "not an image",
        missing: "file not found",
        tmp_path / "cut.jpg": "truncated image",
    }
    # the features belong to their paths: good0 (chelsea) is a cat, good1 (coffee) is espresso/cup
    batches = [r for r in results if isinstance(r, EncodedBatch)]
    by_path = {p: row for r in batches for p, row in zip(r.paths, r.vectors["logits"], strict=True)}
    assert 281 <= by_path[paths[0]].argmax() <= 285
    assert by_path[paths[1]].argmax() in (967, 968)
    assert list(encode_paths([], encoder)) == []
    # two batches inferred at once: same batches in the same order, same numbers, same skips
    # (a Skipped may come out earlier, ahead of batches still being inferred)
    again = list(encode_paths(order, encoder, batch_size=3, encode_workers=2))
    assert [r.paths for r in again if isinstance(r, EncodedBatch)] == [r.paths for r in batches]
    assert {r for r in again if isinstance(r, Skipped)} == {r for r in results if isinstance(r, Skipped)}
    for a, b in zip([r for r in again if isinstance(r, EncodedBatch)], batches, strict=True):
        np.testing.assert_allclose(a.vectors["features"], b.vectors["features"], atol=1e-5)


# ---------------------------------------------------------------- int8 on CPUs without VNNI
#
# ONNX Runtime's int8 kernels add neighbouring uint8 x int8 products into a saturating int16 on CPUs
# without VNNI (AVX2-only). qemu-user emulates such a CPU (`-cpu Haswell`: AVX2, FMA, no AVX-512), so
# the check runs there whatever CPU runs the suite. A tiny model whose every pair saturates shows
# that the emulated kernels really are the saturating ones; then the real int8 model must agree.

QEMU = shutil.which("qemu-x86_64")
needs_qemu = pytest.mark.skipif(
    QEMU is None or platform.machine() != "x86_64",
    reason="qemu-x86_64 (Debian package qemu-user) is needed to emulate an AVX2-only CPU",
)

RUN_ORT = """
import sys, numpy as np, onnxruntime as ort
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.log_severity_level = 3
out = {}
for name, model, x in zip(sys.argv[2::3], sys.argv[3::3], sys.argv[4::3]):
    s = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    for i, got in enumerate(s.run(None, {s.get_inputs()[0].name: np.load(x)})):
        out[f"{name}.{i}"] = got
np.savez(sys.argv[1], **out)
"""


def _saturating_model(path: Path) -> np.ndarray:
    """A float 1x1 conv (64 -> 16 channels, equal positive weights) after ReLU6; returns inputs at 6.0."""
    import onnx
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.full((16, 64, 1, 1), 0.05, np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Clip", ["x", "lo", "hi"], ["r"]),
            helper.make_node("Conv", ["r", "w"], ["y"]),
        ],
        "pairs",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 64, 4, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 16, 4, 4])],
        [weight, numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return np.full((2, 64, 4, 4), 6.0, np.float32)


@pytest.fixture(scope="module")
def emulated(encoder: EfficientNetLite, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Outputs of the tiny models and of the real int8 model, computed on an emulated AVX2-only CPU."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from semsearch.encoders.quantize import quantize

    work = tmp_path_factory.mktemp("avx2")
    x = _saturating_model(work / "float.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"x": x}])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(
        str(work / "float.onnx"),
        str(work / "plain.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    quantize(work / "float.onnx", work / "ours.onnx", x, input_name="x")
    np.save(work / "x.npy", x)
    np.save(work / "pixels.npy", preprocess(check_photos(224)))
    EfficientNetLite("lite0", runtime="onnx-int8").runtime  # noqa: B018 -- makes the int8 model if needed
    int8 = runtime.model_paths(LITE0.key)["onnx-int8"]
    args = [str(work / "out.npz")]
    for name, model, inputs in (
        ("float", "float.onnx", "x.npy"),
        ("plain", "plain.onnx", "x.npy"),
        ("ours", "ours.onnx", "x.npy"),
    ):
        args += [name, str(work / model), str(work / inputs)]
    args += ["lite0", str(int8), str(work / "pixels.npy")]
    subprocess.run(
        [QEMU, "-cpu", "Haswell", sys.executable, "-c", RUN_ORT, *args],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return dict(np.load(work / "out.npz"))


@needs_qemu
def test_emulated_cpu_saturates_a_plain_int8_model(emulated: dict[str, np.ndarray]) -> None:
    """The emulation really exercises the saturating kernels: plain quantize_static goes wrong there."""
    want = emulated["float.0"]
    assert np.allclose(want, 6.0 * 0.05 * 64, rtol=1e-3)
    assert not np.allclose(emulated["plain.0"], want, rtol=0.05)  # saturated int16 pairs
    np.testing.assert_allclose(emulated["ours.0"], want, rtol=0.02)  # saturation-free scales


@needs_qemu
def test_int8_model_is_the_same_on_avx2_only_cpus(emulated: dict[str, np.ndarray]) -> None:
    """The real int8 model gives the same features on an AVX2-only CPU as here, and passes its bar there."""
    here = EfficientNetLite("lite0", runtime="onnx-int8").encode(check_photos(224))["features"]
    there = {"features": emulated["lite0.0"], "logits": emulated["lite0.1"]}
    assert np.all(
        np.sum(here * there["features"], axis=1) / np.linalg.norm(there["features"], axis=1) > 0.9999
    )
    assert runtime.int8_passes(_stats(there))


def test_int8_weights_cannot_saturate(encoder: EfficientNetLite) -> None:
    """Every paired int8 weight tensor of the model keeps same-sign neighbours within 128 (no int16 overflow)."""
    import onnx
    from onnx import numpy_helper

    from semsearch.encoders.quantize import PAIR_LIMIT, pair_sums

    EfficientNetLite("lite0", runtime="onnx-int8").runtime  # noqa: B018 -- makes the int8 model if needed
    model = onnx.load(str(runtime.model_paths(LITE0.key)["onnx-int8"]))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    checked = 0
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type in ("Conv", "Gemm") and group == 1:
            q = init[producer[node.input[1]].input[0]]
            assert q.dtype == np.int8
            assert pair_sums(q.astype(np.int32)).max() <= PAIR_LIMIT, node.name
            checked += 1
    assert checked >= 30  # 33 dense convolutions and the classifier in lite0
