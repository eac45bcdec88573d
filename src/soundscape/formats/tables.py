"""The entry points for annotation files: :func:`import_file` reads one file (Raven selection
table, Audacity label track or CSV, told apart by :func:`detect_format`) into annotations,
:func:`export` writes annotations as files. The formats themselves are
:mod:`~soundscape.formats.raven`, :mod:`~soundscape.formats.audacity` and
:mod:`~soundscape.formats.csv`; the checks and storing are :mod:`soundscape.annotations`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.annotations import (
    Annotation,
    Recording,
    _check_source,
    check_imported,
    list_annotations,
    store_imported,
)
from soundscape.errors import AnnotationError, AnnotationImportError
from soundscape.formats import audacity, birdnet_csv, csv, kaleidoscope, raven
from soundscape.formats.birdnet_csv import scientific_names
from soundscape.formats.rows import Detection, ExportResult, Problems, Recordings, Row, slug
from soundscape.queries import Filters

FORMATS = ("raven", "audacity", "csv")
#: what ``export`` writes besides: detection tables of Kaleidoscope and BirdNET-Analyzer
#: (formats.kaleidoscope, formats.birdnet_csv), which import does not read
EXPORT_FORMATS = (*FORMATS, "kaleidoscope", "birdnet-csv")

#: Most bad rows listed in one error message (the count says how many there were).
_MAX_PROBLEMS_SHOWN = 20


@dataclass
class ImportResult:
    """What :func:`import_file` did with one file."""

    path: Path
    format: str
    source: str
    imported: int = 0
    duplicates: int = 0  # rows already stored (or repeated in the file): skipped
    unreviewed: int = 0  # rows with an empty Verdict cell (an unreviewed review batch row)
    ids: list[int] = field(default_factory=list)
    #: what the reader had to assume (e.g. a file that is not UTF-8 read as Windows-1252)
    warnings: list[str] = field(default_factory=list)

    def as_row(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "format": self.format,
            "source": self.source,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "unreviewed": self.unreviewed,
        }


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise AnnotationError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return fmt


def detect_format(path: Path, text: str) -> str:
    """``raven``, ``audacity`` or ``csv`` from a file's first line (or ``.csv``)."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    if "\t" in first and raven.BEGIN_TIME.lower() in first.lower():
        return "raven"
    header = [c.strip().lower() for c in first.split(",")]
    if {"path", "start_s", "end_s"} <= set(header) or path.suffix.lower() == ".csv":
        return "csv"
    cells = first.split("\t")
    if len(cells) >= 2:
        try:
            float(cells[0])
            float(cells[1])
            return "audacity"
        except ValueError:
            pass
    raise AnnotationError(
        f"{path}: cannot tell its format: expected a Raven selection table (tab-separated, with "
        "a 'Begin Time (s)' column), an Audacity label track (start<TAB>end<TAB>label lines) or "
        "a CSV with the header path,start_s,end_s,label"
    )


