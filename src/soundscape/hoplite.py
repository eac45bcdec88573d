"""perch-hoplite databases in and out (issue 25).

A hoplite database (perch-hoplite 1.x, written by BirdNET-Analyzer's ``embeddings`` command,
OpenSoundscape and Google's agile-modelling notebooks) is a folder with two files:
``hoplite.sqlite`` (tables ``hoplite_metadata``, ``deployments``, ``recordings``, ``windows``,
``annotations``; a window's ``offsets`` are a BLOB of little-endian float64 [start, end]
seconds) and ``usearch.index`` (a USearch HNSW index of float16 vectors keyed by window id,
inner-product metric). Both are read here directly (``sqlite3`` and the ``usearch`` package,
the ``hoplite`` extra), without perch-hoplite itself, whose numpy>=2 pin clashes with ours.

``import_hoplite`` maps deployments to sensors, recordings to recordings, windows and their
vectors to the windows of the model's space (binary COPY, as ingest stores them) and
annotations to ``annotations`` with source ``hoplite``. One transaction per recording, and a
recording whose windows are stored in the space is skipped: an interrupted import resumes
where it stopped and importing again adds nothing. ``export_hoplite`` writes a space as a new
hoplite database that perch-hoplite's own ``SQLiteUSearchDB`` opens and searches.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from soundscape.db import raw_connection, register_vector
from soundscape.embedders import Embedder, get_model_class, load_model
from soundscape.errors import ModelUnavailable, SoundscapeError
from soundscape.ingest_targets import SEGMENT_COPY, SEGMENT_TYPES
from soundscape.sensors import Sensor, add_sensor, check_name, get_sensor
from soundscape.spaces import (
    Space,
    drop_hnsw_index,
    ensure_space,
    get_space,
    resolve_window,
    set_index_type,
)
from soundscape.timeutil import localize, parse_iso_start, parse_start_time, window_times

log = logging.getLogger(__name__)

SQLITE_FILE = "hoplite.sqlite"
INDEX_FILE = "usearch.index"
#: the annotation source of imported labels (migration 0033 allows it)
SOURCE = "hoplite"
#: hoplite's LabelType (0 negative, 1 positive, 2 uncertain) and soundscape's verdicts
VERDICTS = {0: "no", 1: "yes", 2: "unsure"}
LABEL_TYPES = {v: k for k, v in VERDICTS.items()}
#: hoplite model keys (``model_config.model_key``) that are a soundscape model
MODEL_KEYS = {"birdnet": "birdnet"}
#: the metadata key of BirdNET-Analyzer's embeddings command (its audio speed and band)
BIRDNET_ANALYZER = "birdnet_analyzer_settings"
#: windows read from SQLite and vectors from USearch at a time
BATCH = 4096

# perch-hoplite 1.0's schema (sqlite_usearch_impl.SQLiteUSearchDB._setup_tables)
_HOPLITE_SCHEMA = """
CREATE TABLE hoplite_metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, project TEXT NOT NULL,
    latitude REAL, longitude REAL, UNIQUE (name, project));
CREATE TABLE recordings (
    id INTEGER PRIMARY KEY AUTOINCREMENT, filename TEXT NOT NULL, datetime TEXT,
    deployment_id INTEGER REFERENCES deployments(id) ON DELETE CASCADE,
    UNIQUE (id, deployment_id), UNIQUE (filename, deployment_id));
CREATE TABLE windows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
    offsets FLOAT_LIST NOT NULL, UNIQUE (id, recording_id, offsets));
CREATE TABLE annotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
    offsets FLOAT_LIST NOT NULL, label TEXT NOT NULL, label_type INTEGER NOT NULL,
    provenance TEXT NOT NULL, UNIQUE (id, recording_id, offsets));
CREATE INDEX idx_annotations ON annotations(recording_id, offsets, label, label_type, provenance);
CREATE INDEX idx_labels ON annotations(label, label_type, provenance);
CREATE INDEX idx_recordings_deployment_id ON recordings(deployment_id);
CREATE INDEX idx_windows_recording_id ON windows(recording_id);
"""
#: hoplite's default USearch settings (sqlite_usearch_impl.get_default_usearch_config)
EXPANSION_ADD = 256
EXPANSION_SEARCH = 128


def _usearch() -> Any:
    try:
        from usearch import index
    except ImportError as exc:
        raise ModelUnavailable(
            "reading and writing hoplite databases needs the usearch package: "
            "pip install 'soundscape[hoplite]' (or pip install usearch)"
        ) from exc
    return index


def _offsets(blob: bytes) -> tuple[float, float]:
    """A hoplite ``offsets`` BLOB (little-endian float64 [start, end])."""
    values = np.frombuffer(blob, dtype="<f8")
    if len(values) < 2:
        raise SoundscapeError(f"a hoplite window's offsets hold {len(values)} value(s), not 2")
    return float(values[0]), float(values[1])


def _array(value: Any) -> np.ndarray:
    """A pgvector value as float32 numbers (a numpy array or pgvector's ``Vector``)."""
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, np.float32)


