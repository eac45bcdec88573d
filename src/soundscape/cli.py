"""The ``soundscape`` command line. Kept thin: each command parses options, calls the library
and renders the result. Data goes to stdout, progress and messages to stderr; errors exit 1,
usage errors 2."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from soundscape import __version__
from soundscape.errors import SoundscapeError
from soundscape.output import emit

DATABASE_ENV = "SOUNDSCAPE_DATABASE_URL"


class _Group(click.Group):
    """Turns library errors into clean ``Error: ...`` messages with exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SoundscapeError as exc:
            raise click.ClickException(str(exc)) from exc


def database_option(f: Callable) -> Callable:
    return click.option(
        "-d",
        "--database",
        "database",
        envvar=DATABASE_ENV,
        metavar="URL",
        help=f"PostgreSQL URL (with pgvector); default: the embedded database. Env: {DATABASE_ENV}.",
    )(f)


def format_options(f: Callable) -> Callable:
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    @click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row.")
    @functools.wraps(f)
    def wrapper(*args: Any, as_json: bool, as_csv: bool, **kwargs: Any) -> Any:
        if as_json and as_csv:
            raise click.UsageError("choose one of --json and --csv")
        kwargs["fmt"] = "json" if as_json else "csv" if as_csv else "table"
        return f(*args, **kwargs)

    return wrapper


def open_db(url: str | None):
    """Open the database (embedded by default) and close its engine when the command ends."""
    from soundscape.db import open_database

    db = open_database(url)
    click.get_current_context().call_on_close(db.engine.dispose)
    return db


