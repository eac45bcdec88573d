"""``soundscape search``, ``soundscape concepts ...`` and ``soundscape classify``: options in,
rendered rows out; the work is in soundscape.search, .concepts, .classify and .export (the
library modules are imported inside the commands so that ``soundscape --help`` starts fast)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from soundscape.cli.base import (
    Number,
    PathParam,
    all_species_option,
    cli,
    database_option,
    echo_err,
    format_options,
    open_db,
    weights_option,
)
from soundscape.cli.filters import filter_options
from soundscape.errors import InvalidRequest
from soundscape.output import emit
from soundscape.results import hit_rows

if TYPE_CHECKING:
    from soundscape.search import SearchRequest, SearchResult


def _example_options(f):
    """The query-by-example options shared by ``search`` and ``concepts add``."""
    options = [
        click.option(
            "--audio",
            type=PathParam(exists=True, dir_okay=False, path_type=Path),
            help="An audio example: windows that sound like this file.",
        ),
        click.option("--start", type=Number(min=0), help="Start of the --audio span (s)."),
        click.option("--end", type=Number(min=0), help="End of the --audio span (s)."),
        click.option(
            "--like",
            type=int,
            metavar="WINDOW_ID",
            help="A stored window as the example (a hit's segment_id).",
        ),
        click.option(
            "--space",
            "--model",
            "space_name",
            help="Space (model configuration); default: the best that can answer.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@contextmanager
def usage_errors() -> Iterator[None]:
    """The library's ``InvalidRequest`` (option combinations) as a usage error (exit 2)."""
    try:
        yield
    except InvalidRequest as exc:
        raise click.UsageError(str(exc)) from exc


def table_options(f):
    """``--kaleidoscope DIR`` and ``--birdnet-csv DIR``: the rows as those tools' tables."""
    f = click.option(
        "--birdnet-csv",
        "birdnet_dir",
        type=PathParam(file_okay=False, writable=True, path_type=Path),
        help="Write BirdNET-Analyzer CSV results (<stem>.BirdNET.results.csv per recording, "
        "BirdNET_CombinedTable.csv) into this folder.",
    )(f)
    return click.option(
        "--kaleidoscope",
        "kaleidoscope_dir",
        type=PathParam(file_okay=False, writable=True, path_type=Path),
        help="Write a Kaleidoscope id.csv (AUTO ID* per row) into this folder.",
    )(f)


def write_tables(
    detections: list[Any],
    kaleidoscope_dir: Path | None,
    birdnet_dir: Path | None,
    scientific: dict[str, str] | None = None,
) -> None:
    """``--kaleidoscope``, ``--birdnet-csv``: write ``detections`` (formats.rows.Detection)."""
    from soundscape.formats import birdnet_csv, kaleidoscope

    if kaleidoscope_dir is not None:
        target = kaleidoscope.write(detections, kaleidoscope_dir)
        echo_err(f"wrote {len(detections)} row(s) to {target}")
    if birdnet_dir is not None:
        result = birdnet_csv.write(detections, birdnet_dir, scientific)
        echo_err(
            f"wrote {len(detections)} row(s) to {len(result.written)} BirdNET CSV file(s) in "
            f"{birdnet_dir}"
        )


