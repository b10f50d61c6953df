"""`semsearch serve`: a local web page and JSON API over one collection (see `semsearch.server.app`)."""

from semsearch.server.app import create_app

__all__ = ["create_app"]
