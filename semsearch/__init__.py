"""semsearch: semantic search for photo collections and words.

The library is what the command line and the web server use::

    from semsearch import Collection

    with Collection("photos.db", writable=True) as photos:
        photos.sync("~/Pictures")                      # index: only new and changed files are embedded
        for hit in photos.search("a dog on the beach", k=5):
            print(hit.rank, hit.score, hit.path)       # hit.to_dict() is the CLI's --json row
        photos.search("beach after:2019 in:Trips")     # filters in any query
        photos.similar(12, filters=parse_filters("camera:canon near:48.85,2.35,20km"))

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
from semsearch.query import Filters, parse_filters

__version__ = "0.1.0"

__all__ = [
    "Collection",
    "CollectionError",
    "DecodeError",
    "EmptyQueryError",
    "Filters",
    "Hit",
    "IndexReport",
    "ModelError",
    "QueryError",
    "SemsearchError",
    "UnknownClassError",
    "UnknownWordError",
    "__version__",
    "parse_filters",
]
