"""CLIP-family image-text models through Hugging Face `transformers` (CLIP, and SigLIP-type models
through the same auto classes): one joint space for photos and text.

`--model clip:/path/to/model-folder` uses a local copy (air-gapped machines: a folder written by
`save_pretrained`, with its tokenizer.json and preprocessor_config.json); `--model clip:org/name` names a
model id, which transformers downloads and caches on a machine with a network. Only a name the user
gives explicitly is ever fetched; nothing on the default path downloads.

Both towers are exported to ONNX and checked against torch like the CNN (`runtime.py`). Afterwards a
query needs neither torch nor transformers: text is tokenised by the `tokenizers` library from the
model's tokenizer.json and photos are preprocessed here from preprocessor_config.json.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache, cached_property
from pathlib import Path

import numpy as np

from semsearch.encoders.base import PixelInput, Space
from semsearch.encoders.runtime import DEFAULT_THREADS, Graph, Runner, describe, recorded
from semsearch.encoders.samples import CHECK_SENTENCES, check_photos
from semsearch.encoders.tokens import Tokens
from semsearch.errors import EmptyQueryError, ModelError
from semsearch.media import Geometry
from semsearch.vectors import normalise

#: Bump when the export wrappers change, so stale exports are not reused.
EXPORT_VERSION = 1
SPACE = "clip"


def _folder(ref: str) -> Path:
    """The model's folder: `ref` itself, or the transformers cache's copy of model id `ref`."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.absolute()
    if path.is_absolute() or ref.startswith((".", "~")) or ref.count("/") != 1:
        raise ModelError(f"no model folder at {ref}: give a folder written by save_pretrained or a model id")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref))
    except Exception as exc:  # offline, unknown id, no permission: one line for the user
        raise ModelError(f"cannot get model {ref!r}: {str(exc).splitlines()[0][:200]}") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None


@cache
def identity(ref: str) -> str:
    """The weights' identity: model type + a hash of the config and the weight files' names and sizes
    (the same wherever the folder is copied; another model or a changed file gets another identity)."""
    folder = _folder(ref)
    config = _read_json(folder / "config.json")
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    weights = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    if not weights:
        raise ModelError(f"no weights (*.safetensors, *.bin) in {folder}")
    for path in weights:
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return f"{config.get('model_type', 'clip')}-{digest.hexdigest()[:16]}"


class _Preprocessor:
    """Pixels (uint8, already fitted to `size` the model's way) → the model's normalised input, without
    transformers. CLIP resizes the short side and centre-crops; SigLIP resizes to the square."""

    def __init__(self, folder: Path) -> None:
        config = _read_json(folder / "preprocessor_config.json")
        crop = config.get("crop_size") if config.get("do_center_crop", True) else None
        size = crop or config.get("size") or {}
        self.size = int(
            size.get("height", size.get("shortest_edge", 224)) if isinstance(size, dict) else size
        )
        self.geometry: Geometry = "crop" if crop else "squash"
        self.scale = float(config.get("rescale_factor", 1 / 255))
        self.mean = np.asarray(config.get("image_mean", [0.5, 0.5, 0.5]), np.float32)
        self.std = np.asarray(config.get("image_std", [0.5, 0.5, 0.5]), np.float32)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        x = (np.atleast_3d(pixels).astype(np.float32) * self.scale - self.mean) / self.std
        return np.ascontiguousarray(x.reshape(-1, *x.shape[-3:]).transpose(0, 3, 1, 2))


def _tokens(folder: Path) -> Tokens:
    config = _read_json(folder / "config.json")
    text = config.get("text_config", {})
    return Tokens(
        folder,
        int(text.get("max_position_embeddings", 77)),
        int(text.get("pad_token_id") or 0),
        fixed_length=config.get("model_type") == "siglip",  # SigLIP was trained on max-length padding
    )


def _load_torch(folder: Path):
    import torch
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(str(folder), attn_implementation="eager")
    except Exception as exc:
        raise ModelError(f"cannot load the model in {folder}: {str(exc).splitlines()[0][:200]}") from None
    if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
        raise ModelError(f"{folder} is not an image-text model (no get_image_features/get_text_features)")
    return model, torch


