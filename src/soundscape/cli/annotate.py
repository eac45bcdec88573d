"""``soundscape annotate ...``: the people's ground truth (add, hit, list, remove, import,
export, labels). Thin: the work is in :mod:`soundscape.annotations`
and :mod:`soundscape.formats`."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import click

from soundscape import annotations as ann
from soundscape.cli.base import (
    Number,
    PathParam,
    cli,
    database_option,
    echo_err,
    format_options,
    open_db,
)
from soundscape.cli.filters import filter_options
from soundscape.errors import AnnotationError
from soundscape.formats import tables
from soundscape.output import emit

LIST_COLUMNS = [
    "id",
    "label",
    "verdict",
    "sensor",
    "local",
    "start_s",
    "end_s",
    "path",
    "author",
    "source",
    "note",
]
DATA_COLUMNS = [
    "recording_id",
    "low_hz",
    "high_hz",
    "site",
    "quadrant",
    "starts_at",
    "segment_id",
    "created_at",
]


def os_user() -> str | None:
    """The OS user name: the default author."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name (some containers)
        return None


def _author_option(f):
    return click.option(
        "--author",
        default=os_user,
        show_default="your user name",
        help="Who made the annotation.",
    )(f)


def _verdict_type() -> click.Choice:
    return click.Choice(list(ann.VERDICTS), case_sensitive=False)


def _emit_annotations(rows: list[ann.Annotation], fmt: str) -> None:
    columns = LIST_COLUMNS + (DATA_COLUMNS if fmt != "table" else [])
    emit([a.as_row() for a in rows], fmt, columns)


@cli.group()
def annotate() -> None:
    """Annotations: labelled spans of recordings with a verdict (yes / no / unsure).

    \b
    Examples:
      soundscape annotate add --recording 3 --start 12.5 --end 14 --label saw
      soundscape annotate hit 1234 --label saw --verdict no
      soundscape annotate list --label saw --time 22:00-04:00 --csv
      soundscape annotate import review/*.selections.txt labels.csv
      soundscape annotate export --format raven out/ --label saw
    """


@annotate.command("add")
@click.option("--recording", "recording_id", type=int, required=True, help="Recording id.")
@click.option("--start", "start_s", type=Number(), required=True, help="Start (s in the file).")
@click.option("--end", "end_s", type=Number(), required=True, help="End (s in the file).")
@click.option("--label", required=True, help="What the sound is (free text, e.g. saw).")
@click.option("--verdict", type=_verdict_type(), default="yes", show_default=True)
@_author_option
@click.option("--note", help="A free-text note.")
@click.option("--low-hz", type=Number(min=0), help="Lowest frequency of the sound.")
@click.option("--high-hz", type=Number(min=0), help="Highest frequency of the sound.")
@database_option
@format_options
def annotate_add(
    recording_id, start_s, end_s, label, verdict, author, note, low_hz, high_hz, database, fmt
) -> None:
    """Annotate a span of a recording (see `soundscape recordings list` for ids)."""
    with open_db(database).engine.begin() as conn:
        new_id = ann.add_annotation(
            conn,
            recording_id,
            start_s,
            end_s,
            label,
            verdict=verdict.lower(),
            author=author,
            note=note,
            low_hz=low_hz,
            high_hz=high_hz,
        )
        rows = ann.list_annotations(conn, ids=[new_id])
    echo_err(f"annotation {new_id} stored")
    _emit_annotations(rows, fmt)


@annotate.command("hit")
@click.argument("segment_id", type=int)
@click.option("--label", required=True, help="What the sound is (free text).")
@click.option("--verdict", type=_verdict_type(), default="yes", show_default=True)
@_author_option
@click.option("--note", help="A free-text note.")
@database_option
@format_options
def annotate_hit(segment_id, label, verdict, author, note, database, fmt) -> None:
    """Validate a search hit: annotate window SEGMENT_ID (a hit's segment_id) as LABEL.

    Validating the same window and label again (same author) changes the verdict."""
    with open_db(database).engine.begin() as conn:
        new_id = ann.annotate_hit(
            conn, segment_id, label, verdict.lower(), author=author, note=note
        )
        rows = ann.list_annotations(conn, ids=[new_id])
    echo_err(f"annotation {new_id}: window {segment_id} is {label!r}: {verdict.lower()}")
    _emit_annotations(rows, fmt)


