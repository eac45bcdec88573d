"""``soundscape anomalies``, ``soundscape duplicates`` and ``soundscape plot ...``."""

from __future__ import annotations

from pathlib import Path

import click

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
from soundscape.embedders.indices import Indices
from soundscape.output import emit

ANOMALY_COLUMNS = [
    "rank",
    "score",
    "sensor",
    "local",
    "start_s",
    "end_s",
    "n_windows",
    "path",
    "segment_id",
]
MATCH_COLUMNS = [
    "rank",
    "score",
    "n_windows",
    "query",
    "query_start_s",
    "query_end_s",
    "sensor",
    "path",
    "start_s",
    "end_s",
    "offset_s",
    "precision_s",
]


def _when(value: str | None, option: str):
    from soundscape.search import parse_when

    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc


def _period(time_range, date_from, date_to, base_from, base_to):
    from soundscape.anomalies import Period
    from soundscape.search import date_bounds, parse_time_range

    try:
        t_from, t_to = parse_time_range(time_range) if time_range else (None, None)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--time") from exc
    d0, d1, a0, a1 = date_bounds(_when(date_from, "--from"), _when(date_to, "--to"))
    b0, b1, ba0, ba1 = date_bounds(
        _when(base_from, "--baseline-from"), _when(base_to, "--baseline-to")
    )
    period = Period(d0, d1, a0, a1, t_from, t_to, b0, b1, ba0, ba1)
    if date_from is None and all(v is None for v in (b0, b1, ba0, ba1)):
        raise click.UsageError(
            "give the period to score (--from) or the baseline (--baseline-from/--baseline-to)"
        )
    return period


@cli.command()
@click.option("-s", "--sensor", required=True, help="The sensor whose windows are scored.")
@click.option(
    "--space", "--model", "space_name", help="Space to score in (default: spectral if present)."
)
@click.option("--from", "date_from", metavar="WHEN", help="Start of the period (local date/ISO).")
@click.option("--to", "date_to", metavar="WHEN", help="End of the period (inclusive date/ISO).")
@click.option(
    "--baseline-from", "base_from", metavar="WHEN", help="Start of the baseline (default: all)."
)
@click.option(
    "--baseline-to",
    "base_to",
    metavar="WHEN",
    help="End of the baseline (default: just before --from).",
)
@click.option(
    "--time",
    "time_range",
    metavar="HH:MM-HH:MM",
    help="Only these local times of day, in the period and the baseline.",
)
@click.option(
    "--k", type=click.IntRange(1, 1000), default=10, show_default=True, help="Neighbours."
)
@click.option(
    "--top", type=click.IntRange(1, 10000), default=10, show_default=True, help="Rows shown."
)
@click.option(
    "--min-score",
    type=Number(),
    help="Only windows scoring at least this (events: default 2).",
)
@click.option("--windows", is_flag=True, help="List windows instead of merged events.")
@click.option(
    "--strategy",
    type=click.Choice(["auto", "hnsw", "exact"], case_sensitive=False),
    default="auto",
    show_default=True,
    help="Neighbour search: index or exact scan (auto decides).",
)
@database_option
@format_options
def anomalies(
    sensor,
    space_name,
    date_from,
    date_to,
    base_from,
    base_to,
    time_range,
    k,
    top,
    min_score,
    windows,
    strategy,
    database,
    fmt,
) -> None:
    """Find what does not sound like the sensor's normal sound.

    Each window of the period is scored by its mean cosine distance to its k nearest windows
    in the baseline (the sensor's windows before the period, unless --baseline-from/-to say
    otherwise), divided by the baseline's own typical distance: about 1 is ordinary, 3 and
    more is unusual. Scores are stored (SQL: ranger.anomalies); the most unusual windows are
    listed first, merged into events.

    \b
    Examples:
      soundscape anomalies -s pump-1 --from 2024-06-02
      soundscape anomalies -s north-1 --baseline-from 2024-05-01 --baseline-to 2024-05-07 \\
          --from 2024-05-08 --to 2024-05-08 --time 22:00-04:00 --json
    """
    from soundscape import anomalies as an
    from soundscape.spaces import pick_space

    period = _period(time_range, date_from, date_to, base_from, base_to)
    database_ = open_db(database)
    with database_.engine.begin() as conn:
        space = pick_space(conn, space_name, purpose="anomalies", sensor=sensor)
        run = an.score(conn, sensor, space, period, k=k, strategy=strategy.lower())
        if windows:
            hits = an.top_windows(conn, run.id, top, min_score)
        else:
            hits = an.events(conn, run.id, top, min_score)
    echo_err(
        f"run {run.id}: scored {run.n_windows} window(s) of {sensor} in space {space.name} "
        f"against {run.baseline_windows} baseline window(s) ({run.method}, k={k}; "
        f"typical baseline distance {run.scale:.4f} = score 1)"
    )
    if run.scale_with_twins is not None:
        echo_err(
            "note: the baseline holds repeated audio (windows with exact twins); the twins are "
            f"left out of the typical distance, which would otherwise be {run.scale_with_twins:.4f}"
            " and inflate every score"
        )
    rows = [
        {"rank": i, **h.as_row(), "score": float(h.score), "run": run.id}
        for i, h in enumerate(hits, start=1)
    ]
    columns = [c for c in ANOMALY_COLUMNS if not (windows and c == "n_windows")]
    if fmt != "table":
        columns += ["site", "quadrant", "recording_id", "starts_at", "run"]
    if not rows:
        floor = min_score if min_score is not None else an.EVENT_MIN_SCORE
        echo_err(
            f"no window scores {floor:g} or more: nothing unusual"
            + ("" if windows else " (--windows lists the top windows anyway)")
        )
    emit(rows, fmt, columns)