def _read_text(path: Path, encoding: str | None) -> tuple[str, list[str]]:
    """The file's text and what the reader had to assume: UTF-8 (or ``encoding``), else
    Windows-1252 (what Raven writes on Windows) with a warning."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    if encoding is not None:
        try:
            return raw.decode(encoding), []
        except (LookupError, UnicodeDecodeError) as exc:
            raise AnnotationError(f"{path}: cannot read it as {encoding}: {exc}") from None
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:  # Raven on Windows writes the system code page
        try:
            text = raw.decode("cp1252")
        except UnicodeDecodeError:
            raise AnnotationError(
                f"{path}: neither UTF-8 nor Windows-1252 (byte {raw[exc.start]:#04x} at "
                f"offset {exc.start}); save it as UTF-8, or name its encoding "
                "(--encoding latin-1)"
            ) from None
        return text, [
            f"{path}: not UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start}); read as "
            "Windows-1252. If labels look wrong, save it as UTF-8 or name its encoding "
            "(--encoding)"
        ]


def import_file(
    conn: Connection,
    path: str | Path,
    *,
    author: str | None = None,
    source: str | None = "import",
    default_label: str | None = None,
    label: str | None = None,
    recording_id: int | None = None,
    fmt: str | None = None,
    encoding: str | None = None,
) -> ImportResult:
    """Import one file of annotations (Raven selection table, Audacity label track or CSV).

    Every row is checked before anything is written; if any row is bad (unknown or ambiguous
    recording, a time that is not a number, negative, an end not after the start or beyond the
    recording, an unknown verdict, an empty label) nothing is written and
    :class:`AnnotationImportError` lists the bad rows by line number. Run it inside one
    transaction per file. Rows already stored (same recording, start, end, label, verdict and
    source) and rows repeated in the file are skipped and counted as ``duplicates``, so
    importing a file twice adds nothing. In a table with a ``Verdict`` column, rows whose
    verdict is empty (an unreviewed review batch row) are skipped and counted as ``unreviewed``.

    Which recording: a row's path (Raven ``Begin Path``, CSV ``path``: the full stored path,
    else a file name that only one stored recording has), else ``recording_id``, else the
    table's own file name (``<stem>.r<id>.selections.txt``, ``<stem>.BirdNET.selection.table.txt``,
    ``<audio stem>.txt``). Labels: a ``Label``/``Annotation``/``Common Name`` column (Raven),
    the label text (Audacity; a trailing ``[no]``/``[unsure]`` is the verdict), ``label``
    (CSV); ``default_label`` fills empty ones; ``label`` replaces every row's label (e.g. for
    ``search --raven`` tables, whose Label is the query). ``author`` is the author of files
    without an author column; in a file with one, an empty cell stays an unknown author.
    Full-band selections (0 Hz to the recording's Nyquist frequency) store no band.
    ``source=None`` picks it from the file: ``review`` for a Raven table with a ``Verdict``
    column (a review batch, see soundscape.review), else ``import``.

    Text is UTF-8 unless ``encoding`` says otherwise; a file that is not UTF-8 is read as
    Windows-1252 (what Raven writes on Windows) with a warning in the result, and refused if it
    is not that either. A row that carries the id of a stored annotation with the same
    recording, span, label and verdict (soundscape's own CSV and Raven exports do) is that
    annotation: a duplicate, whatever its source; so is, for an Audacity track (which carries
    no ids), a row whose recording, span, label and verdict are stored by any source.
    """
    path = Path(path)
    if source is not None:
        _check_source(source)
    text, warnings = _read_text(path, encoding)
    if not text.strip():
        raise AnnotationError(f"{path}: the file is empty")
    fmt = _check_format(fmt or detect_format(path, text))
    recs = Recordings(conn)
    fixed = _fixed_recording(recs, recording_id)
    if source is None:
        source = "review" if fmt == "raven" and raven.has_verdict_column(text) else "import"
    problems = Problems()
    rows, unreviewed = _parse(fmt, text, path, recs, fixed, problems)
    checked = _check_rows(conn, rows, problems, source, author, label, default_label)
    if problems.items:
        raise AnnotationImportError(path, sorted(problems.items), limit=_MAX_PROBLEMS_SHOWN)

    result = ImportResult(path, fmt, source, unreviewed=unreviewed, warnings=warnings)
    # an Audacity track carries no ids: the same span, label and verdict stored by any source
    # is that annotation (its export, imported back)
    result.ids, result.duplicates = store_imported(
        conn, checked, source, any_source=fmt == "audacity"
    )
    result.imported = len(result.ids)
    return result


def _fixed_recording(recs: Recordings, recording_id: int | None) -> Recording | None:
    """The recording every row belongs to when ``recording_id`` is given (else ``None``)."""
    if recording_id is None:
        return None
    fixed = recs.get(int(recording_id))
    if fixed is None:
        raise AnnotationError(
            f"no recording with id {recording_id} (see `soundscape recordings list`)"
        )
    return fixed


def _parse(
    fmt: str, text: str, path: Path, recs: Recordings, fixed: Recording | None, problems: Problems
) -> tuple[list[Row], int]:
    """The rows of a file in format ``fmt`` and how many were left unreviewed."""
    if fmt == "raven":
        return raven.parse(text, path, recs, fixed, problems)
    if fmt == "audacity":
        return audacity.parse(text, path, recs, fixed, problems), 0
    return csv.parse(text, path, recs, fixed, problems)


def _check_rows(
    conn: Connection,
    rows: list[Row],
    problems: Problems,
    source: str,
    author: str | None,
    label: str | None,
    default_label: str | None,
) -> list[dict[str, Any]]:
    """Each row checked as an annotation to store; a bad row goes to ``problems``."""
    checked: list[dict[str, Any]] = []
    for row in rows:
        try:
            checked.append(
                check_imported(
                    conn,
                    row.recording,
                    row.start_s,
                    row.end_s,
                    label if label is not None else row.label or default_label,
                    row.verdict,
                    source=source,
                    author=row.author if row.author is not None else author,
                    note=row.note,
                    low_hz=row.low_hz,
                    high_hz=row.high_hz,
                    window_id=row.window_id,
                    exported_id=row.annotation_id,
                )
            )
        except AnnotationError as exc:
            problems.add(row.line, str(exc))
    return checked


def export(
    conn: Connection,
    fmt: str,
    folder: str | Path,
    filters: Filters | None = None,
    **selection: Any,
) -> ExportResult:
    """Write the annotations that pass ``filters`` (and :func:`list_annotations`' keyword
    selection: label, verdict, recording_id, author, source, ids) into ``folder``:

    - ``raven``: one selection table per recording, ``<stem>.r<id>.selections.txt`` with
      ``Begin Path``, ``Label``, ``Verdict``, ``Author``, ``Note`` (a missing band is written as
      the full band, 0 Hz to the recording's Nyquist frequency, which reads back as no band);
    - ``audacity``: one label track per recording, ``<stem>.txt`` (``<stem>.r<id>.txt`` when two
      exported recordings share a stem): ``start<TAB>end<TAB>label`` with ``[no]``/``[unsure]``
      after the label for those verdicts and a ``\\<TAB>low<TAB>high`` line for a band. It
      carries no author or note;
    - ``csv``: one ``annotations.csv`` with a header (path, start_s, end_s, label, verdict,
      author, note, low_hz, high_hz, then place and ids, which import ignores);
    - ``kaleidoscope``: one ``id.csv``, the label as ``MANUAL ID`` (verdict yes only);
    - ``birdnet-csv``: BirdNET-Analyzer's CSV results per recording and combined, confidence
      1.0 (verdict yes only). Import reads neither of the last two.

    Importing what was exported gives back the same annotations (what the format carries).
    """
    if fmt not in EXPORT_FORMATS:
        raise AnnotationError(f"unknown format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    folder = Path(folder)
    annotations = list_annotations(conn, filters, **selection)
    out = ExportResult(annotations=len(annotations))
    folder.mkdir(parents=True, exist_ok=True)
    if fmt in ("kaleidoscope", "birdnet-csv"):  # a person's yes is a detection; no is none
        found = [Detection.from_annotation(a) for a in annotations if a.verdict == "yes"]
        out.annotations = len(found)
        if fmt == "kaleidoscope":
            out.written.append(kaleidoscope.write(found, folder))
        else:
            out.written += birdnet_csv.write(found, folder, scientific_names(conn)).written
        return out
    if fmt == "csv":
        out.written.append(csv.write_annotations(annotations, folder))
        return out

    by_rec: dict[int, list[Annotation]] = {}
    for a in annotations:
        by_rec.setdefault(a.recording_id, []).append(a)
    rates: dict[int, int] = dict(
        conn.execute(
            sa.text("SELECT id, sample_rate FROM recordings WHERE id = ANY(:ids)"),
            {"ids": list(by_rec)},
        ).fetchall()
    )
    # Audacity files are named after the audio; a stem that several stored recordings share
    # gets the recording id too (``<stem>.r<id>.txt``), which import reads back.
    stems: dict[str, int] = {}
    for (stored,) in conn.execute(sa.text("SELECT path FROM recordings")):
        stem = slug(PurePath(stored).stem)
        stems[stem] = stems.get(stem, 0) + 1
    for rec_id, group in by_rec.items():
        group.sort(key=lambda a: (a.start_s, a.end_s, a.id))
        stem = slug(PurePath(group[0].path).stem)
        if fmt == "raven":
            target = raven.write_annotations(group, folder, stem, rec_id, rates[rec_id] / 2)
        else:
            name = stem if stems[stem] == 1 else f"{stem}.r{rec_id}"
            target = audacity.write_annotations(group, folder / f"{name}.txt")
        out.written.append(target)
    return out