def echo_err(message: str) -> None:
    click.echo(message, err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="soundscape")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """Make long audio searchable with SQL.

    Recordings are cut into overlapping windows, each window becomes a vector from an audio
    model, and the vectors are stored in PostgreSQL (pgvector) with sensor, place and time.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


# --------------------------------------------------------------------------------------- db
@cli.group()
def db() -> None:
    """Manage the database (the embedded server and schema migrations)."""


@db.command("status")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
def db_status(database: str | None, as_json: bool) -> None:
    """Show where the database is, whether it runs and its schema revision."""
    from soundscape import server
    from soundscape.db import current_revision, head_revision, make_engine, mask_url

    info: dict[str, Any] = {"embedded": database is None, "head_revision": head_revision()}
    if database is None:
        st = server.status()
        info.update(
            pgdata=str(st.pgdata), initialized=st.initialized, running=st.running, pid=st.pid
        )
        url = st.url()
    else:
        url = database
        info["running"] = None
    info["url"] = mask_url(url) if url else None
    info["revision"] = None
    if url:
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                info["revision"] = current_revision(conn)
                info["running"] = True
                info["size_bytes"] = conn.execute(
                    sa.text("SELECT pg_database_size(current_database())")
                ).scalar()
        except sa.exc.OperationalError as exc:
            info["running"] = False
            info["error"] = str(exc.orig).strip().splitlines()[0]
        finally:
            engine.dispose()
    info["up_to_date"] = info["revision"] == info["head_revision"]
    if as_json:
        click.echo(json.dumps(info))
        return
    for key, value in info.items():
        click.echo(f"{key:14} {'' if value is None else value}")


@db.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL server (and create/upgrade its schema)."""
    from soundscape.db import open_database

    database = open_database(None)
    database.engine.dispose()
    echo_err(f"embedded database running: {database.safe_url}")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL server."""
    from soundscape import server

    echo_err("stopped" if server.stop() else "the embedded database was not running")


@db.command("url")
@database_option
def db_url(database: str | None) -> None:
    """Print the database URL (password hidden), starting the embedded server if needed."""
    from soundscape import server
    from soundscape.db import mask_url

    click.echo(mask_url(database if database else server.ensure_running_url()))


@db.command("upgrade")
@database_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(database: str | None, revision: str) -> None:
    """Create or migrate the schema (CREATE EXTENSION vector, tables, indexes, views)."""
    from soundscape.db import current_revision, open_database, upgrade

    database_ = open_database(database, check=False)
    try:
        upgrade(database_.engine, revision)
        with database_.engine.connect() as conn:
            rev = current_revision(conn)
    finally:
        database_.engine.dispose()
    echo_err(f"{database_.safe_url} is at revision {rev}")


# --------------------------------------------------------------------------------- sensors
@cli.group()
def sensors() -> None:
    """Register recorders: site, quadrant, position and timezone."""


@sensors.command("add")
@click.argument("name")
@click.option("--site", help="Site name, e.g. 'North Marsh'.")
@click.option("--quadrant", help="Quadrant, e.g. 'N'.")
@click.option("--lat", type=click.FloatRange(-90, 90), help="Latitude (WGS84).")
@click.option("--lon", type=click.FloatRange(-180, 180), help="Longitude (WGS84).")
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
        meta = json.loads(metadata) if metadata else {}
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--metadata") from exc
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
    """Show each model: dimension, sample rate, window, hop, and whether it can run here."""
    from soundscape.embedders import get_model_class, model_names

    rows = []
    for name in model_names():
        try:
            cls = get_model_class(name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            rows.append({"name": name, "available": False, "reason": f"cannot load: {exc}"})
            continue
        reason = cls.unavailable_reason()
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


# ---------------------------------------------------------------------------------- ingest
@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-r", "--recursive", is_flag=True, help="Descend into sub-folders.")
@click.option("-s", "--sensor", required=True, help="Sensor that made the recordings.")
@click.option(
    "-m",
    "--model",
    "model_opts",
    multiple=True,
    default=("birdnet",),
    show_default=True,
    help="Model(s) to embed with; repeat or separate by commas (e.g. birdnet,spectral).",
)
@click.option(
    "--window",
    type=click.FloatRange(min=0, min_open=True),
    help="Window length in seconds (default: the model's).",
)
@click.option(
    "--hop",
    type=click.FloatRange(min=0, min_open=True),
    help="Hop between window starts in seconds (default: the model's).",
)
@click.option(
    "--start-time",
    help="Recording start, ISO 8601 (one file only; default: parsed from the file name).",
)
@click.option("--replace", is_flag=True, help="Re-embed files already stored.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first file that fails.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the per-file results and summary as JSON."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@database_option
def ingest(
    paths,
    recursive,
    sensor,
    model_opts,
    window,
    hop,
    start_time,
    replace,
    fail_fast,
    as_json,
    quiet,
    database,
) -> None:
    """Embed audio files (wav, flac, ogg, mp3) or folders of them into the database.

    Files already stored (same SHA-256) are skipped, so re-running resumes an interrupted
    ingest. Each file is stored in one transaction: nothing half-written is ever left behind.
    """
    from tqdm import tqdm

    from soundscape.audio import probe
    from soundscape.errors import AudioError
    from soundscape.ingest import Ingestor, collect_files
    from soundscape.timeutil import parse_iso_start

    models_ = [m for opt in model_opts for m in opt.split(",") if m.strip()]
    missing = [str(p) for p in paths if not p.exists()]
    files = collect_files([p for p in paths if p.exists()], recursive=recursive)
    start = None
    if start_time is not None:
        if len(files) + len(missing) != 1:
            raise click.UsageError("--start-time applies to a single file; name one file")
        try:
            start = parse_iso_start(start_time)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--start-time") from exc

    database_ = open_db(database)
    ingestor = Ingestor(
        database_.engine, sensor, models_, window_s=window, hop_s=hop, replace=replace
    )
    total = 0.0
    for f in files:
        with contextlib.suppress(AudioError):
            total += probe(f).duration_s
    echo_err(
        f"ingesting {len(files)} file(s), {total / 3600:.2f} h of audio, into "
        f"{ingestor.model_names} on {database_.safe_url}"
    )

    from soundscape.ingest import FileResult, Summary

    summary = Summary()
    bar = tqdm(
        total=round(total, 1),
        unit="s",
        unit_scale=True,
        desc="audio",
        file=sys.stderr,
        disable=quiet,
        dynamic_ncols=True,
        smoothing=0.1,
    )

    def report(r: FileResult) -> None:
        summary.add(r)
        if r.status == "failed":
            bar.write(f"failed: {r.reason}", file=sys.stderr)
        elif r.status == "skipped" and not quiet:
            bar.write(f"skipped: {r.path}: {r.reason}", file=sys.stderr)
        bar.set_postfix(stored=summary.stored, skipped=summary.skipped, failed=summary.failed)

    for m in missing:
        report(ingestor._failed(m, None, f"{m}: no such file or folder"))
    try:
        for f in files:
            r = ingestor.ingest_file(
                f, start_time=start, on_progress=lambda s: bar.update(round(s, 1))
            )
            report(r)
            if fail_fast and r.status == "failed":
                break
    except KeyboardInterrupt:
        bar.close()
        echo_err(
            f"interrupted: {summary.stored} file(s) stored; the file in progress was rolled "
            "back. Run the same command again to resume."
        )
        sys.exit(130)
    bar.close()
    s = summary.as_dict()
    echo_err(
        f"stored {s['stored']}, skipped {s['skipped']}, failed {s['failed']} file(s); "
        f"{s['audio_hours']:.3f} h of audio, {s['segments']} windows"
    )
    if as_json:
        click.echo(json.dumps({"summary": s, "files": [r.as_dict() for r in summary.results]}))
    if summary.failed:
        sys.exit(1)


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
    sql = (
        "SELECT recording_id AS id, sensor, site, quadrant, path, format, duration_s, "
        "started_local, spaces, n_segments FROM ranger.recordings "
        "WHERE (CAST(:sensor AS text) IS NULL OR sensor = :sensor) ORDER BY recording_id"
    )
    if limit:
        sql += f" LIMIT {int(limit)}"
    with open_db(database).engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text(sql), {"sensor": sensor})]
    emit(
        rows,
        fmt,
        [
            "id",
            "sensor",
            "site",
            "quadrant",
            "path",
            "format",
            "duration_s",
            "started_local",
            "spaces",
            "n_segments",
        ],
    )


# ---------------------------------------------------------------------------------- stats
@cli.command()
@database_option
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
def stats(database: str | None, as_json: bool) -> None:
    """Recordings, hours of audio, windows per space and database size."""
    from soundscape.stats import database_stats

    with open_db(database).engine.connect() as conn:
        info = database_stats(conn)
    if as_json:
        click.echo(json.dumps(info, default=str))
        return
    click.echo(f"sensors      {info['sensors']}")
    click.echo(f"recordings   {info['recordings']}")
    click.echo(f"audio hours  {info['audio_hours']:.3f}")
    click.echo(f"failed files {info['unresolved_errors']} (see ingest_errors)")
    click.echo(f"database     {info['database_size']}")
    if info["spaces"]:
        click.echo("")
        emit(
            info["spaces"],
            "table",
            ["space", "model", "dimension", "window_s", "hop_s", "recordings", "segments"],
        )


# ---------------------------------------------------------------------------------- labels
@cli.group()
def labels() -> None:
    """Class labels of classifier models (BirdNET)."""


@labels.command("top")
@click.option("--space", "space_name", help="Space to read (default: the first with classes).")
@click.option("-s", "--sensor", help="Only this sensor's recordings.")
@click.option(
    "--min-score",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Count windows whose class score is at least this.",
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@database_option
@format_options
def labels_top(space_name, sensor, min_score, limit, database, fmt) -> None:
    """The classes detected most often in stored windows."""
    from soundscape.spaces import get_space
    from soundscape.stats import top_labels

    with open_db(database).engine.connect() as conn:
        if not space_name:
            space_name = conn.execute(
                sa.text(
                    "SELECT name FROM spaces WHERE id = (SELECT min(space_id) FROM space_labels)"
                )
            ).scalar()
            if space_name is None:
                raise SoundscapeError(
                    "no space with class labels yet; ingest with --model birdnet first"
                )
        space = get_space(conn, space_name)
        rows = top_labels(conn, space.id, sensor=sensor, min_score=min_score, limit=limit)
    echo_err(f"space {space.name}: classes with score >= {min_score:g}")
    emit(rows, fmt, ["common", "scientific", "windows", "recordings", "best_score"])


def main() -> None:
    cli(prog_name="soundscape")