@cli.command()
@click.option(
    "--audio",
    type=PathParam(exists=True, dir_okay=False, path_type=Path),
    help="Find copies of this file (or of --start/--end of it).",
)
@click.option("--recording", type=int, metavar="ID", help="Find copies of a stored recording.")
@click.option("--all", "all_", is_flag=True, help="Find audio shared by any two recordings.")
@click.option("--start", type=Number(min=0), help="Start of the --audio span (s).")
@click.option("--end", type=Number(min=0), help="End of the --audio span (s).")
@click.option(
    "--space", "--model", "space_name", help="Space to search (default: birdnet if present)."
)
@click.option(
    "--min-score",
    type=Number(-1, 1),
    help="Cosine similarity a window pair needs (default per model: birdnet 0.7, spectral 0.8).",
)
@click.option(
    "--min-windows",
    type=click.IntRange(1, 1000),
    default=2,
    show_default=True,
    help="Stored windows a copy must span.",
)
@click.option(
    "--per-window",
    type=click.IntRange(1, 1000),
    help="Neighbours per query window (default 20; --all: 3).",
)
@click.option(
    "--no-verify",
    is_flag=True,
    help="Keep window-level matches without checking the waveforms correlate.",
)
@click.option(
    "--strategy",
    type=click.Choice(["auto", "hnsw", "exact"], case_sensitive=False),
    default="auto",
    show_default=True,
)
@database_option
@format_options
def duplicates(
    audio,
    recording,
    all_,
    start,
    end,
    space_name,
    min_score,
    min_windows,
    per_window,
    no_verify,
    strategy,
    database,
    fmt,
) -> None:
    """Find where a piece of audio occurs again (copies, re-uploads, re-broadcasts).

    Consecutive matching windows at one consistent time offset form one match, reported once
    with the span in the query, the span in the recording it was found in and the offset
    between them (found time = query time + offset). Matches are verified and their offsets
    refined to a millisecond by cross-correlating the two waveforms, where both files can be
    read. Robust to gain, resampling, mp3 re-encoding, added noise and a shifted start.

    \b
    Examples:
      soundscape duplicates --audio jingle.wav
      soundscape duplicates --recording 12 --json
      soundscape duplicates --all --min-score 0.8
    """
    from soundscape import duplicates as dup
    from soundscape.spaces import pick_space

    _check_duplicates_query(audio, recording, all_, start, end)
    options = {
        "min_windows": min_windows,
        "verify": not no_verify,
        "strategy": strategy.lower(),
    }
    with open_db(database).engine.connect() as conn:
        space = pick_space(conn, space_name, purpose="duplicates")
        score = dup.default_min_score(space) if min_score is None else min_score
        echo_err(f"searching space {space.name} (window pairs scoring >= {score:g})")
        if audio is not None:
            matches = dup.find_audio(
                conn,
                audio,
                space,
                score,
                start_s=start,
                end_s=end,
                k=per_window or 20,
                **options,
            )
        elif recording is not None:
            matches = dup.find_recording(
                conn, recording, space, score, k=per_window or 20, **options
            )
        else:
            matches = dup.find_all(conn, space, score, k=per_window or 3, **options)
    rows = [{"rank": i, **m.as_row()} for i, m in enumerate(matches, start=1)]
    if not matches:
        echo_err("no copies found")
    emit(rows, fmt, _match_columns(all_, fmt))


