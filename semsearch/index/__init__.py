"""Nearest-neighbour indexes: one interface (`VectorIndex`), one module per backend, chosen by name.

Backends: ``exact`` (brute force), ``pruned`` (exact, reading a fraction of the vectors), ``scann`` and
``hnsw`` (in-process ANN), ``milvus`` (a Milvus server or Milvus Lite file), and the ``auto`` policy that
collections use by default (exact while small, ScaNN once large). The index knows nothing of files or
images.
"""

from semsearch.index.auto import DEFAULT_ANN_THRESHOLD
from semsearch.index.base import VectorIndex
from semsearch.index.registry import canonical_spec, create_index, index_class, names, resolve_spec

__all__ = [
    "DEFAULT_ANN_THRESHOLD",
    "VectorIndex",
    "canonical_spec",
    "create_index",
    "index_class",
    "names",
    "resolve_spec",
]