@cli.command()
@click.argument("text", required=False)
@_example_options
@click.option("--concept", help="Run a stored concept (see `soundscape concepts list`).")
@click.option(
    "--said",
    metavar="TEXT",
    help='What was said (transcribed speech): words, "phrases", -exclusions; fuzzy fallback.',
)
@click.option(
    "--fuzzy/--no-fuzzy",
    default=True,
    show_default=True,
    help="--said: fill up with similar spellings (trigrams) when full text finds too few.",
)
@click.option(
    "--voice",
    type=PathParam(exists=True, dir_okay=False, path_type=Path),
    help="Who says it: windows whose voice matches this example's (--start/--end: a span).",
)
@click.option(
    "--speaker",
    help="Windows where an enrolled speaker speaks (`speakers enrol`); with --said: what they said.",
)
@click.option(
    "--classifier", help="Rank by a trained classifier's score (with --label; `soundscape train`)."
)
@click.option("--label", help="The classifier label to rank by.")
@click.option(
    "--version", "clf_version", type=click.IntRange(min=1), help="Classifier version (latest)."
)
@filter_options
@click.option("--min-score", type=Number(), help="Only hits scoring at least this.")
@click.option("-n", "--limit", type=click.IntRange(1, 10000), default=10, show_default=True)
@click.option("--events", is_flag=True, help="Merge overlapping/adjacent windows into events.")
@click.option(
    "--export",
    "export_dir",
    type=PathParam(file_okay=False, writable=True, path_type=Path),
    help="Write each hit as a WAV clip + spectrogram PNG into this folder.",
)
@click.option(
    "--raven",
    "raven_dir",
    type=PathParam(file_okay=False, writable=True, path_type=Path),
    help="Write a Raven Pro selection table per recording into this folder.",
)
@click.option(
    "--audacity",
    "audacity_dir",
    type=PathParam(file_okay=False, writable=True, path_type=Path),
    help="Write an Audacity label track per recording (<stem>.txt) into this folder.",
)
@table_options
@click.option(
    "--strategy",
    type=click.Choice(["auto", "hnsw", "exact"], case_sensitive=False),
    default="auto",
    show_default=True,
    help="Index scan or exact scan (auto decides).",
)
@click.option(
    "--explain",
    is_flag=True,
    help="Print the SQL statement that ranks (values written in) instead of running it.",
)
@all_species_option
@weights_option
@database_option
@format_options
def search(
    database,
    fmt,
    export_dir,
    raven_dir,
    audacity_dir,
    kaleidoscope_dir,
    birdnet_dir,
    explain,
    **options,
) -> None:
    """Search windows by TEXT, an audio example, a stored window or a concept; or what was
    said (--said, in transcribed speech: `ingest --model whisper`).

    TEXT may be a sentence: "bird songs at 3:00 AM in the North Quadrant" is searched as
    "bird song" --time 02:30-03:30 --quadrant N (flags win over words; how it was understood
    goes to stderr and, with --json, into each row). Times, dates, places and the sun
    (dawn, dusk, night, "1 hour after sunrise") are understood: docs/search.md. A sentence
    with a place or time and no sound lists the classes detected there and then.

    \b
    Examples:
      soundscape search "bird songs at 3:00 AM in the North Quadrant"
      soundscape search "owls after dusk in June" --site Forest
      soundscape search chainsaw --time 02:00-04:00 --quadrant N --from 7d
      soundscape search --audio example.wav --start 3 --end 6 --events
      soundscape search --like 1234 --site "North Marsh" --json
      soundscape search --classifier saws --label saw --events --raven review/
      soundscape search junco --events --audacity labels/
      soundscape search --label "Barred Owl" --kaleidoscope kpro/ --birdnet-csv bn/
      soundscape search --said '"interest rates" -mortgage' --time 06:00-09:00
      soundscape search --said vaccine --speaker guest
      soundscape search --speaker guest --events
      soundscape search --voice caller.wav --start 2 --end 8
    """
    from soundscape import search as s
    from soundscape.formats.rows import Detection
    from soundscape.sentence import explain_sql, merge, understand
    from soundscape.speech import said_miss

    request = _search_request(options)
    understood = None
    with usage_errors(), open_db(database).engine.connect() as conn:
        if request.text is not None:
            understood = understand(conn, request.text, space=request.space)
        if understood is not None:
            echo_err(f"understood: {understood.line()}")
            filters = merge(request.filters, understood.filters)
            request = replace(request, text=understood.text, filters=filters)
            if understood.text is None:  # a place and time only: what was heard there
                _activity(conn, request, fmt, understood)
                return
        request.check()
        if explain:
            click.echo(explain_sql(conn, request))
            return
        found = s.search(conn, request)
        miss = said_miss(conn, found.said) if found.is_speech and not found.hits else None
        stored, context, names = _file_context(conn, found, export_dir, birdnet_dir)
    if found.is_speech:
        echo_err(f"searching what was said: {found.said!r}")
    else:
        echo_err(f"searching space {found.space.name} by {found.description}")
    if found.guard:
        echo_err(f"note: {found.guard}")
    _write_files(found, stored, export_dir, raven_dir, audacity_dir, context)
    label = found.said if found.said is not None else found.description
    write_tables([Detection.from_hit(h, label) for h in found.hits], kaleidoscope_dir,
                 birdnet_dir, names)  # fmt: skip
    rows, columns = _rows(found, fmt, export_dir is not None, understood)
    if not found.hits:
        echo_err(miss or "no windows match")
    emit(rows, fmt, columns)


