"""Typed errors. The library raises these; the CLI turns them into exit code 1 messages."""


class SoundscapeError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class BadOption(SoundscapeError):
    """A value the user gave for an option is unusable (a window of NaN seconds, a hop larger
    than the window); ``option`` names it, so the CLI reports a usage error (exit 2)."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option


class AudioError(SoundscapeError):
    """A file cannot be decoded: unsupported format, empty, truncated or not audio."""


class ModelUnavailable(SoundscapeError):
    """A model's runtime or weights are missing; the message says how to install them."""


class DatabaseError(SoundscapeError):
    """The database cannot be reached or its schema is not at the expected revision."""


class ConnectionLost(DatabaseError):
    """The connection to the database broke mid-work (server stopped or unreachable); what
    was in progress was rolled back, and running the same command again resumes."""


class ServerRefused(DatabaseError):
    """The server refused to store work for a reason of its own, not of the data: a full disk,
    no memory, too many connections, a lock or statement timeout, an I/O error. What was in
    progress was rolled back; once the cause is gone, the same command resumes."""


class FileChanged(SoundscapeError):
    """A file changed while it was being ingested; nothing of it was stored."""


class InvalidRequest(SoundscapeError):
    """A request that cannot run whatever the database holds: no or several query forms,
    options that belong to another form. The CLI shows it as a usage error (exit 2)."""


class NoLabelMatch(SoundscapeError):
    """A search text that names no class label of a space (``search.match_labels``):
    ``suggestions`` are the closest labels and field words, best first; the web page shows them
    as links, the CLI as this message."""

    def __init__(
        self, space: str, text: str, suggestions: list[str], field_words: list[str]
    ) -> None:
        self.space, self.text = space, text
        self.suggestions, self.field_words = suggestions, field_words
        hint = f"; did you mean: {', '.join(suggestions)}?" if suggestions else ""
        some = f", field words: {', '.join(field_words[:8])}, ..." if field_words else ""
        super().__init__(
            f"no {space} label matches {text!r}{hint} (labels: `soundscape labels top`{some})"
        )


class AnnotationError(SoundscapeError):
    """An annotation cannot be stored: unknown recording or window, a span outside the
    recording, an unknown verdict, an empty label."""


class AnnotationImportError(AnnotationError):
    """A file of annotations has bad rows; nothing of it was imported. ``problems`` holds
    (line number, message) pairs."""

    def __init__(self, path: object, problems: list[tuple[int, str]], limit: int = 20) -> None:
        self.path = path
        self.problems = problems
        shown = [f"  line {line}: {message}" for line, message in problems[:limit]]
        if len(problems) > limit:
            shown.append(f"  ... and {len(problems) - limit} more")
        super().__init__(
            f"{path}: not imported, {len(problems)} bad row(s) (nothing of this file was "
            "stored; fix them and import the file again):\n" + "\n".join(shown)
        )


class StoredFileChanged(SoundscapeError):
    """A stored recording's file is gone, a symbolic link, or not the file that was ingested
    (another device, inode, size, time or content): nothing of it was read. ``gone`` is true
    when there is no file at the stored path at all."""

    def __init__(self, message: str, *, gone: bool = False) -> None:
        super().__init__(message)
        self.gone = gone
