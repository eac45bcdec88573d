"""Ingest: decode files as a stream and store what each target makes of them.

A target (``soundscape.ingest_targets.Target``) is an embedder's space (windows embedded into
vectors, with class scores) or a transcriber's transcript (utterances with word times,
``speech.TranscriptTarget``); ``Ingestor`` loops over them without telling them apart.
One database transaction per recording: the recording row and everything its targets store
(binary COPY, streamed batch by batch so memory stays bounded) are committed together, so a
crash or Ctrl-C mid-file leaves nothing of that file behind and a re-run resumes with it.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from soundscape import checkpoints, concepts, speech
from soundscape.audio import AudioInfo, is_supported, probe
from soundscape.db import register_vector
from soundscape.embedders import get_model_class, load_model
from soundscape.errors import (
    AudioError,
    ConnectionLost,
    FileChanged,
    ServerRefused,
    SoundscapeError,
    StoredFileChanged,
)
from soundscape.formats.guano import read_guano
from soundscape.ingest_targets import (  # noqa: F401 - SEGMENT_* for bulk loaders
    SEGMENT_COPY,
    SEGMENT_TYPES,
    Recording,
    SpaceTarget,
    Target,
    store,
)
from soundscape.media_files import OpenedFile, StoredFile, identity_of, open_stored, sha256_file
from soundscape.occurrence import sensor_changed
from soundscape.overview_images import OverviewBuilder, has_overview, ingest_overview
from soundscape.sensors import Sensor, get_sensor
from soundscape.spaces import ensure_space, resolve_window
from soundscape.speakers import label_utterances
from soundscape.speech import TranscriptTarget
from soundscape.timeutil import localize, parse_start_time
from soundscape.transcribers import is_transcriber, load_transcriber

log = logging.getLogger(__name__)


def describe_counts(counts: dict[str, int]) -> str:
    """What ``counts`` (per space: windows; per transcriber: utterances) stored, in words:
    ``12 windows``, ``3 utterances`` or ``12 windows, 3 utterances``."""
    said = {name: n for name, n in counts.items() if is_transcriber(name)}
    windows = {name: n for name, n in counts.items() if name not in said}
    parts = []
    if windows or not said:
        parts.append(f"{sum(windows.values())} windows")
    if said:
        parts.append(f"{sum(said.values())} utterances")
    return ", ".join(parts)


@dataclass
class FileResult:
    path: str
    status: str  # "stored" | "skipped" | "failed"
    reason: str = ""
    recording_id: int | None = None
    duration_s: float = 0.0
    #: per space its windows, per transcriber its utterances (``describe_counts``)
    segments: dict[str, int] = field(default_factory=dict)
    #: the file's SHA-256 when it was read; for a failure, the exception behind it
    sha256: str | None = field(default=None, repr=False)
    exception: BaseException | None = field(default=None, repr=False)
    #: stored with a caveat (e.g. a truncated file kept with --allow-truncated)
    warning: str | None = None
    #: windows whose model outputs an interrupted ingest of the file had checkpointed
    resumed: int = 0

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "status": self.status,
            "reason": self.reason,
            "warning": self.warning,
            "recording_id": self.recording_id,
            "duration_s": self.duration_s,
            "segments": self.segments,
            "resumed_windows": self.resumed,
        }


@dataclass
class Summary:
    stored: int = 0
    skipped: int = 0
    failed: int = 0
    audio_s: float = 0.0
    #: windows stored (all spaces) and utterances (all transcribers)
    segments: int = 0
    utterances: int = 0
    #: the same per space or transcriber
    counts: dict[str, int] = field(default_factory=dict)
    results: list[FileResult] = field(default_factory=list)

    def add(self, r: FileResult) -> None:
        self.results.append(r)
        setattr(self, r.status, getattr(self, r.status) + 1)
        if r.status == "stored":
            self.audio_s += r.duration_s
            for name, n in r.segments.items():
                self.counts[name] = self.counts.get(name, 0) + n
                if is_transcriber(name):
                    self.utterances += n
                else:
                    self.segments += n

    def describe(self) -> str:
        """What was stored, in words (``describe_counts``)."""
        return describe_counts(self.counts)

    def as_dict(self) -> dict:
        return {
            "stored": self.stored,
            "skipped": self.skipped,
            "failed": self.failed,
            "audio_hours": self.audio_s / 3600,
            "segments": self.segments,
            "utterances": self.utterances,
        }


@dataclass
class Collected:
    """What ``collect_files`` found: the files to ingest, and the entries of the folders it
    walked that it passed over, each with the reason (for the summary)."""

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def broken_link(path: Path) -> str | None:
    """Why a symbolic link leads nowhere (a loop, or a target that does not exist), or None."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (it leads back to itself)"
        return "a dangling symbolic link (its target does not exist)"
    return None