def _offsets_blob(start: float, end: float) -> bytes:
    return np.array([start, end], dtype="<f8").tobytes()


@dataclass
class Deployment:
    id: int
    name: str
    project: str
    latitude: float | None
    longitude: float | None
    extra: dict[str, Any]


@dataclass
class HRecording:
    id: int
    filename: str
    datetime: str | None
    deployment_id: int | None
    extra: dict[str, Any]


@dataclass
class HAnnotation:
    start_s: float
    end_s: float
    label: str
    verdict: str
    author: str


class HopliteReader:
    """A hoplite database folder, opened read-only: perch-hoplite 1.x's layout, or the one
    before 1.0 (``legacy``: tables ``hoplite_sources`` (dataset, source file),
    ``hoplite_embeddings`` (a window: source and offsets) and ``hoplite_labels`` (labels of
    windows), what BirdNET-Analyzer's ``embeddings`` command writes). Both keep the vectors in
    ``usearch.index``, keyed by window id. A legacy source is read as a recording of the
    deployment named by its path's first folder (a relative path) or its dataset."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        sqlite_path, index_path = self.path / SQLITE_FILE, self.path / INDEX_FILE
        if not sqlite_path.is_file():
            raise SoundscapeError(
                f"{self.path}: not a hoplite database (no {SQLITE_FILE} in it); name the "
                "folder that perch-hoplite (or BirdNET-Analyzer's embeddings command) wrote"
            )
        self.db = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master")}
        self.legacy = "hoplite_embeddings" in tables and "windows" not in tables
        if not self.legacy and ("windows" not in tables or "deployments" not in tables):
            self.db.close()
            raise SoundscapeError(
                f"{self.path}: {SQLITE_FILE} has none of hoplite's tables (deployments, "
                "windows; or hoplite_sources, hoplite_embeddings before perch-hoplite 1.0)"
            )
        if self.legacy and "embedding" in self._columns("hoplite_embeddings"):
            self.db.close()
            raise SoundscapeError(
                f"{self.path}: an early hoplite database that keeps vectors in SQLite; open "
                "it with perch-hoplite and copy it into a SQLite+USearch database "
                "(db_loader), then import that"
            )
        if not index_path.is_file():
            self.db.close()
            raise SoundscapeError(
                f"{self.path}: no {INDEX_FILE} beside {SQLITE_FILE} (hoplite keeps the "
                "vectors there); copy the whole database folder"
            )
        value = "data" if self.legacy else "value"
        self.metadata = {
            k: json.loads(v)
            for k, v in self.db.execute(f"SELECT key, {value} FROM hoplite_metadata")
        }
        usearch = _usearch()
        self.index = usearch.Index.restore(str(index_path), view=True)
        if self.index is None:
            raise SoundscapeError(f"{index_path}: not a USearch index file")
        self.dimension = int(self.index.ndim)
        #: a window's length when hoplite stored only its start (agile embeddings before 1.0)
        cfg = (self.metadata.get("model_config") or {}).get("model_config") or {}
        self.window_s: float | None = cfg.get("window_size_s")
        self._legacy_deps: dict[tuple[str, str], int] = {}

    def close(self) -> None:
        self.db.close()
        self.index = None

    def __enter__(self) -> HopliteReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _columns(self, table: str) -> list[str]:
        return [r[1] for r in self.db.execute(f"PRAGMA table_info({table})")]

    def _rows(self, sql: str, args: tuple = ()) -> Iterator[dict[str, Any]]:
        cur = self.db.execute(sql, args)
        names = [c[0] for c in cur.description]
        for row in cur:
            yield dict(zip(names, row))

    def _offsets(self, blob: bytes) -> tuple[float, float]:
        """A window's (start, end): 1.x stores [start, end] as float64; before 1.0, float32
        [start, end] (BirdNET-Analyzer) or [start] (float32, or float16 in early ones)."""
        n = len(blob)
        if not self.legacy or n == 16:
            return _offsets(blob)
        values = np.frombuffer(blob, dtype="<f4" if n % 4 == 0 else "<f2").astype(float)
        if len(values) >= 2:
            return float(values[0]), float(values[1])
        if self.window_s is None:
            raise SoundscapeError(
                f"{self.path}: its windows store only their start and no model_config gives "
                "their length; name the model with --model"
            )
        return float(values[0]), float(values[0]) + float(self.window_s)

    def _legacy_deployment(self, dataset: str, source: str) -> tuple[str, str]:
        """(deployment, project) of a source before 1.0: its relative path's first folder
        (hoplite's agile embedding), else its dataset."""
        first, sep, _ = source.partition("/")
        return (first if sep and not source.startswith("/") else dataset), dataset

    def deployments(self) -> dict[int, Deployment]:
        if self.legacy:
            self.recordings()  # fills the deployments met
            return {
                i: Deployment(i, name, project, None, None, {})
                for (name, project), i in self._legacy_deps.items()
            }
        out = {}
        for r in self._rows("SELECT * FROM deployments ORDER BY id"):
            base = {k: r.pop(k) for k in ("id", "name", "project", "latitude", "longitude")}
            out[base["id"]] = Deployment(**base, extra=_plain(r))
        return out

    def recordings(self) -> list[HRecording]:
        out = []
        if self.legacy:
            for rid, dataset, source in self.db.execute(
                "SELECT id, dataset, source FROM hoplite_sources ORDER BY id"
            ):
                key = self._legacy_deployment(str(dataset), str(source))
                dep = self._legacy_deps.setdefault(key, len(self._legacy_deps) + 1)
                out.append(HRecording(rid, str(source), None, dep, {"dataset": dataset}))
            return out
        for r in self._rows("SELECT * FROM recordings ORDER BY id"):
            base = {k: r.pop(k) for k in ("id", "filename", "datetime", "deployment_id")}
            out.append(HRecording(**base, extra=_plain(r)))
        return out

    def windows(self, recording_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, starts, ends) of a recording's windows, in time order."""
        sql = (
            "SELECT id, offsets FROM hoplite_embeddings WHERE source_idx = ?"
            if self.legacy
            else "SELECT id, offsets FROM windows WHERE recording_id = ?"
        )
        rows = [(i, *self._offsets(o)) for i, o in self.db.execute(sql, (recording_id,))]
        rows.sort(key=lambda r: (r[1], r[0]))
        ids = np.array([r[0] for r in rows], np.int64)
        return ids, np.array([r[1] for r in rows]), np.array([r[2] for r in rows])

    def annotations(self, recording_id: int) -> list[HAnnotation]:
        """The recording's labels (before 1.0: the labels of its windows, over the window)."""
        sql = (
            "SELECT e.offsets, l.label, l.type, l.provenance FROM hoplite_labels l "
            "JOIN hoplite_embeddings e ON e.id = l.embedding_id WHERE e.source_idx = ? "
            "ORDER BY l.id"
            if self.legacy
            else "SELECT offsets, label, label_type, provenance FROM annotations "
            "WHERE recording_id = ? ORDER BY id"
        )
        out = []
        for offsets, label, label_type, provenance in self.db.execute(sql, (recording_id,)):
            start, end = self._offsets(offsets)
            verdict = VERDICTS.get(int(label_type))
            if verdict is None:
                raise SoundscapeError(
                    f"{self.path}: annotation {label!r} of recording {recording_id} has "
                    f"label_type {label_type}; hoplite's are 0 (negative), 1 (positive), "
                    "2 (uncertain)"
                )
            out.append(HAnnotation(start, end, str(label), verdict, str(provenance)))
        return out

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The windows' vectors (float32), from the USearch index."""
        if not len(ids):
            return np.zeros((0, self.dimension), np.float32)
        found = np.asarray(self.index.contains(ids), bool)
        if not found.all():
            missing = ids[~found][:5].tolist()
            raise SoundscapeError(
                f"{self.path}: {int((~found).sum())} window(s) have no vector in {INDEX_FILE} "
                f"(ids {missing}...); the database was not committed completely: open it "
                "with perch-hoplite and commit, or re-embed those recordings"
            )
        return np.asarray(self.index.get(ids), dtype=np.float32).reshape(len(ids), -1)

    def shape(self) -> tuple[float | None, float | None]:
        """(window, hop) in seconds: the model config's, else the windows' typical length
        and the typical step between consecutive windows of a recording."""
        cfg = (self.metadata.get("model_config") or {}).get("model_config") or {}
        window, hop = cfg.get("window_size_s"), cfg.get("hop_size_s")
        if window and hop:
            return float(window), float(hop)
        lengths: list[float] = []
        steps: list[float] = []
        for rec in self.recordings()[:50]:
            _, starts, ends = self.windows(rec.id)
            lengths.extend((ends - starts).tolist())
            diffs = np.diff(np.unique(starts))
            steps.extend(diffs[diffs > 1e-6].tolist())
        w = float(np.median(lengths)) if lengths else None
        h = float(np.median(steps)) if steps else w
        return (float(window) if window else w), (float(hop) if hop else h)


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """Extra columns as JSON values (a FLOAT_LIST BLOB as its numbers)."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, bytes):
            v = np.frombuffer(v, dtype="<f8").tolist() if len(v) % 8 == 0 else v.hex()
        out[k] = v
    return out


# ------------------------------------------------------------------------------ import
@dataclass
class ImportSummary:
    space: str = ""
    recordings: int = 0
    skipped: int = 0
    windows: int = 0
    annotations: int = 0
    sensors_created: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_row(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "recordings": self.recordings,
            "skipped": self.skipped,
            "windows": self.windows,
            "annotations": self.annotations,
            "sensors_created": ", ".join(self.sensors_created),
        }


def hoplite_model(reader: HopliteReader, model: str | None) -> type[Embedder]:
    """The soundscape model whose space the database's vectors go into: ``model``, else the
    one its ``model_config`` names; its dimension must be the database's."""
    cfg = reader.metadata.get("model_config") or {}
    key = cfg.get("model_key")
    if key is None and BIRDNET_ANALYZER in reader.metadata:
        key = "birdnet"  # BirdNET-Analyzer's embeddings command (BirdNET 2.4)
    if model is None:
        model = MODEL_KEYS.get(str(key))
        if model is None:
            raise SoundscapeError(
                f"{reader.path}: its vectors are of hoplite model {key or 'unknown'!r}, which "
                "is no soundscape model; name the soundscape model that made them with "
                "--model (e.g. --model birdnet)"
            )
    cls = get_model_class(model)
    if cls.dimension != reader.dimension:
        raise SoundscapeError(
            f"{reader.path}: its vectors have {reader.dimension} dimensions, model "
            f"{cls.name!r} makes {cls.dimension}; name the model that made them with --model"
        )
    path = str((cfg.get("model_config") or {}).get("model_path") or "")
    if cls.name == "birdnet" and "V2." in path and f"V{cls.version}" not in path:
        raise SoundscapeError(
            f"{reader.path}: its vectors are BirdNET's {path.rsplit('/', 1)[-1]}, not BirdNET "
            f"{cls.version} (soundscape's); vectors of two model versions do not compare: "
            f"re-embed the audio with soundscape ingest -m birdnet"
        )
    return cls


def _space(engine: Engine, cls: type[Embedder], window: float, hop: float) -> Space:
    """The model's space for this window and hop (created if new, with its class labels as
    ingest creates it, so a later ingest into the same space stores class scores)."""
    labels: list[str] | None = None
    params: dict[str, Any] = {}
    try:
        model = load_model(cls.name)
        labels = model.labels if cls.has_class_scores else None
        params = model.params
    except ModelUnavailable:
        pass
    with engine.begin() as conn:
        return ensure_space(conn, cls, window, hop, params, labels)


def _digest(dep: Deployment | None, rec: HRecording) -> str:
    """A recording's stable identity (``recordings.sha256``): its deployment, project and file
    name in hoplite, so that importing the same database again finds it."""
    key = "\0".join(["hoplite", dep.project if dep else "", dep.name if dep else "", rec.filename])
    return hashlib.sha256(key.encode()).hexdigest()


def _base_paths(metadata: Mapping[str, Any]) -> dict[str, str]:
    """dataset (a deployment's project) -> the folder its file names are relative to."""
    globs = (metadata.get("audio_sources") or {}).get("audio_globs") or []
    return {g["dataset_name"]: g["base_path"] for g in globs if "dataset_name" in g}


def _started(text: str | None, filename: str, tz: ZoneInfo) -> dt.datetime | None:
    """A recording's start: hoplite's ``datetime`` (ISO), else what its file name says by
    soundscape's file-name rules (AudioMoth, Song Meter, ISO stamps), else None."""
    if text:
        try:
            return localize(parse_iso_start(str(text)), tz)
        except ValueError:
            return None
    named = parse_start_time(Path(filename).name)
    return localize(named, tz) if named is not None else None


def _settings_warnings(reader: HopliteReader) -> list[str]:
    """BirdNET-Analyzer settings that make its vectors differ from soundscape's BirdNET."""
    settings = reader.metadata.get(BIRDNET_ANALYZER) or {}
    speed = settings.get("AUDIO_SPEED", 1.0)
    if speed not in (None, 1, 1.0):
        return [
            f"{reader.path}: BirdNET-Analyzer embedded this audio at {speed}x speed; its "
            "vectors compare with each other but not with soundscape's own BirdNET windows"
        ]
    return []


def _sensor_for(
    conn: Connection,
    dep: Deployment | None,
    mapping: Mapping[str | None, str],
    timezone: str,
    summary: ImportSummary,
) -> Sensor:
    """The sensor of a deployment: ``mapping``'s (by deployment name, or ``None`` for all),
    else a sensor named after it (created with its place if missing)."""

    name = mapping.get(dep.name if dep else None) or mapping.get(None)
    if name is not None:
        return get_sensor(conn, name)
    dep_name = dep.name if dep else "hoplite"
    check_name(dep_name)
    row = conn.execute(sa.text("SELECT 1 FROM sensors WHERE name = :n"), {"n": dep_name}).first()
    if row is None:
        add_sensor(
            conn,
            dep_name,
            site=dep.project if dep else None,
            latitude=dep.latitude if dep else None,
            longitude=dep.longitude if dep else None,
            timezone=timezone,
            metadata={"hoplite": {"project": dep.project, **dep.extra}} if dep else {},
        )
        summary.sensors_created.append(dep_name)
    return get_sensor(conn, dep_name)


def import_hoplite(
    engine: Engine,
    path: str | Path,
    *,
    sensors: Mapping[str | None, str] | None = None,
    model: str | None = None,
    timezone: str = "UTC",
    defer_index: bool = False,
    on_recording: Callable[[ImportSummary], None] | None = None,
) -> ImportSummary:
    """Import a hoplite database's deployments, recordings, windows (with their vectors) and
    annotations. ``sensors`` maps deployment names (``None``: every deployment) to existing
    sensors; other deployments become sensors of their own name (new ones get ``timezone``).
    ``on_recording`` runs after each recording's transaction (progress; it may raise to stop:
    what was committed stays, and importing again resumes). ``defer_index``: drop the space's
    HNSW index first and build it once at the end (a large import writes many times faster;
    meanwhile searches of the space scan exactly)."""
    mapping = dict(sensors or {})
    summary = ImportSummary()
    with HopliteReader(path) as reader:
        cls = hoplite_model(reader, model)
        reader.window_s = reader.window_s or cls.default_window_s
        summary.warnings.extend(_settings_warnings(reader))
        window, hop = reader.shape()
        if window is None or hop is None:
            window, hop = cls.default_window_s, cls.default_hop_s
        window, hop = resolve_window(cls, round(window, 6), round(hop, 6), allow_gaps=True)
        space = _space(engine, cls, window, hop)
        summary.space = space.name
        deployments = reader.deployments()
        unknown = sorted(k for k in mapping if k is not None and k not in {
            d.name for d in deployments.values()})  # fmt: skip
        if unknown:
            names = ", ".join(sorted(d.name for d in deployments.values())) or "none"
            raise SoundscapeError(
                f"{reader.path}: no deployment named {', '.join(unknown)}; its deployments: {names}"
            )
        bases = _base_paths(reader.metadata)
        db_path = str(Path(path).resolve())
        if defer_index:
            with engine.begin() as conn:
                drop_hnsw_index(conn, space)
        try:
            _import_all(engine, reader, space, deployments, mapping, timezone, bases, db_path,
                        summary, on_recording)  # fmt: skip
        except BaseException:
            if defer_index:
                log.warning(
                    "the HNSW index of space %s is dropped: import again (it is built at the "
                    "end) or build it with `soundscape spaces index %s`",
                    space.name,
                    space.name,
                )
            raise
        if defer_index:
            with engine.begin() as conn:
                set_index_type(conn, space, space.index_type)
    return summary


def _import_all(
    engine: Engine,
    reader: HopliteReader,
    space: Space,
    deployments: Mapping[int, Deployment],
    mapping: Mapping[str | None, str],
    timezone: str,
    bases: Mapping[str, str],
    db_path: str,
    summary: ImportSummary,
    on_recording: Callable[[ImportSummary], None] | None,
) -> None:
    """Every recording of the database, one transaction each."""
    for rec in reader.recordings():
        dep = deployments.get(rec.deployment_id) if rec.deployment_id is not None else None
        with engine.begin() as conn:
            register_vector(conn)
            sensor = _sensor_for(conn, dep, mapping, timezone, summary)
            stored = _import_recording(
                conn, reader, space, sensor, dep, rec, bases, db_path, summary
            )
        if stored:
            summary.recordings += 1
        else:
            summary.skipped += 1
        if on_recording is not None:
            on_recording(summary)


def _import_recording(
    conn: Connection,
    reader: HopliteReader,
    space: Space,
    sensor: Sensor,
    dep: Deployment | None,
    rec: HRecording,
    bases: Mapping[str, str],
    db_path: str,
    summary: ImportSummary,
) -> bool:
    """One recording in the caller's transaction; False if its windows were stored before
    (its annotations not yet stored are still added)."""
    digest = _digest(dep, rec)
    ids, starts, ends = reader.windows(rec.id)
    notes = reader.annotations(rec.id)
    row = conn.execute(
        sa.text("SELECT id, sensor_id, started_at FROM recordings WHERE sha256 = :h FOR UPDATE"),
        {"h": digest},
    ).first()
    tz = ZoneInfo(sensor.timezone)
    if row is None:
        started = _started(rec.datetime, rec.filename, tz)
        if rec.datetime and started is None:
            summary.warnings.append(
                f"recording {rec.filename!r}: datetime {rec.datetime!r} is not an ISO date-time; "
                "stored without a start time"
            )
        base = bases.get(dep.project) if dep else None
        file_path = str(Path(base) / rec.filename) if base else rec.filename
        duration = max([*ends.tolist(), *(a.end_s for a in notes), 0.0])
        meta = {"hoplite": {"database": db_path, "recording_id": rec.id, "filename": rec.filename,
                            "deployment": dep.name if dep else None,
                            "project": dep.project if dep else None, **rec.extra}}  # fmt: skip
        rec_id = conn.execute(
            sa.text(
                "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                "sample_rate, channels, duration_s, started_at, metadata) VALUES (:s, :p, :h, "
                "0, 'hoplite', :rate, 1, :d, :t, CAST(:m AS jsonb)) RETURNING id"
            ),
            {"s": sensor.id, "p": file_path, "h": digest, "rate": space.sample_rate,
             "d": duration, "t": started, "m": json.dumps(meta, default=str)},
        ).scalar_one()  # fmt: skip
        rec_sensor, started_at = sensor, started
    else:
        rec_id, started_at = row.id, row.started_at
        rec_sensor = sensor
        if row.sensor_id != sensor.id:
            rec_sensor = _sensor_by_id(conn, row.sensor_id)
            tz = ZoneInfo(rec_sensor.timezone)
    done = conn.execute(
        sa.text("SELECT 1 FROM recording_spaces WHERE recording_id = :r AND space_id = :s"),
        {"r": rec_id, "s": space.id},
    ).first()
    if done is None:
        _copy_windows(conn, reader, space, rec_id, rec_sensor.id, tz, started_at, ids, starts,
                      ends)  # fmt: skip
        conn.execute(
            sa.text(
                "INSERT INTO recording_spaces (recording_id, space_id, n_segments) "
                "VALUES (:r, :s, :n)"
            ),
            {"r": rec_id, "s": space.id, "n": len(ids)},
        )
        summary.windows += len(ids)
    summary.annotations += _add_annotations(conn, rec_id, notes)
    return done is None


def _sensor_by_id(conn: Connection, sensor_id: int) -> Sensor:

    name = conn.execute(sa.text("SELECT name FROM sensors WHERE id = :i"), {"i": sensor_id})
    return get_sensor(conn, name.scalar_one())


def _copy_windows(
    conn: Connection,
    reader: HopliteReader,
    space: Space,
    rec_id: int,
    sensor_id: int,
    tz: ZoneInfo,
    started_at: dt.datetime | None,
    ids: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
) -> None:
    """Binary COPY of a recording's windows with their vectors, BATCH at a time."""
    with raw_connection(conn).cursor() as cur:
        for i in range(0, len(ids), BATCH):
            part = slice(i, i + BATCH)
            vectors = reader.vectors(ids[part])
            seg_ids = [
                r[0]
                for r in cur.execute(
                    "SELECT nextval('segments_id_seq') FROM generate_series(1, %s)",
                    [len(vectors)],
                )
            ]
            offsets = starts[part]
            times = (
                window_times(started_at, offsets, tz)
                if started_at is not None
                else [(None, None, None)] * len(offsets)
            )
            with cur.copy(SEGMENT_COPY) as copy:
                copy.set_types(SEGMENT_TYPES)
                for j, seg_id in enumerate(seg_ids):
                    copy.write_row(
                        (seg_id, space.id, rec_id, sensor_id, float(offsets[j]),
                         float(ends[part][j]), *times[j], vectors[j])
                    )  # fmt: skip


def _add_annotations(conn: Connection, rec_id: int, notes: list[HAnnotation]) -> int:
    """Store the recording's hoplite annotations not stored yet; returns how many."""
    if not notes:
        return 0
    have = {
        (round(r.start_s, 6), round(r.end_s, 6), r.label, r.verdict, r.author)
        for r in conn.execute(
            sa.text(
                "SELECT start_s, end_s, label, verdict, author FROM annotations "
                "WHERE recording_id = :r AND source = :src"
            ),
            {"r": rec_id, "src": SOURCE},
        )
    }
    rows = []
    for a in notes:
        key = (round(a.start_s, 6), round(a.end_s, 6), a.label, a.verdict, a.author)
        if key in have:
            continue
        have.add(key)
        rows.append({"r": rec_id, "a": a.start_s, "b": a.end_s, "l": a.label, "v": a.verdict,
                     "au": a.author, "src": SOURCE})  # fmt: skip
    if rows:
        conn.execute(
            sa.text(
                "INSERT INTO annotations (recording_id, start_s, end_s, label, verdict, author, "
                "source) VALUES (:r, :a, :b, :l, :v, :au, :src)"
            ),
            rows,
        )
    return len(rows)


# ------------------------------------------------------------------------------ export
@dataclass
class ExportSummary:
    path: str
    space: str
    deployments: int = 0
    recordings: int = 0
    windows: int = 0
    annotations: int = 0

    def as_row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def hoplite_model_config(space: Space) -> dict[str, Any]:
    """The ``model_config`` metadata hoplite's notebooks read: its BirdNET preset for
    soundscape's BirdNET, else the soundscape model's name and window."""
    inner: dict[str, Any] = {
        "window_size_s": float(space.window_s),
        "hop_size_s": float(space.hop_s),
        "sample_rate": int(space.sample_rate),
    }
    key = f"soundscape_{space.model}"
    if space.model == "birdnet":
        key = "birdnet"
        inner["model_path"] = (
            "gs://chirp-public-bucket/models/birdnet/V2.4/BirdNET_GLOBAL_6K_V2.4_Model_FP16.tflite"
        )
        inner["class_list_name"] = "birdnet_v2_4"
        inner["num_tflite_threads"] = 4
    return {
        "model_key": key,
        "embedding_dim": int(space.dimension),
        "model_config": inner,
        "logits_key": None,
        "logits_idxes": None,
    }


def export_hoplite(
    engine: Engine,
    space_name: str,
    path: str | Path,
    *,
    normalize: bool = False,
    sensors: list[str] | None = None,
) -> ExportSummary:
    """Write a space (optionally only some sensors' windows) as a new hoplite database in the
    folder ``path`` (which must not exist or be empty): sensors become deployments (project:
    the site), recordings keep their path and start, windows their ids (hoplite's window id is
    soundscape's segment id) and vectors (float16, as hoplite stores them; ``normalize``
    scales them to unit length so that hoplite's inner product ranks as soundscape's cosine),
    annotations their verdicts. Windows also get ``starts_at`` (UTC) and ``local_time``
    columns, which hoplite's filters can use."""
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SoundscapeError(
            f"{out}: already exists and is not an empty folder; name a new folder for the "
            "hoplite database"
        )
    usearch = _usearch()
    with engine.connect() as conn:
        space = get_space(conn, space_name)
        if sensors:
            known = {r[0] for r in conn.execute(sa.text("SELECT name FROM sensors"))}
            unknown = [s for s in sensors if s not in known]
            if unknown:
                raise SoundscapeError(
                    f"no sensor named {', '.join(unknown)}; see `soundscape sensors list`"
                )
    summary = ExportSummary(str(out), space.name)
    out.mkdir(parents=True, exist_ok=True)
    sqlite_path = out / SQLITE_FILE
    db = sqlite3.connect(sqlite_path)
    try:
        _write_schema(db, space, normalize)
        index = usearch.Index(
            ndim=int(space.dimension),
            metric=usearch.MetricKind.IP,
            dtype=usearch.ScalarKind.F16,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        with engine.connect() as conn:
            register_vector(conn)
            _export_rows(conn, db, index, space, sensors, normalize, summary)
        db.commit()
        index.save(str(out / INDEX_FILE))
    finally:
        db.close()
    return summary


def _write_schema(db: sqlite3.Connection, space: Space, normalize: bool) -> None:
    """A new hoplite database's tables (hoplite's own, with soundscape's extra columns) and
    its metadata (USearch settings, the model, where it came from)."""
    db.executescript(_HOPLITE_SCHEMA)
    db.execute("ALTER TABLE deployments ADD COLUMN quadrant TEXT")
    db.execute("ALTER TABLE deployments ADD COLUMN timezone TEXT")
    db.execute("ALTER TABLE recordings ADD COLUMN soundscape_id INTEGER")
    db.execute("ALTER TABLE windows ADD COLUMN starts_at TEXT")
    db.execute("ALTER TABLE windows ADD COLUMN local_time TEXT")
    usearch_cfg = {
        "embedding_dim": int(space.dimension),
        "dtype": "float16",
        "metric_name": "IP",
        "expansion_add": EXPANSION_ADD,
        "expansion_search": EXPANSION_SEARCH,
    }
    meta = {
        "usearch_config": usearch_cfg,
        "model_config": hoplite_model_config(space),
        "soundscape_export": {
            "space": space.name,
            "model": space.model,
            "model_version": space.model_version,
            "window_s": float(space.window_s),
            "hop_s": float(space.hop_s),
            "normalized": normalize,
            "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        },
    }
    db.executemany(
        "INSERT INTO hoplite_metadata (key, value) VALUES (?, ?)",
        [(k, json.dumps(v)) for k, v in meta.items()],
    )


def _export_rows(
    conn: Connection,
    db: sqlite3.Connection,
    index: Any,
    space: Space,
    sensors: list[str] | None,
    normalize: bool,
    summary: ExportSummary,
) -> None:
    recs = _export_places(conn, db, space, sensors, summary)
    if not recs:
        return
    _export_windows(conn, db, index, space, recs, normalize, summary)
    _export_annotations(conn, db, recs, summary)


def _export_places(
    conn: Connection,
    db: sqlite3.Connection,
    space: Space,
    sensors: list[str] | None,
    summary: ExportSummary,
) -> dict[int, int]:
    """Sensors as deployments, recordings as recordings; soundscape's recording id -> hoplite's."""
    args = {"s": space.id, "sensors": sensors}
    only = "(CAST(:sensors AS text[]) IS NULL OR s.name = ANY(CAST(:sensors AS text[])))"
    deps: dict[int, int] = {}
    for s in conn.execute(
        sa.text(
            "SELECT DISTINCT s.id, s.name, s.site, s.quadrant, s.latitude, s.longitude, "
            "s.timezone FROM sensors s JOIN recordings r ON r.sensor_id = s.id "
            "JOIN recording_spaces rs ON rs.recording_id = r.id AND rs.space_id = :s "
            f"WHERE {only} ORDER BY s.id"
        ),
        args,
    ):
        cur = db.execute(
            "INSERT INTO deployments (name, project, latitude, longitude, quadrant, timezone) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (s.name, s.site or "soundscape", s.latitude, s.longitude, s.quadrant, s.timezone),
        )
        deps[s.id] = int(cur.lastrowid or 0)
    summary.deployments = len(deps)
    recs: dict[int, int] = {}
    names: set[tuple[str, int]] = set()
    for r in conn.execute(
        sa.text(
            "SELECT r.id, r.path, r.started_at, r.sensor_id FROM recordings r "
            "JOIN sensors s ON s.id = r.sensor_id JOIN recording_spaces rs "
            f"ON rs.recording_id = r.id AND rs.space_id = :s WHERE {only} ORDER BY r.id"
        ),
        args,
    ):
        dep = deps[r.sensor_id]
        filename = r.path if (r.path, dep) not in names else f"{r.path}#{r.id}"
        names.add((filename, dep))
        cur = db.execute(
            "INSERT INTO recordings (filename, datetime, deployment_id, soundscape_id) "
            "VALUES (?, ?, ?, ?)",
            (filename, r.started_at.isoformat() if r.started_at else None, dep, r.id),
        )
        recs[r.id] = int(cur.lastrowid or 0)
    summary.recordings = len(recs)
    return recs


def _export_windows(
    conn: Connection,
    db: sqlite3.Connection,
    index: Any,
    space: Space,
    recs: dict[int, int],
    normalize: bool,
    summary: ExportSummary,
) -> None:
    # the windows, streamed (a server-side cursor), BATCH at a time into SQLite and USearch
    raw = raw_connection(conn)
    with raw.cursor(name="soundscape_hoplite_export") as pg:
        pg.itersize = BATCH
        pg.execute(
            "SELECT g.id, g.recording_id, g.start_s, g.end_s, g.starts_at, g.local_time, "
            "g.embedding FROM segments g WHERE g.space_id = %(s)s "
            "AND g.recording_id = ANY(%(recs)s) ORDER BY g.recording_id, g.start_s, g.id",
            {"s": space.id, "recs": list(recs)},
        )
        while rows := pg.fetchmany(BATCH):
            db.executemany(
                "INSERT INTO windows (id, recording_id, offsets, starts_at, local_time) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (int(g[0]), recs[g[1]], _offsets_blob(g[2], g[3]),
                     g[4].isoformat() if g[4] else None, g[5].isoformat() if g[5] else None)
                    for g in rows
                ],
            )  # fmt: skip
            vectors = np.stack([_array(g[6]) for g in rows])
            if normalize:
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                vectors = vectors / np.maximum(norms, 1e-12)
            index.add(np.array([g[0] for g in rows], np.uint64), vectors.astype(np.float16))
            summary.windows += len(rows)


def _export_annotations(
    conn: Connection, db: sqlite3.Connection, recs: dict[int, int], summary: ExportSummary
) -> None:
    notes = conn.execute(
        sa.text(
            "SELECT recording_id, start_s, end_s, label, verdict, author, source FROM annotations "
            "WHERE recording_id = ANY(CAST(:r AS bigint[])) ORDER BY id"
        ),
        {"r": list(recs)},
    ).fetchall()
    db.executemany(
        "INSERT INTO annotations (recording_id, offsets, label, label_type, provenance) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            (recs[a.recording_id], _offsets_blob(a.start_s, a.end_s), a.label,
             LABEL_TYPES[a.verdict], a.author or f"soundscape:{a.source}")
            for a in notes
        ],
    )  # fmt: skip
    summary.annotations = len(notes)