def _selection_options(f):
    options = [
        click.option("--label", "labels", multiple=True, help="Only this label (repeatable)."),
        click.option(
            "--verdict", "verdicts", multiple=True, type=_verdict_type(), help="Only this verdict."
        ),
        click.option("--recording", "recording_id", type=int, help="Only this recording."),
        click.option("--author", help="Only annotations by this author."),
        click.option(
            "--source", type=click.Choice(list(ann.SOURCES)), help="Only from this source."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@annotate.command("list")
@filter_options
@_selection_options
@click.option("-n", "--limit", type=click.IntRange(min=0), default=0, help="At most this many.")
@database_option
@format_options
def annotate_list(
    filters,
    labels,
    verdicts,
    recording_id,
    author,
    source,
    limit,
    database,
    fmt,
) -> None:
    """List annotations (filters as search: place, local time of day and dates of the start)."""
    filters = filters.build()
    with open_db(database).engine.connect() as conn:
        rows = ann.list_annotations(
            conn,
            filters,
            label=list(labels) or None,
            verdict=[v.lower() for v in verdicts] or None,
            recording_id=recording_id,
            author=author,
            source=source,
            limit=limit or None,
        )
    if not rows:
        echo_err("no annotations match")
    _emit_annotations(rows, fmt)


@annotate.command("remove")
@click.argument("ids", nargs=-1, type=int, required=True)
@database_option
def annotate_remove(ids, database) -> None:
    """Remove annotations by id (all or nothing)."""
    with open_db(database).engine.begin() as conn:
        n = ann.remove_annotations(conn, ids)
    echo_err(f"removed {n} annotation(s)")


@annotate.command("labels")
@database_option
@format_options
def annotate_labels(database, fmt) -> None:
    """Labels with how many annotations say yes, no and unsure."""
    with open_db(database).engine.connect() as conn:
        rows = ann.label_summary(conn)
    emit(rows, fmt, ["label", "yes", "no", "unsure", "recordings", "authors"])


@annotate.command("import")
@click.argument("files", nargs=-1, required=True, type=PathParam(dir_okay=False, path_type=Path))
@_author_option
@click.option(
    "--recording",
    "recording_id",
    type=int,
    help="The recording every row belongs to (for files that do not name it).",
)
@click.option("--label", help="Label every row with this (replaces the file's labels).")
@click.option("--default-label", help="Label for rows without one.")
@click.option(
    "--source",
    type=click.Choice(["import", "review"]),
    help="How the verdicts were made (default: review for Raven tables with a Verdict "
    "column, i.e. review batches; else import).",
)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(list(tables.FORMATS), case_sensitive=False),
    help="Format of the files (default: recognised from each file).",
)
@click.option(
    "--encoding",
    help="Text encoding of the files, e.g. latin-1 (default: UTF-8; a file that is not is read "
    "as Windows-1252, with a warning).",
)
@database_option
@format_options
def annotate_import(
    files, author, recording_id, label, default_label, source, file_format, encoding, database,
    fmt,
) -> None:  # fmt: skip
    """Import annotations: Raven selection tables (also BirdNET-Analyzer's and `search
    --raven`'s), Audacity label tracks, CSV (path,start_s,end_s,label[,verdict,author,note]).

    Each file is one transaction: a file with a bad row is not imported at all (the bad rows
    are listed by line number), the other files are. Rows already stored are skipped, so
    importing a file again adds nothing. Exit code 1 if any file failed.
    """
    engine = open_db(database).engine
    results: list[tables.ImportResult] = []
    failed = 0
    for path in files:
        try:
            with engine.begin() as conn:
                result = tables.import_file(
                    conn,
                    path,
                    author=author,
                    source=source,
                    default_label=default_label,
                    label=label,
                    recording_id=recording_id,
                    fmt=file_format.lower() if file_format else None,
                    encoding=encoding,
                )
        except AnnotationError as exc:
            failed += 1
            echo_err(f"error: {exc}")
            continue
        results.append(result)
        for warning in result.warnings:
            echo_err(f"warning: {warning}")
        extra = f", {result.unreviewed} unreviewed row(s) skipped" if result.unreviewed else ""
        echo_err(
            f"{path}: imported {result.imported} annotation(s) ({result.format}), skipped "
            f"{result.duplicates} already stored{extra}"
        )
    echo_err(
        f"{len(results)} file(s) imported, {failed} failed; "
        f"{sum(r.imported for r in results)} annotation(s) added"
    )
    emit([r.as_row() for r in results], fmt)
    if failed:
        sys.exit(1)


@annotate.command("export")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(list(tables.EXPORT_FORMATS), case_sensitive=False),
    required=True,
    help="raven/audacity: one file per recording; csv: one annotations.csv; kaleidoscope: "
    "one id.csv (MANUAL ID); birdnet-csv: BirdNET-Analyzer's CSV (verdict yes only).",
)
@click.argument("folder", type=PathParam(file_okay=False, path_type=Path))
@filter_options
@_selection_options
@database_option
def annotate_export(
    file_format,
    folder,
    filters,
    labels,
    verdicts,
    recording_id,
    author,
    source,
    database,
) -> None:
    """Write annotations into FOLDER as Raven tables, Audacity label tracks, CSV, or the
    detection tables of Kaleidoscope (id.csv) and BirdNET-Analyzer (CSV results)."""
    filters = filters.build()
    with open_db(database).engine.connect() as conn:
        result = tables.export(
            conn,
            file_format.lower(),
            folder,
            filters,
            label=list(labels) or None,
            verdict=[v.lower() for v in verdicts] or None,
            recording_id=recording_id,
            author=author,
            source=source,
        )
    echo_err(
        f"wrote {result.annotations} annotation(s) into {len(result.written)} file(s) in {folder}"
    )
    for p in result.written:
        click.echo(str(p))
