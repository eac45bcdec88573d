"""``soundscape import hoplite`` and ``soundscape export hoplite``: perch-hoplite databases in
and out (the work is in soundscape.hoplite). The ``import`` and ``export`` groups live here
until other formats join them."""

from __future__ import annotations

from pathlib import Path

import click

from soundscape.cli.base import (
    PathParam,
    cli,
    database_option,
    echo_err,
    format_options,
    open_db,
)
from soundscape.errors import BadOption
from soundscape.output import emit


@cli.group("import")
def import_group() -> None:
    """Bring other tools' databases into soundscape (no re-embedding)."""


@cli.group("export")
def export_group() -> None:
    """Write a space as another tool's database."""


def _sensor_map(values: tuple[str, ...]) -> dict[str | None, str]:
    out: dict[str | None, str] = {}
    for value in values:
        dep, sep, name = value.partition("=")
        key = dep.strip() if sep else None
        name = (name if sep else dep).strip()
        if not name or (sep and not key):
            raise BadOption(
                f"{value!r}: give a sensor name, or DEPLOYMENT=SENSOR for one deployment",
                "--sensor",
            )
        if key in out:
            raise BadOption(f"{value!r}: deployment given twice", "--sensor")
        out[key] = name
    return out


@import_group.command("hoplite")
@click.argument("db", type=PathParam(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-s",
    "--sensor",
    "sensors",
    multiple=True,
    metavar="[DEPLOYMENT=]SENSOR",
    help="Store the recordings on this existing sensor (repeat DEPLOYMENT=SENSOR to map each "
    "deployment). Default: a sensor named after each deployment, created with its place if "
    "missing.",
)
@click.option(
    "-m",
    "--model",
    help="The soundscape model that made the vectors (default: the one the database's "
    "model_config names; e.g. birdnet).",
)
@click.option(
    "--timezone",
    "tz",
    default="UTC",
    show_default=True,
    help="IANA timezone of sensors this import creates (local times of day follow it).",
)
@click.option(
    "--defer-index",
    is_flag=True,
    help="Drop the space's HNSW index first and build it once at the end: for a large import "
    "(many times faster; meanwhile searches of the space scan exactly).",
)
@database_option
@format_options
def import_hoplite(db: Path, sensors, model, tz, defer_index, database, fmt) -> None:
    """Import a perch-hoplite database (folder with hoplite.sqlite and usearch.index): its
    deployments, recordings, windows with their vectors, and annotations (source hoplite).

    The vectors go into the model's space for the database's window and hop (e.g.
    birdnet-w3-h3 for BirdNET-Analyzer's 3 s windows without overlap). One transaction per
    recording: an interrupted import resumes, and importing again adds nothing new (only
    annotations added in hoplite since).

    \b
    Examples:
      soundscape import hoplite ~/hoplite_db --model birdnet
      soundscape import hoplite ~/hoplite_db -s marsh=north-1 -s forest=south-1
      soundscape import hoplite ~/year_db -s north-1 --defer-index   # millions of windows
    """
    from soundscape import hoplite

    engine = open_db(database).engine

    def progress(s: hoplite.ImportSummary) -> None:
        done = s.recordings + s.skipped
        if done % 100 == 0:
            echo_err(f"{done} recording(s), {s.windows} window(s) so far")

    summary = hoplite.import_hoplite(
        engine,
        db,
        sensors=_sensor_map(sensors),
        model=model,
        timezone=tz,
        defer_index=defer_index,
        on_recording=progress,
    )
    for warning in summary.warnings:
        echo_err(f"warning: {warning}")
    created = (
        f"; new sensors: {', '.join(summary.sensors_created)}" if summary.sensors_created else ""
    )
    echo_err(
        f"{db}: {summary.recordings} recording(s) imported into space {summary.space} "
        f"({summary.windows} window(s), {summary.annotations} annotation(s)), "
        f"{summary.skipped} already there{created}"
    )
    emit([summary.as_row()], fmt)


@export_group.command("hoplite")
@click.argument("space")
@click.argument("db", type=PathParam(path_type=Path))
@click.option(
    "-s", "--sensor", "sensors", multiple=True, help="Only this sensor's windows (repeatable)."
)
@click.option(
    "--normalize",
    is_flag=True,
    help="Scale vectors to unit length, so that hoplite's inner-product search ranks as "
    "soundscape's cosine (default: the vectors as stored).",
)
@database_option
@format_options
def export_hoplite(space: str, db: Path, sensors, normalize, database, fmt) -> None:
    """Write SPACE as a new perch-hoplite database in the folder DB (which must not exist or
    be empty), for hoplite's API and Google's agile-modelling notebooks.

    Sensors become deployments (project: the site), windows keep their ids (hoplite window id
    = soundscape segment id) and get starts_at (UTC) and local_time columns; annotations keep
    their verdicts (label_type) and authors (provenance).

    \b
    Example:
      soundscape export hoplite birdnet ~/birdnet_hoplite
    """
    from soundscape import hoplite

    engine = open_db(database).engine
    summary = hoplite.export_hoplite(
        engine, space, db, normalize=normalize, sensors=list(sensors) or None
    )
    echo_err(
        f"{db}: {summary.windows} window(s) of {summary.recordings} recording(s) from "
        f"{summary.deployments} sensor(s), {summary.annotations} annotation(s)"
    )
    emit([summary.as_row()], fmt)
