"""Stored recordings opened by their stored identity: the one way to read a recording's file.

Ingest stores a recording's path resolved (no symbolic links in it), its size and SHA-256,
and (migration 0024) the device, inode and modification time of the file it decoded. Whoever
later reads a stored recording (the web page's audio, clips and plots, clip export, review
batches, backfill) calls ``open_stored``, which

1. opens the stored path one component at a time from ``/`` with ``O_NOFOLLOW``: a symbolic
   link anywhere in the path (a replaced file or a replaced parent folder) is refused, as is
   anything but a regular file (a FIFO is opened non-blocking and refused);
2. ``fstat``s the open descriptor and compares device, inode, size and modification time with
   the stored ones; when they differ (a restored backup, a copy back into place) or were
   never stored (recordings ingested before 0024) the size must equal the stored size and the
   SHA-256 of the open descriptor the stored SHA-256 (a verified identity is remembered in
   this process, so a file is hashed once);
3. hands back the open descriptor (``OpenedFile``), from which everything is read: soundfile
   decodes it (``audio.probe``/``decode_span``/``WindowStream`` take an ``OpenedFile``), the
   web page streams byte ranges of it with ``pread``. The path is never opened again.

A file that fails any check raises ``StoredFileChanged`` saying what to do (put the original
back, or re-ingest it with ``--replace``); nothing of it is read beyond what the check needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.errors import StoredFileChanged

__all__ = [
    "STORED_COLUMNS",
    "OpenedFile",
    "StoredFile",
    "identity_of",
    "open_checked",
    "open_stored",
    "stored_file",
    "stored_files",
]

#: The ``recordings r`` columns ``StoredFile.from_row`` reads.
STORED_COLUMNS = (
    "r.id, r.path, r.sha256, r.size_bytes, r.file_device, r.file_inode, r.file_mtime_ns, "
    "r.format, r.sample_rate"
)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
# O_PATH: walking the folders needs only search (x) permission on them, as a path lookup does
_DIR_FLAGS = (
    getattr(os, "O_PATH", os.O_RDONLY)
    | os.O_DIRECTORY
    | os.O_NOFOLLOW
    | getattr(os, "O_CLOEXEC", 0)
)
_HASH_CHUNK = 1 << 20


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """A file's SHA-256 (hex), as ingest stores it with each recording (the content identity
    by which a moved or renamed copy is found)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class StoredFile:
    """What the database knows of a recording's file (``recordings`` columns)."""

    recording_id: int
    path: str
    sha256: str
    size_bytes: int | None = None
    device: int | None = None
    inode: int | None = None
    mtime_ns: int | None = None
    format: str | None = None
    sample_rate: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> StoredFile:
        def num(value: Any) -> int | None:
            return None if value is None else int(value)

        return cls(
            int(row.id), str(row.path), str(row.sha256), num(row.size_bytes),
            num(row.file_device), num(row.file_inode), num(row.file_mtime_ns),
            row.format, num(row.sample_rate),
        )  # fmt: skip

    @property
    def identity(self) -> tuple[int, int, int, int] | None:
        if None in (self.device, self.inode, self.size_bytes, self.mtime_ns):
            return None
        return (self.device, self.inode, self.size_bytes, self.mtime_ns)  # type: ignore[return-value]