def _passed_over(entry: Path, recursive: bool) -> str | None:
    """Why a folder entry is not ingested, or None if it is a supported audio file."""
    if broken := broken_link(entry):
        return broken
    if entry.is_dir():
        if recursive:
            return None
        if is_supported(entry):
            return "a folder named like an audio file (use -r to descend into it)"
        return "a sub-folder (use -r to descend into it)"
    if not entry.is_file():
        return "not a regular file"
    if not is_supported(entry):
        suffix = entry.suffix.lower() or "no extension"
        return f"unsupported format ({suffix}; supported: wav, flac, ogg, mp3)"
    return None


def collect_files(paths: Iterable[str | Path], recursive: bool = False) -> Collected:
    """Expand folders into the supported audio files they hold (sorted, de-duplicated).

    Files named explicitly are kept whatever their extension (or existence), so that an
    unsupported or missing one is reported as a failure rather than silently ignored. What a
    folder holds besides audio (other formats, folders named ``x.wav``, dangling symbolic
    links, sub-folders without ``recursive``) is listed in ``skipped`` with the reason.
    """
    out = Collected()
    seen: set[Path] = set()
    for p in map(Path, paths):
        if p.is_dir():
            found = []
            for f in sorted(p.rglob("*") if recursive else p.iterdir()):
                reason = _passed_over(f, recursive)
                if reason is None and not f.is_dir():
                    found.append(f)
                elif reason is not None:
                    out.skipped.append((f, reason))
            if not found:
                out.skipped.append((p, "a folder holding no supported audio files"))
        else:
            found = [p]
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.files.append(f)
    return out


