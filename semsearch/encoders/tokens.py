"""Text → token ids for exported text models, through the `tokenizers` library (fast to import; no
transformers at query time). Reads the tokenizer.json that Hugging Face models ship with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from semsearch.errors import ModelError


class Tokens:
    """Texts → {"input_ids", "attention_mask"} (int64), truncated to `max_length` and padded per batch,
    or always to `max_length` when the model was trained that way (SigLIP)."""

    def __init__(
        self, folder: Path, max_length: int, default_pad_id: int = 0, fixed_length: bool = False
    ) -> None:
        from tokenizers import Tokenizer

        path = folder / "tokenizer.json"
        if not path.is_file():
            raise ModelError(f"no tokenizer.json in {folder}: save the model's fast tokenizer there too")
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()  # some tokenizer.json files pad to a fixed width: padding is ours
        self.tokenizer.enable_truncation(max_length)
        self.max_length, self.fixed_length = max_length, fixed_length
        self.pad_id = self._pad_id(folder, default_pad_id)

    def _pad_id(self, folder: Path, default: int) -> int:
        try:
            pad = json.loads((folder / "tokenizer_config.json").read_text("utf-8")).get("pad_token")
        except (OSError, ValueError):
            pad = None
        pad = pad.get("content") if isinstance(pad, dict) else pad
        found = self.tokenizer.token_to_id(pad) if isinstance(pad, str) else None
        return int(found if found is not None else default)

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        rows = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        width = self.max_length if self.fixed_length else max((len(r) for r in rows), default=1)
        ids = np.full((len(rows), width), self.pad_id, np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}