def _file_context(
    conn: Any, found: SearchResult, export_dir: Path | None, birdnet_dir: Path | None
) -> tuple[Any, dict[Any, Any], dict[str, str]]:
    """What writing the hits' files needs from the database: the recordings' stored identity
    (clips are read through media_files.open_stored), where and with what each was recorded
    (a clip's GUANO, with --export) and the labels' scientific names (--birdnet-csv)."""
    from soundscape.formats.birdnet_csv import scientific_names
    from soundscape.formats.guano import clip_context
    from soundscape.media_files import stored_files

    ids = [h.recording_id for h in found.hits]
    stored = stored_files(conn, ids)
    context = clip_context(conn, ids) if export_dir is not None else {}
    names = (
        scientific_names(conn, found.space.id)
        if birdnet_dir is not None and not found.is_speech
        else {}
    )
    return stored, context, names


def _rows(
    found: SearchResult, fmt: str, clips: bool, understood: Any
) -> tuple[list[dict[str, Any]], list[str]]:
    """The hits as output rows (what was said, or windows), with the recall guard's note and
    how a sentence was understood in the full formats (--json, --csv)."""
    from soundscape.speech import said_rows

    full = fmt != "table"
    if found.is_speech:
        rows, columns = said_rows(found.hits, events=found.events, clips=clips, full=full)
    else:
        rows, columns = hit_rows(
            found.hits, labels=found.is_labels, events=found.events, clips=clips, full=full
        )
    if found.guard and full:
        rows = [{**r, "guard": found.guard} for r in rows]
        columns = [*columns, "guard"]
    if understood is not None and full:
        rows = [{**r, "understood": understood.line()} for r in rows]
        columns = [*columns, "understood"]
    return rows, columns


def _activity(conn: Any, request: SearchRequest, fmt: str, understood: Any) -> None:
    """A sentence without a sound: the classes detected most often under its filters
    (``labels top``)."""
    from soundscape.spaces import pick_space
    from soundscape.species import top_labels

    space = pick_space(conn, request.space, purpose="labels")
    rows = top_labels(
        conn, space, request.filters, limit=request.limit, all_species=request.all_species
    )
    echo_err(f"no sound named: the classes {space.name} detected most often there and then")
    if not rows:
        echo_err("no windows match")
    columns = ["common", "scientific", "windows", "recordings", "best_score"]
    if fmt != "table":
        rows = [{**r, "understood": understood.line()} for r in rows]
        columns = [*columns, "understood"]
    emit(rows, fmt, columns)


def _search_request(o: dict[str, Any]) -> SearchRequest:
    """``search``'s options as a ``SearchRequest`` (a bad filter value is a usage error)."""
    from soundscape.search import SearchRequest

    filters = o["filters"].build(o["min_score"])
    return SearchRequest(
        text=o["text"], audio=o["audio"], start_s=o["start"], end_s=o["end"], like=o["like"],
        concept=o["concept"], classifier=o["classifier"], label=o["label"],
        version=o["clf_version"], space=o["space_name"], filters=filters, limit=o["limit"],
        events=o["events"], strategy=o["strategy"].lower(), all_species=o["all_species"],
        voice=o["voice"], speaker=o["speaker"], said=o["said"], fuzzy=o["fuzzy"],
    )  # fmt: skip


