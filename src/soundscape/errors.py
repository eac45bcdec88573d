"""Typed errors. The library raises these; the CLI turns them into exit code 1 messages."""


class SoundscapeError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class AudioError(SoundscapeError):
    """A file cannot be decoded: unsupported format, empty, truncated or not audio."""


class ModelUnavailable(SoundscapeError):
    """A model's runtime or weights are missing; the message says how to install them."""


class DatabaseError(SoundscapeError):
    """The database cannot be reached or its schema is not at the expected revision."""
