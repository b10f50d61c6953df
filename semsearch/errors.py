"""User-facing error kinds: each is caught at the edge (CLI, HTTP) and shown as one line."""


class SemsearchError(Exception):
    """Base of every error a user can cause and fix; the message says what is wrong, and `cli_hint` what
    to type instead on the command line (shown by the CLI only: library users call methods, not flags)."""

    exit_code = 1

    def __init__(self, message: str, *, cli_hint: str | None = None) -> None:
        super().__init__(message)
        self.cli_hint = cli_hint


class DecodeError(SemsearchError):
    """A file is not a readable image (corrupt, truncated, empty, too large, unknown format)."""


class MissingCodecError(DecodeError):
    """A file in a format whose optional decoder is not installed (HEIC, RAW): it decodes once the user
    installs it, so it is never remembered as a bad file."""


class UnknownWordError(SemsearchError):
    """A word (or every word of a query) is missing from the word-vector vocabulary."""

    exit_code = 2


class EmptyQueryError(SemsearchError):
    """A query with nothing to search for."""

    exit_code = 2


class QueryError(SemsearchError):
    """A query that cannot be read as written (a weight out of range, a path where only ids are allowed)."""

    exit_code = 2


class UnknownClassError(SemsearchError):
    """A focus class that is neither an ImageNet class name nor an index 0-999."""

    exit_code = 2


class CollectionError(SemsearchError):
    """The collection directory is missing, unreadable, unwritable or made by another model."""


class ModelError(SemsearchError):
    """A model file is corrupt or was made for other vectors than the ones in use."""


class SettingError(SemsearchError):
    """A command-line option or environment setting that cannot be used as given (an empty token)."""

    exit_code = 2