def identity_of(st: os.stat_result) -> tuple[int, int, int, int]:
    """Device, inode, size and modification time (ns) of a ``stat`` result."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def stored_file(conn: Connection, recording_id: int) -> StoredFile:
    """The stored file of a recording; ``StoredFileChanged(gone=True)`` if there is no such
    recording."""
    found = stored_files(conn, [recording_id])
    if recording_id not in found:
        raise StoredFileChanged(
            f"no recording with id {recording_id} (soundscape recordings list)", gone=True
        )
    return found[recording_id]


def stored_files(conn: Connection, recording_ids: Iterable[int]) -> dict[int, StoredFile]:
    """The stored files of some recordings by id (unknown ids are left out)."""
    ids = sorted({int(i) for i in recording_ids})
    if not ids:
        return {}
    rows = conn.execute(
        sa.text(f"SELECT {STORED_COLUMNS} FROM recordings r WHERE r.id = ANY(:ids)"), {"ids": ids}
    )
    return {int(r.id): StoredFile.from_row(r) for r in rows}


# identities whose content was verified by SHA-256 in this process: (id, sha, path, identity)
_VERIFIED: OrderedDict[tuple, None] = OrderedDict()
_VERIFIED_MAX = 4096
_VERIFIED_LOCK = threading.Lock()


def _remember(key: tuple) -> None:
    with _VERIFIED_LOCK:
        _VERIFIED[key] = None
        _VERIFIED.move_to_end(key)
        while len(_VERIFIED) > _VERIFIED_MAX:
            _VERIFIED.popitem(last=False)


def _known(key: tuple) -> bool:
    with _VERIFIED_LOCK:
        if key in _VERIFIED:
            _VERIFIED.move_to_end(key)
            return True
    return False


class OpenedFile:
    """A stored recording's file, open and checked. Read it only through this object: as
    audio with ``soundfile()`` (or by passing it to ``soundscape.audio``'s readers), as bytes
    with ``pread``. One ``soundfile()`` at a time: they share the descriptor's offset."""

    def __init__(self, fd: int, stored: StoredFile, st: os.stat_result) -> None:
        self.fd = fd
        self.stored = stored
        self.path = Path(stored.path)
        self.size = st.st_size
        self.mtime = st.st_mtime

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> OpenedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def soundfile(self) -> sf.SoundFile:
        """libsndfile on the checked descriptor (from its start; the caller closes it)."""
        os.lseek(self.fd, 0, os.SEEK_SET)
        return sf.SoundFile(self.fd, closefd=False)

    def pread(self, n: int, offset: int) -> bytes:
        """Up to ``n`` bytes at ``offset`` (the descriptor's offset does not move)."""
        return os.pread(self.fd, n, offset)

    def iter_bytes(
        self, start: int = 0, end: int | None = None, chunk: int = 1 << 16
    ) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of the file in chunks."""
        stop = self.size if end is None else min(end, self.size)
        at = start
        while at < stop:
            block = self.pread(min(chunk, stop - at), at)
            if not block:
                return
            at += len(block)
            yield block

    def sha256(self) -> str:
        h = hashlib.sha256()
        for block in self.iter_bytes(chunk=_HASH_CHUNK):
            h.update(block)
        return h.hexdigest()


def _refuse(stored: StoredFile, why: str, *, gone: bool = False) -> StoredFileChanged:
    return StoredFileChanged(
        f"{stored.path}: recording {stored.recording_id}'s file {why}; nothing of it was read. "
        "Put the original file back at that path, or ingest the file again from where it is "
        "now (`soundscape ingest PATH --sensor SENSOR --model MODEL --replace`).",
        gone=gone,
    )


def _why_not(exc: OSError, name: str, dirfd: int, what: str) -> str:
    """Why ``name`` (in the folder ``dirfd``) could not be opened, in words."""
    try:
        link = stat.S_ISLNK(os.lstat(name, dir_fd=dirfd).st_mode)
    except OSError:
        link = False
    if link:
        return f"was replaced by a symbolic link ({what}{name!r})"
    return f"cannot be opened ({what}{name!r}: {exc.strerror or exc})"


def _open_nofollow(stored: StoredFile) -> int:
    """Open the stored path without following a symbolic link in any component."""
    path = stored.path
    parts = path.split("/")
    if not path.startswith("/") or any(p in ("", ".", "..") for p in parts[1:]):
        raise _refuse(stored, "has no absolute, normalised stored path")
    *folders, name = parts[1:]
    dirfd = os.open("/", _DIR_FLAGS)
    try:
        for part in folders:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=dirfd)
            except FileNotFoundError:
                raise _refuse(
                    stored, f"is no longer there (no folder {part!r})", gone=True
                ) from None
            except OSError as exc:
                raise _refuse(stored, _why_not(exc, part, dirfd, "folder ")) from None
            os.close(dirfd)
            dirfd = nxt
        try:
            return os.open(name, _FILE_FLAGS, dir_fd=dirfd)
        except FileNotFoundError:
            raise _refuse(stored, "is no longer there (moved or deleted)", gone=True) from None
        except OSError as exc:
            raise _refuse(stored, _why_not(exc, name, dirfd, "")) from None
    finally:
        os.close(dirfd)


def _check(fd: int, stored: StoredFile) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(stored, "is no longer a regular file")
    identity = identity_of(st)
    if stored.identity is not None and identity == stored.identity:
        return st
    if stored.size_bytes is not None and st.st_size != stored.size_bytes:
        raise _refuse(
            stored,
            f"changed since it was ingested ({st.st_size} bytes, {stored.size_bytes} then)",
        )
    key = (stored.recording_id, stored.sha256, stored.path, identity)
    if _known(key):
        return st
    digest = OpenedFile(fd, stored, st).sha256()
    if digest != stored.sha256:
        raise _refuse(stored, "changed since it was ingested (its SHA-256 differs)")
    if identity_of(os.fstat(fd)) != identity:  # written to while it was hashed
        raise _refuse(stored, "changed while it was being checked")
    _remember(key)
    return st


def open_checked(stored: StoredFile) -> OpenedFile:
    """The stored file of a recording, opened and checked against its stored identity
    (see the module's docstring); the caller closes it (``close()`` or ``with``).
    ``StoredFileChanged`` if it is not the file ingested."""
    fd = _open_nofollow(stored)
    try:
        st = _check(fd, stored)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(fd, stored, st)


@contextlib.contextmanager
def open_stored(stored: StoredFile) -> Iterator[OpenedFile]:
    """``open_checked`` as a context manager: the descriptor is closed on leaving."""
    with open_checked(stored) as opened:
        yield opened
