"""Sensors, models, recordings, stats and labels: what is in the database."""

from __future__ import annotations

import json

import click

from soundscape.cli.base import (
    Number,
    all_species_option,
    cli,
    database_option,
    echo_err,
    format_options,
    open_db,
)
from soundscape.cli.filters import filter_options
from soundscape.output import emit


# --------------------------------------------------------------------------------- sensors
def _no_constant(name: str) -> None:
    """``json.loads`` reads NaN and Infinity, which are not JSON and which jsonb refuses."""
    raise ValueError(f"{name} is not a JSON value; use a number, null or a string")


@cli.group()
def sensors() -> None:
    """Register recorders: site, quadrant, position and timezone."""


@sensors.command("add")
@click.argument("name")
@click.option("--site", help="Site name, e.g. 'North Marsh'.")
@click.option("--quadrant", help="Quadrant, e.g. 'N'.")
@click.option("--lat", type=Number(-90, 90), help="Latitude (WGS84).")
@click.option("--lon", type=Number(-180, 180), help="Longitude (WGS84).")
@click.option(
    "--timezone",
    "tz",
    default="UTC",
    show_default=True,
    help="IANA timezone of the sensor (gives local time of day, DST-correct).",
)
@click.option("--metadata", help="Extra fields as a JSON object.")
@click.option("--update", is_flag=True, help="Update the sensor if it exists.")
@database_option
@format_options
def sensors_add(name: str, site, quadrant, lat, lon, tz, metadata, update, database, fmt) -> None:
    """Add a sensor (recorder)."""
    from soundscape.sensors import add_sensor

    try:
        meta = json.loads(metadata, parse_constant=_no_constant) if metadata else {}
    except ValueError as exc:  # JSONDecodeError, or NaN/Infinity
        if not isinstance(exc, json.JSONDecodeError):
            raise click.BadParameter(str(exc), param_hint="--metadata") from exc
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--metadata") from exc
    except RecursionError:
        raise click.BadParameter("JSON nested too deeply", param_hint="--metadata") from None
    if not isinstance(meta, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--metadata")
    database_ = open_db(database)
    with database_.engine.begin() as conn:
        sensor = add_sensor(
            conn,
            name,
            site=site,
            quadrant=quadrant,
            latitude=lat,
            longitude=lon,
            timezone=tz,
            metadata=meta,
            update=update,
        )
    emit([sensor.as_dict()], fmt)


@sensors.command("list")
@database_option
@format_options
def sensors_list(database: str | None, fmt: str) -> None:
    """List sensors."""
    from soundscape.sensors import list_sensors

    with open_db(database).engine.connect() as conn:
        rows = [s.as_dict() for s in list_sensors(conn)]
    emit(
        rows,
        fmt,
        ["id", "name", "site", "quadrant", "latitude", "longitude", "timezone", "metadata"],
    )


# ---------------------------------------------------------------------------------- models
@cli.group()
def models() -> None:
    """Audio models (embedding spaces)."""


@models.command("list")
@format_options
def models_list(fmt: str) -> None:
    """Show each model: dimension, sample rate, window, hop, and whether it can run here.

    Available means its runtime is installed and its weights are on this machine (a model
    with downloadable weights, CLAP, says when it would download them on first use).
    """
    from soundscape.embedders import get_model_class, model_names

    rows = []
    for name in model_names():
        try:
            cls = get_model_class(name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            rows.append({"name": name, "available": False, "reason": f"cannot load: {exc}"})
            continue
        reason = cls.unavailable_reason() or cls.weights_missing()
        rows.append(
            {
                "name": name,
                "version": cls.version,
                "dimension": cls.dimension,
                "sample_rate": cls.sample_rate,
                "window_s": cls.default_window_s,
                "hop_s": cls.default_hop_s,
                "text": cls.supports_text,
                "classes": cls.has_class_scores,
                "available": reason is None,
                "reason": reason or "",
            }
        )
    # Speech-to-text models (soundscape.transcribers): utterances, not vectors; their window
    # is the longest chunk of speech they transcribe at once.
    from soundscape.transcribers import get_transcriber_class, transcriber_names

    for name in transcriber_names():
        try:
            tcls = get_transcriber_class(name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            rows.append({"name": name, "available": False, "reason": f"cannot load: {exc}"})
            continue
        reason = tcls.unavailable_reason()
        rows.append(
            {
                "name": name,
                "version": tcls.version,
                "sample_rate": tcls.sample_rate,
                "window_s": tcls.max_chunk_s,
                "text": True,
                "classes": False,
                "available": reason is None,
                "reason": reason or "",
            }
        )
    emit(
        rows,
        fmt,
        [
            "name",
            "version",
            "dimension",
            "sample_rate",
            "window_s",
            "hop_s",
            "text",
            "classes",
            "available",
            "reason",
        ],
    )


# ------------------------------------------------------------------------------ recordings
@cli.group()
def recordings() -> None:
    """Stored recordings."""


@recordings.command("list")
@click.option("-s", "--sensor", help="Only this sensor's recordings.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N rows.")
@database_option
@format_options
def recordings_list(sensor: str | None, limit: int | None, database: str | None, fmt: str) -> None:
    """List recordings with sensor, start, duration and spaces."""
    from soundscape.stats import RECORDING_COLUMNS, list_recordings

    with open_db(database).engine.connect() as conn:
        rows = list_recordings(conn, sensor=sensor, limit=limit)
    emit(rows, fmt, RECORDING_COLUMNS)


# ---------------------------------------------------------------------------------- stats
STATS_COLUMNS = [
    "sensors", "recordings", "audio_hours", "unresolved_errors", "database_size",
    "database_bytes",
]  # fmt: skip


@cli.command()
@database_option
@format_options
def stats(database: str | None, fmt: str) -> None:
    """Recordings, hours of audio, windows per space and database size.

    --json prints one object with the spaces in it; --csv one row of totals (the spaces, one
    row each: `soundscape spaces list --csv`).
    """
    from soundscape.stats import database_stats

    with open_db(database).engine.connect() as conn:
        info = database_stats(conn)
    if fmt == "json":
        emit([info], fmt, [*STATS_COLUMNS, "spaces"])
        return
    if fmt == "csv":
        emit([info], fmt, STATS_COLUMNS)
        return
    click.echo(f"sensors      {info['sensors']}")
    click.echo(f"recordings   {info['recordings']}")
    click.echo(f"audio hours  {info['audio_hours']:.3f}")
    click.echo(f"failed files {info['unresolved_errors']} (see ingest_errors)")
    click.echo(f"database     {info['database_size']}")
    if info["spaces"]:
        click.echo("")
        emit(info["spaces"], "table", SPACE_COLUMNS)


# ---------------------------------------------------------------------------------- errors
@cli.group()
def errors() -> None:
    """Files that failed to ingest (the ranger.ingest_errors view)."""


@errors.command("list")
@click.option("--unresolved", is_flag=True, help="Only failures no later ingest resolved.")
@click.option("--since", metavar="WHEN", help="Only failures since 24h, 7d, a date or a time.")
@click.option("-s", "--sensor", help="Only this sensor's failures.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N rows.")
@database_option
@format_options
def errors_list(unresolved, since, sensor, limit, database, fmt) -> None:
    """Failed files, newest first, one row per file (its latest failure; attempts: how many
    times it failed): path, sensor, reason, and when (or whether) it was resolved.

    A failure is resolved when the same file is later stored. Fix the file (or its sensor, or
    install the model) and run the same ingest again.
    """
    from soundscape.failures import LIST_COLUMNS, list_errors, parse_since

    since_at = parse_since(since) if since else None
    with open_db(database).engine.connect() as conn:
        rows = list_errors(conn, unresolved=unresolved, since=since_at, sensor=sensor, limit=limit)
    if not rows:
        echo_err("no unresolved errors" if unresolved else "no errors")
    columns = LIST_COLUMNS if fmt != "table" else LIST_COLUMNS[:8]
    emit(rows, fmt, columns)


# ---------------------------------------------------------------------------------- spaces
SPACE_COLUMNS = [
    "space", "model", "dimension", "window_s", "hop_s", "recordings", "segments", "index_type",
    "index_size", "recall_at_10", "recall_guard",
]  # fmt: skip


@cli.group()
def spaces() -> None:
    """Embedding spaces (one per model configuration) and their HNSW indexes."""


@spaces.command("list")
@database_option
@format_options
def spaces_list(database: str | None, fmt: str) -> None:
    """Every space with its windows and the type and size of its HNSW index."""
    from soundscape.stats import space_summaries

    with open_db(database).engine.connect() as conn:
        emit(space_summaries(conn), fmt, SPACE_COLUMNS)


@spaces.command("index")
@click.argument("space_name", metavar="SPACE")
@click.option(
    "--type",
    "index_type",
    type=click.Choice(["halfvec", "vector", "pca", "bit"]),
    help="halfvec: float16, the default of new spaces (a third of the size; recall and speed "
    "in docs/benchmarks.md); vector: float32; pca: the projection on the space's 32 "
    "principal axes, float16 (a tenth of halfvec; candidates re-ranked in float32, so scores "
    "stay exact; slower than halfvec); bit: the signs around the space's mean, 512 bits for "
    "1024-d (as small as pca, but its recall drops past ~100k windows: docs/benchmarks.md). "
    "Default: keep the current type (a rebuild, e.g. with the current build parameters; a "
    "compact index also recomputes its centre and axes).",
)
@click.option(
    "--memory",
    default=None,
    metavar="SIZE",
    help="maintenance_work_mem for the build, e.g. 4GB; the build is much faster when the "
    "index fits (about 2.7 kB per window for halfvec, 8 kB for vector, 0.27 kB for pca or bit at "
    "1024-d).",
)
@click.option(
    "--drop",
    is_flag=True,
    help="Drop the index instead (before a large backfill: the database writes windows ~60x "
    "faster without it; searches scan exactly until the index is rebuilt).",
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Measure the new index's recall against exact answers afterwards (`spaces check`).",
)
@database_option
def spaces_index(
    space_name: str,
    index_type: str | None,
    memory: str | None,
    drop: bool,
    check: bool,
    database: str | None,
) -> None:
    """Rebuild the HNSW index of SPACE: float32 (vector), float16 (halfvec), or compact (pca, bit).

    New spaces are indexed as halfvec; without --type the rebuild keeps the space's current
    type (what an earlier --type chose), so `spaces index SPACE` never undoes that choice.

    Only the index changes (embeddings stay float32), so this can be undone at any time.
    Searches go on with the old index while the new one builds; ingest into the space waits.
    """
    from soundscape.spaces import (
        drop_hnsw_index,
        get_space,
        index_caution,
        set_build_memory,
        set_index_type,
    )

    if drop and (index_type or memory):
        raise click.UsageError("--drop takes neither --type nor --memory")
    with open_db(database).engine.begin() as conn:
        space = get_space(conn, space_name)
        if drop:
            drop_hnsw_index(conn, space)
            echo_err(
                f"dropped the HNSW index of {space.name}; rebuild it with "
                f"`soundscape spaces index {space.name}`"
            )
            return
        if memory:
            set_build_memory(conn, memory)
        kept = index_type is None
        index_type = index_type or space.index_type
        caution = index_caution(conn, space, index_type)
        if caution:
            echo_err(f"note: {caution}")
        if kept:  # a bare rebuild keeps what was chosen (new spaces start as halfvec)
            echo_err(
                f"rebuilding the {index_type} HNSW index of {space.name} (its current type; "
                "--type halfvec|vector|pca|bit to change it) ..."
            )
        else:
            echo_err(f"building the {index_type} HNSW index of {space.name} ...")
        space, seconds = set_index_type(conn, space, index_type)
    echo_err(f"done in {seconds:.1f} s")
    if check:
        _check_recall(database, space.name)


def _check_recall(database: str | None, space_name: str) -> None:
    """Measure a space's index (soundscape.recall) and say what its guard does."""
    from soundscape.recall import check_space, exact_reason
    from soundscape.spaces import get_space

    with open_db(database).engine.begin() as conn:
        space = get_space(conn, space_name)
        reason = exact_reason(conn, space)
        if reason:  # auto never uses this index: nothing to guard
            echo_err(f"{reason}; `soundscape spaces check {space.name}` measures the index anyway")
            return
        echo_err(f"measuring the recall of {space.name}'s index against exact answers ...")
        result = check_space(conn, space)
    echo_err(result.summary())


@spaces.command("check")
@click.argument("space_name", metavar="SPACE")
@click.option(
    "--queries",
    type=click.IntRange(5, 1000),
    default=None,
    help="Queries to measure with (default 60): stored windows (half of them the most "
    "distinct of a sample) and the space's concepts.",
)
@database_option
@format_options
def spaces_check(space_name: str, queries: int | None, database: str | None, fmt: str) -> None:
    """Measure recall@10 of SPACE's HNSW index against exact answers, and store it.

    When the index finds less than 95 % of the exact top 10 on average, less than 80 % in its
    worst tenth of queries, or less than 80 % for any one query, auto search in this space then uses the smallest ef_search
    that measured well (or scans exactly) until a later check measures well again; searches
    say so on stderr. Runs by itself after `spaces index` and when a space has grown by a
    quarter since its last check (at the end of ingest and in workers).
    """
    from soundscape.recall import DEFAULT_QUERIES, check_space
    from soundscape.spaces import get_space

    with open_db(database).engine.begin() as conn:
        space = get_space(conn, space_name)
        result = check_space(conn, space, queries=queries or DEFAULT_QUERIES)
    echo_err(result.summary())
    row = {
        k: getattr(result, k)
        for k in (
            "space", "index_type", "n_windows", "n_queries", "k", "ef_search", "recall",
            "recall_worst_decile", "recall_min", "guard", "guard_ef", "guard_recall",
            "guard_worst_decile", "seconds",
        )
    }  # fmt: skip
    emit([row], fmt, list(row))


# ---------------------------------------------------------------------------------- labels
@cli.group()
def labels() -> None:
    """Class labels of classifier models (BirdNET)."""


@labels.command("top")
@click.option("--space", "space_name", help="Space to read (default: the first with classes).")
@filter_options
@click.option(
    "--min-score",
    type=Number(0, 1),
    default=0.5,
    show_default=True,
    help="Count windows whose class score is at least this.",
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@all_species_option
@database_option
@format_options
def labels_top(
    space_name, filters, min_score, limit,
    all_species, database, fmt,
) -> None:  # fmt: skip
    """The classes detected most often in stored windows (filters as search)."""
    from soundscape.spaces import pick_space
    from soundscape.species import top_labels

    filters = filters.build()
    with open_db(database).engine.connect() as conn:
        space = pick_space(conn, space_name, purpose="labels")
        rows = top_labels(
            conn, space, filters, min_score=min_score, limit=limit, all_species=all_species
        )
    echo_err(f"space {space.name}: classes with score >= {min_score:g}")
    emit(rows, fmt, ["common", "scientific", "windows", "recordings", "best_score"])