def file_identity(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is rewritten, appended to or replaced: device, inode, size,
    modification time (ns)."""
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def check_unchanged(path: Path | OpenedFile, identity: tuple[int, int, int, int]) -> None:
    """Raise FileChanged if ``path`` (or an opened file) is no longer the file ``identity``
    was taken of."""
    try:
        if isinstance(path, OpenedFile):
            changed = identity_of(os.fstat(path.fd)) != identity
        else:
            changed = file_identity(path) != identity
    except OSError:
        changed = True
    if changed:
        raise FileChanged(
            f"{getattr(path, 'path', path)}: the file changed while it was being ingested "
            "(size, time or inode "
            "differ); nothing of it was stored. Ingest it again once it is complete "
            "(`soundscape watch --settle` waits for files to stop changing)."
        )


#: SQLSTATEs of a connection that is gone besides class 08 (connection exception): the server
#: shut down (57P01 admin, 57P02 crash) or is starting or stopping (57P03)
_GONE = ("57P01", "57P02", "57P03")

#: what to do when the server refuses a write, by SQLSTATE (or its class's first two characters)
_REFUSED = {
    "53100": "the database's disk is full: free space on it (`soundscape db status` shows "
    "the data folder)",
    "53200": "the server ran out of memory: stop other work on it",
    "53300": "the server has too many connections: close some",
    "53": "the server lacks a resource it needs",
    "55P03": "another session holds a lock it needed (a lock timeout): wait for it",
    "57014": "a statement was cancelled or timed out: check statement_timeout",
    "58": "the server had an I/O error: check its disk and log",
}


def _sqlstate(exc: BaseException) -> str | None:
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    return getattr(orig, "sqlstate", None) if isinstance(orig, psycopg.Error) else None


def connection_lost(exc: BaseException) -> bool:
    """True if a database error means the connection itself is gone (server stopped or
    restarting, network down), as opposed to a refusal of the server (:func:`refused`) or a
    problem with the data of one file. psycopg raises ``OperationalError`` for both; only a
    client-side failure (no SQLSTATE), class 08 and 57P01-57P03 are a lost connection."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if not isinstance(orig, psycopg.OperationalError):
        return False
    state = orig.sqlstate
    return state is None or state.startswith("08") or state in _GONE


def refused(exc: BaseException) -> str | None:
    """What to do, if the server refused a write for a reason of its own (full disk, no
    memory, too many connections, a lock or statement timeout, an I/O error: SQLSTATE classes
    53 and 58, 55P03, 57014); None for anything else."""
    state = _sqlstate(exc)
    if state is None or connection_lost(exc):
        return None
    return _REFUSED.get(state) or _REFUSED.get(state[:2])


#: how many times a transaction that lost a deadlock (or a serialization conflict) is tried
_RETRIES = 3


def _retryable(exc: sa.exc.DBAPIError) -> bool:
    """A database error that rolled the transaction back for another transaction's sake
    (deadlock, serialization failure): running it again is right."""
    return isinstance(exc.orig, psycopg.errors.TransactionRollback)


#: a stored recording by content, locked for this ingest, with its sensor and start
_STORED = "SELECT id, path, sensor_id, started_at FROM recordings WHERE sha256 = :h FOR UPDATE"


class WrongSensor(SoundscapeError):
    """A stored file was ingested again for another sensor without --replace."""


def interruption(exc: BaseException, path: Path) -> ConnectionLost | ServerRefused | None:
    """The error to raise when a database error is not the file's fault: the connection is
    gone (``ConnectionLost``) or the server refused the write (``ServerRefused``); else None."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    if connection_lost(exc):
        return ConnectionLost(
            f"lost the connection to the database while storing {path} ({reason}); "
            "nothing of that file was stored. Check that the database runs "
            "(`soundscape db status`), then run the same command again to resume."
        )
    advice = refused(exc)
    if advice is not None:
        return ServerRefused(
            f"the database refused to store {path} for now ({reason}); nothing of that "
            f"file was stored. {advice[0].upper()}{advice[1:]}, then run the same "
            "command again to resume."
        )
    return None


@dataclass
class _File:
    """A file being ingested, as it was read before storing it."""

    path: Path
    #: the checked stored file (backfill), read instead of ``path``
    opened: OpenedFile | None
    info: AudioInfo
    digest: str
    identity: tuple[int, int, int, int]

    @property
    def source(self) -> Path | OpenedFile:
        return self.opened if self.opened is not None else self.path

    @property
    def abs_path(self) -> str:
        return str(self.path) if self.opened is not None else str(self.path.resolve())


def _load_targets(
    engine: Engine,
    names: list[str],
    window_s: float | None,
    hop_s: float | None,
    allow_gaps: bool,
) -> list[Target]:
    """The targets of the models named: the embedders' spaces (created if new; every window
    and hop checked before any space is created), then the transcribers."""
    # Speech-to-text models (``whisper``) store utterances, not windows (soundscape.speech).
    said = [TranscriptTarget(load_transcriber(n)) for n in names if is_transcriber(n)]
    names = [n for n in names if not is_transcriber(n)]
    windows = {
        name: resolve_window(get_model_class(name), window_s, hop_s, allow_gaps=allow_gaps)
        for name in names
    }
    spaces = [_space_target(engine, name, *windows[name]) for name in names]
    return [*spaces, *said]


def _space_target(engine: Engine, name: str, window: float, hop: float) -> SpaceTarget:
    """The model ``name`` and its space for this window and hop (created if new)."""
    cls = get_model_class(name)
    model = load_model(name)
    labels = model.labels if cls.has_class_scores else None
    for attempt in range(_RETRIES):
        try:
            with engine.begin() as conn:
                space = ensure_space(conn, cls, window, hop, model.params, labels)
            return SpaceTarget(model, space)
        except sa.exc.DBAPIError as exc:  # a deadlock with another process: again
            if not _retryable(exc) or attempt == _RETRIES - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


class Ingestor:
    """Ingest files for one sensor into its targets (``ingest_targets.Target``): the spaces
    of the embedders named (windows) and the transcripts of the transcribers (utterances)."""

    def __init__(
        self,
        engine: Engine,
        sensor: str,
        models: list[str],
        *,
        window_s: float | None = None,
        hop_s: float | None = None,
        replace: bool = False,
        record_errors: bool = True,
        allow_truncated: bool = False,
        allow_gaps: bool = False,
    ) -> None:
        """``record_errors=False`` leaves failures out of ``ingest_errors`` (the job worker
        records a failure once, when a job fails for good). ``allow_truncated`` stores the
        decodable part of a truncated file (with a warning, marked in the recording's
        metadata) instead of failing it. ``allow_gaps`` accepts a hop longer than the window
        (``spaces.resolve_window``). Every model's window and hop are checked before any
        space is created."""
        if not models:
            raise SoundscapeError("no model given; use --model, e.g. --model birdnet")
        self.engine = engine
        #: writes outside a file's transaction (checkpoints) go here; the worker gives an
        #: engine of their own, as every commit on its ingest engine marks the job done
        self.side_engine = engine
        self.replace = replace
        self.allow_truncated = allow_truncated
        self.record_errors = record_errors
        #: called after every batch of every target; may raise to abandon the file (its
        #: transaction rolls back and the result is "failed" with that exception)
        self.on_batch: Callable[[], None] | None = None
        self._set_sensor(sensor)
        names = list(dict.fromkeys(m.strip().lower() for m in models if m.strip()))
        #: spaces first (in the order named), then transcribers
        self.targets: list[Target] = _load_targets(engine, names, window_s, hop_s, allow_gaps)
        self.model_names = ",".join(t.name for t in self.targets)
        with engine.begin() as conn:  # checkpoints of files nobody finished (two weeks)
            checkpoints.prune(conn)

    def _set_sensor(self, name: str) -> None:
        with self.engine.begin() as conn:
            self.sensor: Sensor = get_sensor(conn, name)
        try:
            self.tz = ZoneInfo(self.sensor.timezone)
        except ZoneInfoNotFoundError as exc:
            raise SoundscapeError(
                f"sensor {name!r} has an unknown timezone {self.sensor.timezone!r}"
            ) from exc

    def refresh_sensor(self) -> None:
        """Re-read the sensor (its timezone may have changed since this ingestor was made)."""
        self._set_sensor(self.sensor.name)

    @property
    def spaces(self) -> list[SpaceTarget]:
        """The embedders' targets (a model and its space)."""
        return [t for t in self.targets if isinstance(t, SpaceTarget)]

    @property
    def transcripts(self) -> list[TranscriptTarget]:
        """The transcribers' targets."""
        return [t for t in self.targets if isinstance(t, TranscriptTarget)]

    # -- one file ---------------------------------------------------------------------------
    def ingest_file(
        self,
        path: Path,
        *,
        start_time: datetime | None = None,
        on_progress: Callable[[float], None] | None = None,
        stored: StoredFile | None = None,
    ) -> FileResult:
        """Store one file; never raises for a bad file (the result says why it failed).

        ``stored`` (backfill): the recording's stored file, read only through
        ``media_files.open_stored`` (refused if it is a symbolic link or not the file that
        was ingested: another identity and SHA-256).
        """
        if stored is None:
            return self._ingest(Path(path), start_time, on_progress, None)
        try:
            with open_stored(stored) as opened:
                return self._ingest(Path(stored.path), start_time, on_progress, opened)
        except StoredFileChanged as exc:
            return self._failed(str(path), stored.sha256, str(exc))

    @staticmethod
    def _read(path: Path, opened: OpenedFile | None) -> _File:
        """Identity, header and SHA-256 of the file (raises AudioError, OSError)."""
        if opened is None:
            before = file_identity(path)
            return _File(path, None, probe(path), sha256_file(path), before)
        before = identity_of(os.fstat(opened.fd))
        return _File(path, opened, probe(opened), opened.sha256(), before)

    def _ingest(
        self,
        path: Path,
        start_time: datetime | None,
        on_progress: Callable[[float], None] | None,
        opened: OpenedFile | None,
    ) -> FileResult:
        shown = str(path)
        try:
            f = self._read(path, opened)
        except AudioError as exc:
            return self._failed(shown, None, str(exc))
        except OSError as exc:
            return self._failed(shown, None, f"{path}: cannot read the file: {exc.strerror or exc}")
        if opened is not None and f.digest != opened.stored.sha256:
            return self._failed(
                shown,
                f.digest,
                f"{path}: the file changed since it was ingested (SHA-256 differs); "
                "ingest it as a new recording, or put the original back",
            )
        try:
            return self._store_retrying(f, start_time, on_progress)
        except (FileChanged, WrongSensor) as exc:
            return self._failed(shown, f.digest, str(exc))
        except AudioError as exc:
            try:  # a file rewritten mid-ingest may fail to decode: say what really happened
                check_unchanged(f.source, f.identity)
            except FileChanged as changed:
                return self._failed(shown, f.digest, str(changed))
            return self._failed(shown, f.digest, str(exc))
        except (KeyboardInterrupt, SystemExit):
            raise
        except (sa.exc.DBAPIError, psycopg.Error) as exc:
            if (outage := interruption(exc, path)) is not None:
                raise outage from exc
            log.debug("ingest of %s failed", path, exc_info=True)
            orig = getattr(exc, "orig", None) or exc
            return self._failed(shown, f.digest, f"{path}: {type(exc).__name__}: {orig}")
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            log.debug("ingest of %s failed", path, exc_info=True)
            return self._failed(shown, f.digest, f"{path}: {type(exc).__name__}: {exc}")

    def _store_retrying(
        self, f: _File, start_time: datetime | None, on_progress: Callable[[float], None] | None
    ) -> FileResult:
        for attempt in range(_RETRIES):
            try:
                return self._store(f, start_time, on_progress)
            except sa.exc.DBAPIError as exc:  # a deadlock rolled the file back: again
                if not _retryable(exc) or attempt == _RETRIES - 1:
                    raise
                log.info("retrying %s after %s", f.path, exc.orig)
                time.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    def _store(
        self, f: _File, start_time: datetime | None, on_progress: Callable[[float], None] | None
    ) -> FileResult:
        """Store the file's recording and what each target needs of it, in one transaction."""
        guano = read_guano(f.source)
        notes = list(guano.warnings) if guano is not None else []
        if start_time is not None:  # --start-time, then GUANO's Timestamp, then the file name
            started: datetime | None = start_time
        elif guano is not None and guano.timestamp is not None:
            started = guano.timestamp
        else:
            started = parse_start_time(f.path.name)
        started_at = localize(started, self.tz) if started is not None else None
        if guano is not None and guano.position is not None:
            with self.side_engine.begin() as conn:
                notes += _place_sensor(conn, self.sensor, *guano.position)
        with self.engine.begin() as conn:
            register_vector(conn)
            rec_id, rec = _claim(conn, self.sensor, f, started_at)
            todo = self.targets
            if rec is not None:
                todo, started_at = self._todo(conn, f, rec, started_at)
                if not todo:
                    where = "" if rec.path == f.abs_path else f" as {rec.path}"
                    reason = f"already stored{where} (use --replace to re-embed)"
                    return FileResult(str(f.path), "skipped", reason, rec_id, f.info.duration_s)
            recording = Recording(
                rec_id, self.sensor.id, self.tz, f.source, started_at, self.allow_truncated,
                sha256=f.digest, side_engine=self.side_engine,
            )  # fmt: skip
            result = FileResult(str(f.path), "stored", recording_id=rec_id)
            if guano is not None and guano.fields:
                conn.execute(
                    sa.text(
                        "UPDATE recordings SET metadata = metadata || CAST(:m AS jsonb) "
                        "WHERE id = :r"
                    ),
                    {"m": json.dumps(guano.metadata()), "r": rec_id},
                )
            # the recording page's plot is drawn from its stored spectrogram, made from a
            # space's decoded windows (soundscape.overview_images)
            built = None if has_overview(conn, rec_id) else OverviewBuilder(
                f.info.duration_s or 0.0, f.info.sample_rate
            )  # fmt: skip
            for i, target in enumerate(todo):
                # Progress is reported by the first target only, so the bar counts audio once.
                stored = store(conn, target, recording, on_progress if i == 0 else None,
                               self.on_batch, built.tap if built else None)  # fmt: skip
                result.segments[target.name] = stored.count
                result.duration_s = stored.duration_s
                result.warning = result.warning or stored.truncated
                result.resumed += stored.reused
            if any(isinstance(t, SpaceTarget) for t in todo):
                # concepts' detections follow the new windows, in the same transaction
                concepts.follow_recording(conn, rec_id)
            if self.transcripts or any(t.model.voice_prints for t in self.spaces):
                label_utterances(conn, [rec_id])  # who said what (issue 26)
            if built is not None:
                ingest_overview(conn, rec_id, f.source, result.duration_s, built)
            _seal(conn, f, result)
        if notes:  # after _seal, which marks only truncation in the metadata
            result.warning = "; ".join([*filter(None, [result.warning]), *notes])
        return result

    def _todo(
        self, conn: Connection, f: _File, rec: Any, started_at: datetime | None
    ) -> tuple[list[Target], datetime | None]:
        """For a stored recording: the targets to store, and the start their rows take."""
        if self.replace:
            for target in self.targets:
                target.clear(conn, rec.id)
            _move(conn, self.sensor, rec.id, f.abs_path, started_at)
            return self.targets, started_at
        todo = [t for t in self.targets if not t.has(conn, rec.id)]
        if todo and rec.sensor_id != self.sensor.id:
            # A file belongs to one sensor: new windows on another sensor than their
            # recording's were counted under the wrong place and time zone.
            owner = conn.execute(
                sa.text("SELECT name FROM sensors WHERE id = :i"), {"i": rec.sensor_id}
            ).scalar()
            raise WrongSensor(
                f"{f.path}: already stored as recording {rec.id} of sensor "
                f"{owner!r}, not {self.sensor.name!r}; nothing was added. Add "
                f"models to it with -s {owner}, or move it (and all its windows) "
                f"to {self.sensor.name!r} with --replace"
            )
        # the windows of new spaces start when the stored recording starts
        return todo, rec.started_at

    def _failed(self, path: str, digest: str | None, reason: str) -> FileResult:
        """A failed result (with the exception being handled, if any), recorded in
        ``ingest_errors`` unless ``record_errors`` is off."""
        result = FileResult(path, "failed", reason, sha256=digest, exception=sys.exc_info()[1])
        if not self.record_errors:
            return result
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO ingest_errors (path, sha256, sensor, models, error) "
                        "VALUES (:p, :h, :s, :m, :e)"
                    ),
                    {
                        "p": path,
                        "h": digest,
                        "s": self.sensor.name,
                        "m": self.model_names,
                        "e": reason,
                    },
                )
        except sa.exc.SQLAlchemyError:  # the error is still reported on stderr
            log.warning("could not record the failure of %s in ingest_errors", path, exc_info=True)
        return result

    # -- many files ---------------------------------------------------------------------------
    def run(
        self,
        files: list[Path],
        *,
        start_time: datetime | None = None,
        fail_fast: bool = False,
        on_result: Callable[[FileResult], None] | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> Summary:
        summary = Summary()
        for r in self.iter_run(files, start_time=start_time, on_progress=on_progress):
            summary.add(r)
            if on_result is not None:
                on_result(r)
            if fail_fast and r.status == "failed":
                break
        return summary

    def iter_run(
        self,
        files: list[Path],
        *,
        start_time: datetime | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> Iterator[FileResult]:
        for f in files:
            yield self.ingest_file(f, start_time=start_time, on_progress=on_progress)


# -- the recording's rows ------------------------------------------------------------------
#: how far (km) a file's GUANO position may be from its sensor's before ingest warns
POSITION_CONFLICT_KM = 0.2


def _distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (latitude, longitude) in degrees (haversine)."""
    (la1, lo1), (la2, lo2) = (tuple(math.radians(v) for v in p) for p in (a, b))
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    )
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


def _place_sensor(conn: Connection, sensor: Sensor, lat: float, lon: float) -> list[str]:
    """A file's GUANO position: the sensor's if it has none (and BirdNET's location filter
    follows, ``occurrence.sensor_changed``); a warning if the sensor is elsewhere."""
    row = conn.execute(
        sa.text(
            "UPDATE sensors SET latitude = :lat, longitude = :lon WHERE id = :s "
            "AND latitude IS NULL AND longitude IS NULL RETURNING id"
        ),
        {"lat": lat, "lon": lon, "s": sensor.id},
    ).fetchone()
    if row is not None:
        sensor_changed(conn, sensor.id, lat, lon)
        return []
    known = conn.execute(
        sa.text("SELECT latitude, longitude FROM sensors WHERE id = :s"), {"s": sensor.id}
    ).fetchone()
    if known is None or known.latitude is None or known.longitude is None:
        return []
    away = _distance_km((known.latitude, known.longitude), (lat, lon))
    if away <= POSITION_CONFLICT_KM:
        return []
    return [
        f"its GUANO Loc Position ({lat:g} {lon:g}) is {away:.1f} km from sensor "
        f"{sensor.name!r} ({known.latitude:g} {known.longitude:g}); the recording keeps its "
        "own, the sensor keeps its (check that the file is this sensor's; `soundscape sensors "
        "add --update` changes a sensor's position)"
    ]


def _claim(
    conn: Connection, sensor: Sensor, f: _File, started_at: datetime | None
) -> tuple[int, Any]:
    """The recording's id, and its stored row (locked) if it was stored before (None if
    this ingest inserted it)."""
    rec = conn.execute(sa.text(_STORED), {"h": f.digest}).fetchone()
    if rec is not None:
        return rec.id, rec
    rec_id = conn.execute(
        sa.text(
            "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
            "sample_rate, channels, duration_s, started_at) VALUES (:sensor, :path, "
            ":h, :size, :fmt, :rate, :ch, :dur, :start) "
            "ON CONFLICT (sha256) DO NOTHING RETURNING id"
        ),
        {
            "sensor": sensor.id,
            "path": f.abs_path,
            "h": f.digest,
            "size": os.path.getsize(f.path),
            "fmt": f.info.format,
            "rate": f.info.sample_rate,
            "ch": f.info.channels,
            "dur": f.info.duration_s,
            "start": started_at,
        },
    ).scalar()
    if rec_id is not None:
        return rec_id, None
    # Another process stored it between our SELECT and INSERT (the INSERT waited for its
    # commit): go on as for a stored recording, target by target.
    rec = conn.execute(sa.text(_STORED), {"h": f.digest}).fetchone()
    if rec is None:
        raise SoundscapeError(
            f"{f.path}: another process stored this recording and removed it "
            "again meanwhile; run the command again"
        )
    return rec.id, rec


def _move(
    conn: Connection, sensor: Sensor, rec_id: int, abs_path: str, started_at: datetime | None
) -> None:
    """``--replace``: the recording, and the windows and utterances of all its spaces and
    transcripts, follow ``sensor``, path and start."""
    conn.execute(
        sa.text(
            "UPDATE recordings SET sensor_id = :sensor, path = :path, "
            "started_at = :start, ingested_at = now() WHERE id = :r"
        ),
        {"sensor": sensor.id, "path": abs_path, "start": started_at, "r": rec_id},
    )
    conn.execute(
        sa.text(
            "UPDATE segments SET sensor_id = :sensor, "
            "starts_at = CAST(:start AS timestamptz) + start_s * interval '1 second', "
            "local_date = ((CAST(:start AS timestamptz) + start_s * interval '1 second') "
            "AT TIME ZONE :tz)::date, "
            "local_time = ((CAST(:start AS timestamptz) + start_s * interval '1 second') "
            "AT TIME ZONE :tz)::time WHERE recording_id = :r"
        ),
        {
            "sensor": sensor.id,
            "start": started_at,
            "tz": sensor.timezone,
            "r": rec_id,
        },
    )
    speech.follow_recording(conn, rec_id, sensor.id, sensor.timezone, started_at)


def _seal(conn: Connection, f: _File, result: FileResult) -> None:
    """Before the commit: refuse a file that changed while it was decoded, record where it
    is on disk and its exact duration, resolve its earlier errors."""
    # What was hashed must be what was decoded: refuse a file that changed meanwhile.
    check_unchanged(f.source, f.identity)
    # Where the stored file is on disk (media_files.open_stored checks it on reading).
    dev, ino, size, mtime = f.identity
    conn.execute(
        sa.text(
            "UPDATE recordings SET size_bytes = :size, file_device = :dev, "
            "file_inode = :ino, file_mtime_ns = :mtime WHERE id = :r AND path = :p"
        ),
        {"dev": dev, "ino": ino, "size": size, "mtime": mtime, "r": result.recording_id,
         "p": f.abs_path},
    )  # fmt: skip
    # The exact duration comes from the samples decoded, not the header.
    conn.execute(
        sa.text(
            # no CASE: Citus refuses non-immutable functions in a CASE of an UPDATE
            "UPDATE recordings SET duration_s = :d, "
            "metadata = (metadata - 'truncated') || CAST(:trunc AS jsonb) WHERE id = :r"
        ),
        {
            "d": result.duration_s,
            "r": result.recording_id,
            "trunc": json.dumps({"truncated": result.warning} if result.warning else {}),
        },
    )
    conn.execute(
        sa.text(
            "UPDATE ingest_errors SET resolved_at = now() "
            "WHERE resolved_at IS NULL AND (path = :p OR sha256 = :h)"
        ),
        {"p": str(f.path), "h": f.digest},
    )
    checkpoints.clear(conn, f.digest)  # what an interrupted ingest saved is stored now


@dataclass
class BackfillItem:
    recording_id: int
    path: str
    sensor: str
    sha256: str
    started_at: datetime | None
    duration_s: float | None = None
    #: the stored file's identity (media_files.open_stored reads it by this)
    stored: StoredFile | None = field(default=None, repr=False)


def backfill_todo(
    engine: Engine,
    space_ids: list[int],
    sensors: list[str] | None = None,
    transcribers: list[tuple[str, str]] | None = None,
) -> list[BackfillItem]:
    """Stored recordings that lack at least one of ``space_ids`` or a transcript by one of
    ``transcribers`` ((model, version) pairs) (optionally of some sensors)."""
    said = transcribers or []
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT r.id, r.path, s.name AS sensor, r.sha256, r.started_at, r.duration_s, "
                "r.size_bytes, r.file_device, r.file_inode, r.file_mtime_ns, r.format, "
                "r.sample_rate FROM recordings r "
                "JOIN sensors s ON s.id = r.sensor_id "
                "WHERE (CAST(:sensors AS text[]) IS NULL OR s.name = ANY(:sensors)) "
                "AND (EXISTS (SELECT 1 FROM unnest(CAST(:spaces AS integer[])) sp(id) "
                "WHERE NOT EXISTS (SELECT 1 FROM recording_spaces rs "
                "WHERE rs.recording_id = r.id AND rs.space_id = sp.id)) "
                "OR EXISTS (SELECT 1 FROM unnest(CAST(:tm AS text[]), CAST(:tv AS text[])) "
                "t(model, version) WHERE NOT EXISTS (SELECT 1 FROM transcripts tr "
                "WHERE tr.recording_id = r.id AND tr.model = t.model "
                "AND tr.model_version = t.version))) "
                "ORDER BY s.name, r.id"
            ),
            {
                "sensors": sensors or None,
                "spaces": space_ids,
                "tm": [m for m, _ in said],
                "tv": [v for _, v in said],
            },
        )
        return [
            BackfillItem(
                r.id,
                r.path,
                r.sensor,
                r.sha256,
                r.started_at,
                r.duration_s,
                StoredFile.from_row(r),
            )  # fmt: skip
            for r in rows
        ]


def backfill(
    engine: Engine,
    models: list[str],
    *,
    window_s: float | None = None,
    hop_s: float | None = None,
    allow_gaps: bool = False,
    sensors: list[str] | None = None,
    on_plan: Callable[[list[BackfillItem]], None] | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> Summary:
    """Add a new space's windows to recordings already stored, re-decoding them from their
    path. A file that moved or changed (SHA-256) is reported and recorded in ingest_errors;
    each recording is one transaction, so an interrupted backfill resumes where it stopped.
    ``on_plan`` gets the recordings to do (with their durations) before the first starts,
    ``on_result`` each one's result, in the same order."""
    summary = Summary()
    ingestors: dict[str, Ingestor] = {}
    with engine.connect() as conn:
        names = [n[0] for n in conn.execute(sa.text("SELECT name FROM sensors ORDER BY name"))]
    if not names:
        return summary
    # Resolve the spaces once (creating them if new) through an ingestor of any sensor.
    first = Ingestor(
        engine,
        (sensors or names)[0],
        models,
        window_s=window_s,
        hop_s=hop_s,
        allow_gaps=allow_gaps,
    )
    ingestors[first.sensor.name] = first
    space_ids = [t.space.id for t in first.spaces]
    said = [t.key for t in first.transcripts]
    todo = backfill_todo(engine, space_ids, sensors, said)
    if on_plan is not None:
        on_plan(todo)
    for item in todo:
        ing = ingestors.get(item.sensor)
        if ing is None:
            ing = Ingestor(
                engine,
                item.sensor,
                models,
                window_s=window_s,
                hop_s=hop_s,
                allow_gaps=allow_gaps,
            )
            ingestors[item.sensor] = ing
        # read by its stored identity only (media_files.open_stored): a file that moved,
        # changed or became a symbolic link is refused and recorded in ingest_errors
        result = ing.ingest_file(
            Path(item.path),
            start_time=item.started_at,
            on_progress=on_progress,
            stored=item.stored,
        )
        summary.add(result)
        if on_result is not None:
            on_result(result)
    return summary
