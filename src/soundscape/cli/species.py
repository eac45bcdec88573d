"""``soundscape species daily``, ``soundscape labels threshold`` and ``soundscape labels
occurrence``: options in, rendered rows out; the work is in soundscape.species and
soundscape.occurrence."""

from __future__ import annotations

from datetime import date
from pathlib import Path

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
)
from soundscape.cli.catalog import labels
from soundscape.cli.filters import filter_options
from soundscape.output import emit


@labels.command("threshold")
@click.argument("label", required=False)
@click.argument("value", type=Number(), required=False)
@click.option("--space", "space_name", help="Space of the label (default: the first with classes).")
@click.option("--reset", is_flag=True, help="Back to the default threshold (0.5).")
@database_option
@format_options
def labels_threshold(label, value, space_name, reset, database, fmt) -> None:
    """Set the score LABEL needs to count as detected in `species daily` (default 0.5).

    \b
    Examples:
      soundscape labels threshold "Dark-eyed Junco" 0.7
      soundscape labels threshold "Dark-eyed Junco" --reset
      soundscape labels threshold            # the thresholds set so far
    """
    from soundscape import species

    if label is None:
        if reset or value is not None:
            raise click.UsageError("give the LABEL to set or --reset")
        with open_db(database).engine.connect() as conn:
            space = species.label_space(conn, space_name) if space_name else None
            rows = species.list_thresholds(conn, space)
        if not rows:
            echo_err(f"no thresholds set: every label counts from {species.DEFAULT_THRESHOLD}")
        emit(rows, fmt, ["space", "label", "scientific", "threshold", "updated_at"])
        return
    if (value is None) == (not reset):
        raise click.UsageError("give either a VALUE (0 < VALUE <= 1) or --reset")
    with open_db(database).engine.begin() as conn:
        space = species.label_space(conn, space_name)
        if reset:
            row = species.reset_threshold(conn, space, label)
        else:
            row = species.set_threshold(conn, space, label, value)
    emit([row], fmt, ["space", "label", "threshold"])


@labels.command("occurrence")
@click.option("--refresh", is_flag=True, help="Compute the lists of sensors that lack them.")
@click.option("--force", is_flag=True, help="With --refresh: recompute every sensor's lists.")
@click.option(
    "--threshold",
    type=Number(0, 1, min_open=True, max_open=True),
    help="With --refresh: occurrence probability a class needs (default 0.03, BirdNET's).",
)
@click.option("-s", "--sensor", "sensors", multiple=True, help="Only this sensor (repeatable).")
@click.option("--week", type=int, help="Show the list of this week (1-48, or -1: all year).")
@click.option("--date", "day", metavar="YYYY-MM-DD", help="Show the list of this date's week.")
@database_option
@format_options
def labels_occurrence(refresh, force, threshold, sensors, week, day, database, fmt) -> None:
    """BirdNET's location/season filter: the classes plausible at each sensor and week.

    Lists are computed from each sensor's latitude and longitude by BirdNET's occurrence
    model, for all 48 weeks at once, when the sensor gets coordinates (`sensors add`);
    --refresh computes them for sensors registered before. Label search, `labels top` and
    `species daily` leave out classes not on the list (--all-species keeps them).

    \b
    Examples:
      soundscape labels occurrence --refresh
      soundscape labels occurrence -s north-1 --date 2024-06-10
    """
    from soundscape import occurrence

    if (force or threshold is not None) and not refresh:
        raise click.UsageError("--force/--threshold go with --refresh")
    if refresh and (week is not None or day is not None):
        raise click.UsageError("--week/--date show a list; leave them out with --refresh")
    if week is not None and day is not None:
        raise click.UsageError("give --week or --date, not both")
    if day is not None:
        try:
            week = occurrence.birdnet_week(date.fromisoformat(day))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--date") from exc
    if refresh or week is None:
        with open_db(database).engine.begin() as conn:
            if refresh:
                results = occurrence.refresh_occurrence(
                    conn, list(sensors) or None, threshold=threshold, force=force
                )
            else:
                results = occurrence.sensor_status(conn, list(sensors) or None)
        emit(
            [r.as_row() for r in results],
            fmt,
            ["sensor", "latitude", "longitude", "status", "classes_per_week"],
        )
        return
    if len(sensors) != 1:
        raise click.UsageError("--week/--date show one sensor's list: give -s SENSOR")
    with open_db(database).engine.connect() as conn:
        rows = occurrence.stored_list(conn, sensors[0], occurrence.check_week(week))
    echo_err(f"sensor {sensors[0]}, BirdNET week {week}: {len(rows)} plausible classes")
    emit(rows, fmt, ["label", "scientific", "probability"])


