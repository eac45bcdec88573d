"""What the formats share: finding the stored recording a row names (:class:`Recordings`),
a row read from a file (:class:`Row`) and its problems (:class:`Problems`), reading and writing
numbers and cells, file names (:func:`slug`) and what an export wrote (:class:`ExportResult`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.annotations import Annotation, Recording
from soundscape.errors import AnnotationError
from soundscape.output import spreadsheet_safe
from soundscape.results import Hit


@dataclass
class ExportResult:
    """What an export wrote: the files, what went wrong on the way (a clip that could not be
    read), and how many annotations it held (annotation exports)."""

    written: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    annotations: int = 0


# ------------------------------------------------------------------------------- writing
def slug(text: str) -> str:
    """A file-name-safe form of ``text``: runs of other characters than letters, digits and
    ``. _ + -`` become ``-`` (a ``+0200`` offset stays ``+0200``)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "x"


def by_recording(hits: list[Hit]) -> dict[int, list[tuple[int, Hit]]]:
    """Hits grouped by recording, each with its rank in ``hits``, in time order."""
    groups: dict[int, list[tuple[int, Hit]]] = {}
    for rank, hit in enumerate(hits, start=1):
        groups.setdefault(hit.recording_id, []).append((rank, hit))
    for ranked in groups.values():
        ranked.sort(key=lambda rh: (rh[1].start_s, rh[0]))
    return groups


def table_cell(value: object) -> str:
    """One cell of a tab-separated table: no tab or line break, no formula a spreadsheet runs."""
    return " ".join(str(spreadsheet_safe(value)).split("\t")).replace("\n", " ")


def num(value: float | None) -> str:
    """A number as short text that reads back to the same value (to a nanosecond / nano-Hz)."""
    if value is None:
        return ""
    text = f"{float(value):.9f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def clean(text: str | None) -> str:
    """``text`` on one line: tabs and line breaks become spaces."""
    return " ".join((text or "").replace("\t", " ").splitlines())


# ------------------------------------------------------------------------------- reading
@dataclass
class Row:
    """One annotation as a file states it, before the checks of
    :func:`soundscape.formats.tables.import_file`."""

    line: int
    recording: Recording
    start_s: float
    end_s: float
    label: str | None
    verdict: str | None
    author: str | None = None
    note: str | None = None
    low_hz: float | None = None
    high_hz: float | None = None
    window_id: int | None = None
    #: the id this annotation had where it was exported from (CSV ``id``, Raven
    #: ``Annotation ID``): the same annotation imported back is a duplicate
    annotation_id: int | None = None