def _pooled(out):
    """transformers 5 returns a ModelOutput whose pooler_output is the projected embedding; 4 a tensor."""
    return out if not hasattr(out, "pooler_output") else out.pooler_output


def _build_image(folder: Path):
    model, torch = _load_torch(folder)

    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return _pooled(self.model.get_image_features(pixel_values=pixel_values))

    return ImageTower()


def _build_text(folder: Path):
    model, torch = _load_torch(folder)

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return _pooled(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    return TextTower()


@cache
def _graphs(ref: str) -> tuple[Graph, Graph]:
    folder = _folder(ref)
    key = f"{identity(ref)}-e{EXPORT_VERSION}"
    preprocess, tokenize = _Preprocessor(folder), _tokens(folder)
    image = Graph(
        key=f"{key}-image",
        build=lambda: _build_image(folder),
        check_inputs=lambda: {"pixel_values": preprocess(check_photos(preprocess.size, preprocess.geometry))},
        outputs=("embeds",),
        dynamic={"pixel_values": {0: "n"}, "embeds": {0: "n"}},
    )
    text = Graph(
        key=f"{key}-text",
        build=lambda: _build_text(folder),
        check_inputs=lambda: tokenize(list(CHECK_SENTENCES)),
        outputs=("embeds",),
        dynamic={"input_ids": {0: "n", 1: "t"}, "attention_mask": {0: "n", 1: "t"}, "embeds": {0: "n"}},
    )
    return image, text


class ClipText:
    """Texts → unit vectors in the model's joint space."""

    def __init__(self, ref: str, runtime: str, threads: int, dim: int) -> None:
        self.identity, self.dim = identity(ref), dim
        self._tokenize = _tokens(_folder(ref))
        self._runner = Runner(_graphs(ref)[1], runtime, threads)

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = [" ".join(t.split()) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if not all(texts):
            raise EmptyQueryError("the query is empty: give words or a phrase")
        return normalise(self._runner.run(self._tokenize(texts))["embeds"])


class Clip:
    """Pixels → {"clip": unit vectors in the model's joint image-text space}.

    Cheap to make (reads the model's JSON files); prepared and loaded on the first `encode`.
    """

    def __init__(self, ref: str, runtime: str = "auto", threads: int = DEFAULT_THREADS) -> None:
        folder = _folder(ref)
        self.name, self.identity = f"clip:{ref}", identity(ref)
        self._ref, self._runtime, self.threads = ref, runtime, threads
        self._preprocess = _Preprocessor(folder)
        self.pixels = PixelInput(self._preprocess.size, self._preprocess.geometry)
        config = _read_json(folder / "config.json")
        dim = int(config.get("projection_dim") or config.get("text_config", {})["hidden_size"])
        self.spaces = (Space(SPACE, dim, text=True),)

    @cached_property
    def _runner(self) -> Runner:
        return Runner(_graphs(self._ref)[0], self._runtime, self.threads)

    @property
    def runtime(self) -> str:
        return self._runner.runtime

    def prepared(self) -> bool:
        return bool(recorded(_graphs(self._ref)[0].key))

    def describe_runtime(self) -> str:
        return describe(recorded(_graphs(self._ref)[0].key))

    def encode(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        if len(pixels) == 0:
            return {SPACE: np.zeros((0, self.spaces[0].dim), np.float32)}
        return {SPACE: normalise(self._runner.run({"pixel_values": self._preprocess(pixels)})["embeds"])}

    def classifier(self) -> None:
        return None

    @cached_property
    def _text(self) -> ClipText:
        return ClipText(self._ref, self._runtime, self.threads, self.spaces[0].dim)

    def text_model(self) -> ClipText:
        return self._text

    def __repr__(self) -> str:
        return f"Clip({self.name!r})"


def load(ref: str, runtime: str = "auto", threads: int = DEFAULT_THREADS) -> Clip:
    return Clip(ref, runtime, threads)
