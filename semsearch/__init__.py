"""semsearch: semantic search for photo collections and words.

The library is what the command line and the web server use::

    from semsearch import Collection

    with Collection("photos.db", writable=True) as photos:
        photos.sync("~/Pictures")                      # index: only new and changed files are embedded
        for hit in photos.search("a dog on the beach", k=5):
            print(hit.rank, hit.score, hit.path)       # hit.to_dict() is the CLI's --json row

Every error a user can cause is a `SemsearchError` (one subclass per kind), never a raw SQLite or NumPy
error.
"""

from semsearch.collection import Collection, Hit, IndexReport
from semsearch.errors import (
    CollectionError,
    DecodeError,
    EmptyQueryError,
    ModelError,
    QueryError,
    SemsearchError,
    UnknownClassError,
    UnknownWordError,
)

__version__ = "0.1.0"

__all__ = [
    "Collection",
    "CollectionError",
    "DecodeError",
    "EmptyQueryError",
    "Hit",
    "IndexReport",
    "ModelError",
    "QueryError",
    "SemsearchError",
    "UnknownClassError",
    "UnknownWordError",
    "__version__",
]