class Problems:
    """The bad rows of one file, by line number."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str]] = []

    def add(self, line: int, message: str) -> None:
        self.items.append((line, message))


def number(cell: str | None, what: str) -> float:
    text = (cell or "").strip()
    if not text:
        raise AnnotationError(f"{what} is missing")
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{what} {text!r} is not a finite number")
    return value


def optional_number(cell: str | None, what: str) -> float | None:
    return number(cell, what) if (cell or "").strip() else None


def at(cells: list[str], i: int | None) -> str | None:
    """Cell ``i`` of a row, stripped; None for a column the file lacks or a short row."""
    return cells[i].strip() if i is not None and i < len(cells) else None


def int_or_none(cell: str | None) -> int | None:
    text = (cell or "").strip()
    return int(text) if text.isdigit() else None


class Recordings:
    """Finds stored recordings by id, full path, file name or stem for one import. Each
    distinct name is looked up once (by SQL, not by loading every recording: a database may
    hold 100,000 of them and an import may be hundreds of per-file tables)."""

    _COLUMNS = "SELECT id, path, duration_s, sample_rate FROM recordings"

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._by_name: dict[str, list[Recording]] = {}
        self._by_id: dict[int, Recording | None] = {}
        self._by_path: dict[str, list[Recording]] = {}

    def _rows(self, where: str, **params: Any) -> list[Recording]:
        rows = self.conn.execute(sa.text(f"{self._COLUMNS} WHERE {where} ORDER BY id"), params)
        return [Recording(int(r.id), r.path, float(r.duration_s), int(r.sample_rate)) for r in rows]

    def get(self, recording_id: int) -> Recording | None:
        if recording_id not in self._by_id:
            found = self._rows("id = :i", i=int(recording_id))
            self._by_id[recording_id] = found[0] if found else None
        return self._by_id[recording_id]

    def _named(self, name: str) -> list[Recording]:
        """Recordings whose file name (last path component) is ``name``."""
        if name not in self._by_name:
            pattern = "%/" + re.sub(r"([\\%_])", r"\\\1", name)
            self._by_name[name] = [
                r
                for r in self._rows("path = :n OR path LIKE :p", n=name, p=pattern)
                if PurePath(r.path).name == name
            ]
        return self._by_name[name]

    def _unique(self, matches: list[Recording], what: str) -> Recording:
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise AnnotationError(
                f"no stored recording has the {what} (see `soundscape recordings list`)"
            )
        shown = ", ".join(f"{m.id} {m.path}" for m in matches[:5])
        raise AnnotationError(
            f"the {what} is ambiguous: {len(matches)} stored recordings have it ({shown}); "
            "give the full path"
        )

    def find(self, path: str) -> Recording:
        """By its full path, else by its file name when one stored recording has it."""
        text = path.strip()
        if text not in self._by_path:
            self._by_path[text] = self._rows("path = :p", p=text)
        same = self._by_path[text]
        if len(same) == 1:
            return same[0]
        if len(same) > 1:
            raise AnnotationError(
                f"{len(same)} stored recordings have the path {text!r} (ids "
                f"{', '.join(str(r.id) for r in same)}: the file changed between ingests); "
                "import this file with --recording ID"
            )
        name = PurePath(text.replace("\\", "/")).name
        return self._unique(self._named(name), f"path or file name {text!r}")

    def from_table_name(self, table: Path) -> Recording:
        """The recording a table names by its own file name: ``<stem>.r<id>.selections.txt``
        (soundscape), ``<stem>.BirdNET.selection.table.txt`` (BirdNET-Analyzer),
        ``<stem>.Table.1.selections.txt`` (Raven), ``<stem>.txt`` (Audacity)."""
        stem = table.name
        for suffix in (
            ".birdnet.selection.table.txt",
            ".birdnet.selections.txt",
            ".selection.table.txt",
            ".selections.txt",
            ".txt",
            ".csv",
        ):
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        stem = re.sub(r"\.Table\.\d+$", "", stem)
        m = re.fullmatch(r"(.*)\.r(\d+)", stem)
        if m:
            rec = self.get(int(m.group(2)))
            wanted = m.group(1)
            if rec is None or wanted not in {
                PurePath(rec.path).stem,
                slug(PurePath(rec.path).stem),
            }:
                raise AnnotationError(
                    f"the file name {table.name!r} names recording {m.group(2)} ({wanted}), "
                    "which is not stored here; give --recording ID or a Begin Path column"
                )
            return rec
        # Candidates whose path contains the stem (soundscape writes slugged stems, which may
        # not appear verbatim: then every recording is a candidate), then exact stem matches.
        like = "%" + re.sub(r"([\\%_])", r"\\\1", stem) + "%"
        candidates = self._rows("path LIKE :p", p=like) or (
            self._rows("true") if slug(stem) == stem and "-" in stem else []
        )
        matches = [
            r for r in candidates if stem in {PurePath(r.path).stem, slug(PurePath(r.path).stem)}
        ]
        try:
            return self._unique(matches, f"file name {stem!r} (from {table.name!r})")
        except AnnotationError as exc:
            raise AnnotationError(f"{exc}; or give --recording ID") from None


# ------------------------------------------------------------------------------- detections
@dataclass
class Detection:
    """One row of a detection table (Kaleidoscope, BirdNET-Analyzer): a span of a file, what
    was detected there and how sure, its local start; ``manual`` is a person's label (an
    annotation with verdict yes), which those tools keep apart from the automatic one."""

    path: str
    start_s: float
    end_s: float
    label: str
    score: float | None
    local: datetime | None
    manual: str | None = None

    @classmethod
    def from_hit(cls, hit: Hit, label: str) -> Detection:
        """A search hit: its class (label queries) or ``label``, its score."""
        return cls(hit.path, hit.start_s, hit.end_s, hit.label or label, hit.score, hit.local)

    @classmethod
    def from_classified(cls, c: Any) -> Detection:
        """A zero-shot result (``zeroshot.Classified``: a window, or a recording's span)."""
        local = datetime.fromisoformat(c.local) if c.local else None
        return cls(c.path, c.start_s, c.end_s, c.label, c.score, local)

    @classmethod
    def from_annotation(cls, a: Annotation) -> Detection:
        """An annotation: a person's label (verdict yes; else empty), no score."""
        manual = a.label if a.verdict == "yes" else ""
        return cls(a.path, a.start_s, a.end_s, a.label, None, a.local, manual=manual)