@cli.group()
def species() -> None:
    """Species-level facts: which species were detected where and on which days."""


@species.command("daily")
@filter_options
@click.option("--label", "labels_", multiple=True, help="Only this label (repeatable).")
@click.option(
    "--source",
    type=click.Choice(["model", "classifier"], case_sensitive=False),
    help="Only a model's class scores or only classifier detections.",
)
@click.option("-n", "--limit", type=click.IntRange(min=1), help="At most this many rows.")
@all_species_option
@database_option
@format_options
def species_daily(
    filters, labels_, source, limit,
    all_species, database, fmt,
) -> None:  # fmt: skip
    """Per label, sensor and local date: detections, first and last local time, best score.

    A model's class (BirdNET) counts in a window whose score reaches the label's threshold
    (default 0.5; `soundscape labels threshold`); a trained classifier's stored detections
    count as they are (source classifier). The same rows: SELECT * FROM ranger.species_daily.

    \b
    Examples:
      soundscape species daily --site Marsh --from 2024-05-01 --to 2024-05-31
      soundscape species daily --label "Dark-eyed Junco" --csv
    """
    from soundscape import species as sp

    filters = filters.build()
    with open_db(database).engine.connect() as conn:
        rows = sp.species_daily(
            conn,
            filters,
            all_species=all_species,
            labels=list(labels_) or None,
            source=source.lower() if source else None,
            limit=limit,
        )
    if not rows:
        echo_err("no detections match")
    columns = list(sp.DAILY_COLUMNS)
    if all_species:
        columns.append("plausible")
    if fmt == "table":
        columns.remove("scientific")
    emit(rows, fmt, columns)


@species.command("list")
@click.option("--lat", type=Number(-90, 90), required=True, help="Latitude (decimal degrees).")
@click.option("--lon", type=Number(-180, 180), required=True, help="Longitude (decimal degrees).")
@click.option(
    "--week",
    type=int,
    default=-1,
    show_default=True,
    help="BirdNET week (1-48, four per month; -1: the whole year).",
)
@click.option("--date", "day", metavar="YYYY-MM-DD", help="Instead of --week: this date's week.")
@click.option(
    "--threshold",
    type=Number(0, 1, min_open=True, max_open=True),
    default=0.03,
    show_default=True,
    help="Occurrence probability a species needs (BirdNET-Analyzer's --sf_thresh).",
)
@click.option(
    "--sortby",
    type=click.Choice(["freq", "alpha"], case_sensitive=False),
    default="freq",
    show_default=True,
    help="Most likely first, or alphabetically.",
)
@click.option(
    "-o",
    "--output",
    type=PathParam(writable=True, path_type=Path),
    help="Also write BirdNET-Analyzer's species list file here (a folder: species_list.txt).",
)
@format_options
def species_list(lat, lon, week, day, threshold, sortby, output, fmt) -> None:
    """The species BirdNET's occurrence model expects at a place and week, like
    BirdNET-Analyzer's `species` command (the same model, threshold and file).

    \b
    Examples:
      soundscape species list --lat 42.48 --lon -76.45 --week 20
      soundscape species list --lat 52.5 --lon 13.4 --date 2024-06-10 -o species_list.txt
    """
    from soundscape import occurrence

    if day is not None:
        if week != -1:
            raise click.UsageError("give --week or --date, not both")
        try:
            week = occurrence.birdnet_week(date.fromisoformat(day))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--date") from exc
    if week != -1 and not 1 <= week <= 48:
        raise click.BadParameter("1..48 (four per month) or -1 (all year)", param_hint="--week")
    items = occurrence.species_list(lat, lon, week, threshold)
    sort = sortby.lower()
    if sort == "alpha":
        items.sort(key=lambda p: (p.scientific, p.common))
    echo_err(f"{lat:g}/{lon:g}, BirdNET week {week}: {len(items)} species at >= {threshold:g}")
    if output is not None:
        echo_err(f"wrote {occurrence.write_species_list(items, output, sort)}")
    emit([p.as_row() for p in items], fmt, ["scientific", "common", "probability", "label_id"])
