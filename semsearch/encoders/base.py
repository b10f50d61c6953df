"""The encoder protocol: what the rest of semsearch knows about a model.

Making a model object is cheap (no weights loaded); it is prepared and loaded on first use. An
*image model* turns pixels into one or more named vector spaces (the ImageNet CNN: `features` and
`logits`; a CLIP-family model: one joint image-text space). Its first space is the one image-to-image
search uses. Optional abilities are methods that answer None when a model lacks them: an ImageNet
classifier (class-conditioned "focus" search, ConSE) or a text side that maps text into the image space
(CLIP). A *text model* maps texts into a space. Model families live one per module and are found by the
registry (`registry.py`); how a model runs (ONNX export, int8, runtime choice) lives in `runtime.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from semsearch.media import Geometry


@dataclass(frozen=True)
class Space:
    """A named vector space an image model fills: its width, whether rows are unit-length, and whether
    the model's text side maps texts into it (a joint image-text space such as CLIP's)."""

    name: str
    dim: int
    normalised: bool = True
    text: bool = False


@dataclass(frozen=True)
class PixelInput:
    """How a photo becomes this model's input: a square of `size` pixels, squashed or centre-cropped."""

    size: int
    geometry: Geometry


@runtime_checkable
class TextModel(Protocol):
    """Texts → unit vectors in one space."""

    identity: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised."""
        ...


@runtime_checkable
class ImageModel(Protocol):
    """Pixels → named vector spaces."""

    name: str  # as the user names it (`lite0`, `clip:/models/clip-b32`)
    identity: str  # the weights; recorded with the collection, a mismatch is refused
    pixels: PixelInput
    spaces: tuple[Space, ...]  # spaces[0] is what image-to-image search uses
    runtime: str  # how it runs here: "onnx", "onnx-int8" or "torch" (prepares the model if needed)
    threads: int  # inference threads per call (the pipeline runs cores // threads calls at once)

    def prepared(self) -> bool:
        """Whether this machine has prepared the model (else the first `encode` takes about a minute)."""
        ...

    def describe_runtime(self) -> str:
        """The runtime recorded on this machine and why, for people; never prepares anything."""
        ...

    def encode(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 (n, size, size, 3) → {space name: (n, dim) float32}."""
        ...

    def classifier(self) -> tuple[np.ndarray, np.ndarray] | None:
        """ImageNet classifier (weights (1000, features dim), bias (1000,)) for focus search, or None."""
        ...

    def text_model(self) -> TextModel | None:
        """The text side of a joint image-text model (texts → spaces[0]), or None."""
        ...
