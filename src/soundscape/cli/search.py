"""``soundscape search``, ``soundscape concepts ...`` and ``soundscape classify``: options in,
rendered rows out; the work is in soundscape.search, .concepts, .classify and .export (the
library modules are imported inside the commands so that ``soundscape --help`` starts fast)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
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
@click.option("--speaker", help="Windows where an enrolled speaker speaks (`speakers enrol`).")
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
@click.option(
    "--strategy",
    type=click.Choice(["auto", "hnsw", "exact"], case_sensitive=False),
    default="auto",
    show_default=True,
    help="Index scan or exact scan (auto decides).",
)
@all_species_option
@weights_option
@database_option
@format_options
def search(database, fmt, export_dir, raven_dir, audacity_dir, **options) -> None:
    """Search windows by TEXT, an audio example, a stored window or a concept; or what was
    said (--said, in transcribed speech: `ingest --model whisper`).

    \b
    Examples:
      soundscape search chainsaw --time 02:00-04:00 --quadrant N --from 7d
      soundscape search --audio example.wav --start 3 --end 6 --events
      soundscape search --like 1234 --site "North Marsh" --json
      soundscape search --classifier saws --label saw --events --raven review/
      soundscape search junco --events --audacity labels/
      soundscape search --said '"interest rates" -mortgage' --time 06:00-09:00
      soundscape search --speaker guest --events
      soundscape search --voice caller.wav --start 2 --end 8
    """
    from soundscape import search as s
    from soundscape.media_files import stored_files
    from soundscape.speech import said_rows

    request = _search_request(options)
    with usage_errors():
        request.check()
        with open_db(database).engine.connect() as conn:
            found = s.search(conn, request)
            # clips are read by the recordings' stored identity (media_files.open_stored)
            stored = stored_files(conn, [h.recording_id for h in found.hits])
    if found.is_speech:
        echo_err(f"searching what was said: {found.said!r}")
    else:
        echo_err(f"searching space {found.space.name} by {found.description}")
    if found.guard:
        echo_err(f"note: {found.guard}")
    _write_files(found, stored, export_dir, raven_dir, audacity_dir)
    clips, full = export_dir is not None, fmt != "table"
    if found.is_speech:
        rows, columns = said_rows(found.hits, events=found.events, clips=clips, full=full)
    else:
        rows, columns = hit_rows(
            found.hits, labels=found.is_labels, events=found.events, clips=clips, full=full
        )
    if found.guard and full:
        rows = [{**r, "guard": found.guard} for r in rows]
        columns = [*columns, "guard"]
    if not found.hits:
        echo_err(
            "nothing said matches (transcribe recordings with `ingest --model whisper`)"
            if found.is_speech
            else "no windows match"
        )
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


def _write_files(found: SearchResult, stored: Any, export_dir, raven_dir, audacity_dir) -> None:
    """``--export``, ``--raven``, ``--audacity``: the hits as clips, selection tables, label
    tracks (labelled by what was said, or by the query in its space's band)."""
    from soundscape import export
    from soundscape.formats.audacity import export_audacity
    from soundscape.formats.raven import export_raven

    hits = found.hits
    label = found.said if found.said is not None else found.description
    space = None if found.is_speech else found.space
    for folder, write, what in (
        (export_dir, lambda d: export.export_clips(hits, d, stored), "file(s)"),
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
        _classify_with(classifier, clf_version, new_only, filters, database, fmt)
        return
    labels = parse_labels(labels_text)
    database_ = open_db(database)
    with database_.engine.begin() as conn:
        s.check_filter_names(conn, filters)
        space = pick_space(conn, space_name, purpose="text")
        run = run_classify(conn, space, labels, filters, template=template)
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
