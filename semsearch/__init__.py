"""semsearch: semantic search for photo collections and words."""

__version__ = "0.1.0"