def _write_files(
    found: SearchResult, stored: Any, export_dir, raven_dir, audacity_dir, context: Any = None
) -> None:
    """``--export``, ``--raven``, ``--audacity``: the hits as clips, selection tables, label
    tracks (labelled by what was said, or by the query in its space's band)."""
    from soundscape import export
    from soundscape.formats.audacity import export_audacity
    from soundscape.formats.raven import export_raven

    hits = found.hits
    label = found.said if found.said is not None else found.description
    space = None if found.is_speech else found.space
    for folder, write, what in (
        (export_dir, lambda d: export.export_clips(hits, d, stored, context=context), "file(s)"),
        (raven_dir, lambda d: export_raven(hits, d, label, space), "selection table(s)"),
        (audacity_dir, lambda d: export_audacity(hits, d, label), "label track(s)"),
    ):
        if folder is None:
            continue
        result = write(folder)
        for err in result.errors:
            echo_err(f"warning: {err}")
        echo_err(f"wrote {len(result.written)} {what} to {folder}")


# --------------------------------------------------------------------------------- concepts
@cli.group()
def concepts() -> None:
    """Named, stored queries that SQL users can run (ranger.search, ranger.detections)."""


@concepts.command("add")
@click.argument("name")
@click.option("--text", help="A text query (labels for BirdNET, the text encoder for CLAP).")
@_example_options
@click.option(
    "--threshold",
    type=Number(-1, 1),
    help="Score a window needs to count as a detection: a class probability (0 to 1) for "
    "labels (default 0.5), a cosine similarity (-1 to 1) for other queries.",
)
@click.option("--replace", is_flag=True, help="Overwrite a concept with the same name.")
@weights_option
@database_option
@format_options
def concepts_add(
    name, text, audio, start, end, like, space_name, threshold, replace, database, fmt
) -> None:
    """Store a concept and compute its detections."""
    from soundscape.concepts import save_concept
    from soundscape.search import SearchRequest, resolve_query

    request = SearchRequest(
        text=text, audio=audio, start_s=start, end_s=end, like=like, space=space_name
    )
    with usage_errors():
        request.check()
        with open_db(database).engine.begin() as conn:
            query = resolve_query(conn, request)
            row = save_concept(conn, name, query, threshold=threshold, replace=replace)
    echo_err(
        f"concept {name!r} stored in space {query.space.name} ({query.description}); "
        f"{row['detections']} detection(s)"
    )
    emit([row], fmt)


@concepts.command("list")
@database_option
@format_options
def concepts_list(database, fmt) -> None:
    """List concepts with their space, threshold and number of detections."""
    from soundscape.concepts import list_concepts

    with open_db(database).engine.connect() as conn:
        rows = list_concepts(conn)
    emit(
        rows,
        fmt,
        ["name", "space", "kind", "query", "threshold", "n_labels", "detections", "refreshed_at"],
    )


@concepts.command("remove")
@click.argument("names", nargs=-1, required=True)
@database_option
def concepts_remove(names, database) -> None:
    """Remove concepts (and their detections)."""
    from soundscape.concepts import remove_concepts

    with open_db(database).engine.begin() as conn:
        remove_concepts(conn, names)
    echo_err(f"removed {len(names)} concept(s)")


@concepts.command("refresh")
@click.argument("names", nargs=-1)
@database_option
def concepts_refresh(names, database) -> None:
    """Recompute detections (all concepts, or the ones named), e.g. after the occurrence lists
    changed. New audio needs none: ingest, backfill and workers keep detections current."""
    from soundscape.concepts import refresh_concepts

    with open_db(database).engine.begin() as conn:
        total = refresh_concepts(conn, names)
    echo_err(f"{total} detection(s)")
    sys.stdout.flush()