def _check_duplicates_query(
    audio: Path | None,
    recording: int | None,
    all_: bool,
    start: float | None,
    end: float | None,
) -> None:
    """Exactly one of --audio, --recording and --all; --start/--end only with --audio."""
    given = [n for n, v in (("--audio", audio), ("--recording", recording)) if v is not None]
    given += ["--all"] if all_ else []
    if len(given) != 1:
        raise click.UsageError(
            "give exactly one of --audio FILE, --recording ID, --all"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if (start is not None or end is not None) and audio is None:
        raise click.UsageError("--start/--end select a span of --audio FILE")


def _match_columns(all_: bool, fmt: str) -> list[str]:
    """The columns of ``duplicates``: the table's few, or every one in other formats."""
    columns = list(MATCH_COLUMNS)
    if all_:
        columns[columns.index("query")] = "query_recording_id"
    if fmt != "table":
        columns += [
            c
            for c in (
                "query_recording_id",
                "query_path",
                "recording_id",
                "min_score",
                "correlation",
                "verified",
                "local",
            )
            if c not in columns
        ]
    return columns


# ------------------------------------------------------------------------------ plots
@cli.group()
def plot() -> None:
    """Pictures: activity heatmaps and annotated spectrograms (PNG)."""


def _size(width: int | None, height: int | None) -> dict:
    return {k: v for k, v in (("width", width), ("height", height)) if v is not None}


@plot.command("activity")
@click.option("--concept", required=True, help="A stored concept (soundscape concepts list).")
@click.option(
    "--by",
    type=click.Choice(["quadrant", "site", "sensor"]),
    default="quadrant",
    show_default=True,
    help="One panel per quadrant, site or sensor.",
)
@click.option("--from", "date_from", metavar="DATE", help="First local date.")
@click.option("--to", "date_to", metavar="DATE", help="Last local date (inclusive).")
@click.option(
    "-o",
    "--output",
    required=True,
    type=PathParam(dir_okay=False, path_type=Path),
    help="PNG file to write.",
)
@click.option("--width", type=click.IntRange(300, 6000), help="Pixels (default 1000).")
@click.option("--height", type=click.IntRange(200, 6000), help="Pixels (default: by days).")
@database_option
def plot_activity(concept, by, date_from, date_to, output, width, height, database) -> None:
    """Heatmap of a concept's detections by local hour (x) and day (y)."""
    from datetime import datetime

    from soundscape.plots import activity_heatmap

    d0, d1 = _when(date_from, "--from"), _when(date_to, "--to")
    if isinstance(d0, datetime) or isinstance(d1, datetime):
        raise click.UsageError("--from/--to take local dates here (YYYY-MM-DD, 7d, today)")
    with open_db(database).engine.connect() as conn:
        result = activity_heatmap(
            conn, concept, output, by=by, date_from=d0, date_to=d1, **_size(width, height)
        )
    d = result.details
    echo_err(
        f"wrote {output} ({result.width}x{result.height}): {d['detections']} detection(s) of "
        f"{concept} over {d['days']} day(s), {len(d['groups'])} {by} panel(s)"
    )


@plot.command("indices")
@click.option(
    "--index",
    "index",
    type=click.Choice(Indices.NAMES, case_sensitive=False),
    default="aci",
    show_default=True,
    help="Which acoustic index (docs/analytics.md).",
)
@click.option(
    "--by",
    type=click.Choice(["quadrant", "site", "sensor"]),
    default="sensor",
    show_default=True,
    help="One panel per sensor, site or quadrant.",
)
@click.option("--space", help="An indices space (default: indices, 60 s windows).")
@filter_options
@click.option(
    "-o",
    "--output",
    required=True,
    type=PathParam(dir_okay=False, path_type=Path),
    help="PNG file to write.",
)
@click.option("--width", type=click.IntRange(300, 6000), help="Pixels (default 1000).")
@click.option("--height", type=click.IntRange(200, 6000), help="Pixels (default: by days).")
@database_option
def plot_indices(index, by, space, filters, output, width, height, database) -> None:
    """Heatmap of an acoustic index: its median by local hour (x) and day (y)."""
    from soundscape.plots import indices_heatmap
    from soundscape.queries import check_filter_names

    with open_db(database).engine.connect() as conn:
        built = filters.build()
        check_filter_names(conn, built)
        result = indices_heatmap(
            conn, index.lower(), output, by=by, filters=built, space=space,
            **_size(width, height),
        )  # fmt: skip
    d = result.details
    echo_err(
        f"wrote {output} ({result.width}x{result.height}): {index} over {d['days']} day(s), "
        f"{d['cells']} hour(s), {len(d['groups'])} {by} panel(s), colours "
        f"{d['range'][0]:.4g} to {d['range'][1]:.4g}"
    )


@plot.command("recording")
@click.argument("recording_id", type=int)
@click.option("--start", type=Number(min=0), help="Start of the span (s).")
@click.option("--end", type=Number(min=0), help="End of the span (s).")
@click.option("--concept", "concepts", multiple=True, help="Only these concepts (repeatable).")
@click.option("--run", "run_id", type=int, help="Anomaly run to show (default: the newest).")
@click.option(
    "--threshold",
    type=Number(),
    default=3.0,
    show_default=True,
    help="Anomaly score from which windows are highlighted.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=PathParam(dir_okay=False, path_type=Path),
    help="PNG file to write.",
)
@click.option("--width", type=click.IntRange(300, 6000), help="Pixels (default 1200).")
@click.option("--height", type=click.IntRange(200, 6000), help="Pixels (default 600).")
@database_option
def plot_recording(
    recording_id, start, end, concepts, run_id, threshold, output, width, height, database
) -> None:
    """Spectrogram of a recording with detections and anomalies marked."""
    from soundscape.plots import recording_plot

    with open_db(database).engine.connect() as conn:
        result = recording_plot(
            conn,
            recording_id,
            output,
            start_s=start,
            end_s=end,
            concepts=list(concepts) or None,
            run_id=run_id,
            threshold=threshold,
            **_size(width, height),
        )
    d = result.details
    run = f", anomalies of run {d['anomaly_run']}" if d["anomaly_run"] else ""
    echo_err(
        f"wrote {output} ({result.width}x{result.height}): {d['start_s']:g}-{d['end_s']:g} s, "
        f"{d['detections']} detection(s){run}"
    )