# --------------------------------------------------------------------------------- classify
@cli.command()
@click.option(
    "--labels",
    "labels_text",
    help='Zero-shot: comma-separated labels, e.g. "speech, music, rain, bird song, chainsaw".',
)
@click.option(
    "--classifier",
    help="Instead: score windows with a trained classifier and store its detections.",
)
@click.option(
    "--version", "clf_version", type=click.IntRange(min=1), help="Classifier version (latest)."
)
@click.option("--new", "new_only", is_flag=True, help="Only windows this version has not scored.")
@click.option(
    "--template",
    help="Text around each label for text-encoder models ({} is the label; default: "
    "'the sound of {}'). Refused by spaces without one (BirdNET matches class names).",
)
@click.option(
    "--space",
    "--model",
    "space_name",
    help="Space to classify (default: one with a text encoder, else with labels).",
)
@filter_options
@click.option(
    "--per",
    type=click.Choice(["window", "recording"], case_sensitive=False),
    default="window",
    show_default=True,
    help="One row per window or per recording.",
)
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Rows to print (0: all); every window's result is stored anyway.",
)
@table_options
@weights_option
@database_option
@format_options
def classify(
    labels_text,
    classifier,
    clf_version,
    new_only,
    template,
    space_name,
    filters,
    per,
    limit,
    kaleidoscope_dir,
    birdnet_dir,
    database,
    fmt,
) -> None:
    """Zero-shot classification of every matching window against a few labels, or scoring
    with a trained classifier (--classifier NAME).

    CLAP: softmax over the labels' text similarities. BirdNET: the labels are matched to its own
    classes. Results are stored: SELECT * FROM ranger.window_labels. With --classifier, windows
    whose score passes a label's threshold are stored as detections
    (SELECT * FROM ranger.classifier_detections); --new skips windows already scored.
    """
    from soundscape import search as s
    from soundscape.formats.birdnet_csv import scientific_names
    from soundscape.formats.rows import Detection
    from soundscape.spaces import pick_space
    from soundscape.zeroshot import classify as run_classify
    from soundscape.zeroshot import parse_labels

    if (labels_text is None) == (classifier is None):
        raise click.UsageError("give either --labels (zero-shot) or --classifier NAME")
    if classifier is None and (clf_version is not None or new_only):
        raise click.UsageError("--version/--new go with --classifier NAME")
    filters = filters.build()
    if classifier is not None:
        if space_name:
            raise click.UsageError("a classifier knows its space; leave out --space")
        if kaleidoscope_dir is not None or birdnet_dir is not None:
            raise click.UsageError(
                "--kaleidoscope/--birdnet-csv write zero-shot results (--labels); a "
                "classifier's detections: `search --classifier NAME --label L --kaleidoscope DIR`"
            )
        _classify_with(classifier, clf_version, new_only, filters, database, fmt)
        return
    labels = parse_labels(labels_text)
    database_ = open_db(database)
    with database_.engine.begin() as conn:
        s.check_filter_names(conn, filters)
        space = pick_space(conn, space_name, purpose="text")
        run = run_classify(conn, space, labels, filters, template=template)
        names = scientific_names(conn, space.id) if birdnet_dir is not None else {}
    items = run.windows if per == "window" else run.recordings
    echo_err(
        f"space {space.name}: classified {len(run.windows)} window(s) of "
        f"{len(run.recordings)} recording(s) as run {run.run_id}"
    )
    shown = items if limit == 0 else items[:limit]
    if len(shown) < len(items):
        echo_err(
            f"showing {len(shown)} of {len(items)} (--limit 0 for all; all are in "
            "ranger.window_labels)"
        )
    columns = (
        ["segment_id", "label", "score", "sensor", "local", "start_s", "end_s", "path"]
        if per == "window"
        else ["recording_id", "label", "score", "windows", "sensor", "local", "path"]
    )
    # the tables hold every window (or recording) classified, not only the rows shown
    write_tables([Detection.from_classified(i) for i in items], kaleidoscope_dir, birdnet_dir,
                 names)  # fmt: skip
    emit([i.as_row() for i in shown], fmt, columns)


def _classify_with(name, version, new_only, filters, database, fmt) -> None:
    """``classify --classifier``: score windows in SQL batches, store detections, print counts."""
    from soundscape import classifiers
    from soundscape import search as s

    with open_db(database).engine.begin() as conn:
        s.check_filter_names(conn, filters)
        clf = classifiers.get_classifier(conn, name, version)
        result = classifiers.classify(conn, clf, filters, new_only=new_only)
    echo_err(
        f"classifier {clf.name} v{clf.version} (space {clf.space.name}): scored "
        f"{result.scored} window(s){' not scored before' if new_only else ''}; "
        f"{result.detected} detection(s) stored or updated"
    )
    rows = [
        {
            "name": clf.name,
            "version": clf.version,
            "label": m.label,
            "threshold": round(m.threshold, 4),
            "detections": result.per_label.get(m.label, 0),
        }
        for m in clf.labels
    ]
    emit(rows, fmt, ["name", "version", "label", "threshold", "detections"])
