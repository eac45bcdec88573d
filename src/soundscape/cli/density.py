"""``soundscape density``: call density, the fraction of windows that hold a call per site or
day, from a stratified random sample that reviewers judge (the library is soundscape.density)."""

from __future__ import annotations

from pathlib import Path

import click

from soundscape.cli.base import PathParam, cli, database_option, echo_err, format_options, open_db
from soundscape.cli.filters import filter_options
from soundscape.output import emit


@cli.group()
def density() -> None:
    """Call density: how often a call is heard, per site and day, with a 95% interval.

    \b
    1. `density sample NAME --classifier C --label L` (or --concept) draws a stratified random
       sample of windows by score bin and stores it;
    2. reviewers say yes / no on its windows: the review queue of the web page, or
       `density sample ... --out DIR` and `soundscape annotate import DIR/review.txt`;
    3. `density estimate NAME` gives the density per site (or day) with its interval.
    """


@density.command("sample")
@click.argument("name")
@click.option("--classifier", help="Sample by a classifier label's score (with --label).")
@click.option("--label", help="The classifier label.")
@click.option("--concept", help="Instead: sample by a stored concept's score.")
@click.option(
    "--per-bin",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Windows drawn per site and score bin.",
)
@click.option(
    "--quantiles",
    default="0,0.5,0.75,0.875,0.9375,1",
    show_default=True,
    help="Score quantiles that bound the bins (increasing, from 0 to 1).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random draw.")
@click.option("--replace", is_flag=True, help="Draw again over a sample with the same name.")
@click.option(
    "--out",
    "out_dir",
    type=PathParam(file_okay=False, path_type=Path),
    help="Also write the sample as a review batch (clips, spectrograms, review.txt) here.",
)
@filter_options
@database_option
@format_options
def density_sample(
    name, classifier, label, concept, per_bin, quantiles, seed, replace, out_dir, filters,
    database, fmt,
) -> None:  # fmt: skip
    """Draw and store sample NAME: PER_BIN random windows from each site and score bin of the
    windows that pass the filters (sites, dates, times of day).

    \b
    Examples:
      soundscape density sample wren-may --classifier wrens --label wren --from 2024-05-01
      soundscape density sample sirens --concept siren --per-bin 20 --out batch/
    """
    from soundscape import density as dn
    from soundscape import search as s

    if (classifier is None) == (concept is None):
        raise click.UsageError("give either --classifier NAME --label L or --concept NAME")
    if classifier is not None and label is None:
        raise click.UsageError("--classifier needs --label")
    if concept is not None and label is not None:
        raise click.UsageError("--label goes with --classifier")
    try:
        qs = [float(q) for q in quantiles.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"{quantiles}: numbers separated by commas", param_hint="--quantiles"
        ) from None
    filters = filters.build()
    with open_db(database).engine.begin() as conn:
        s.check_filter_names(conn, filters)
        row = dn.draw_sample(
            conn, name, classifier=classifier, label=label, concept=concept, filters=filters,
            per_bin=per_bin, seed=seed, quantiles=qs, replace=replace,
        )  # fmt: skip
        hits = dn.sample_windows(conn, name) if out_dir is not None else []
    if out_dir is not None:
        from soundscape import review as rv
        from soundscape.media_files import stored_files

        with open_db(database).engine.connect() as conn:
            stored = stored_files(conn, [h.recording_id for h in hits])
        batch = rv.write_batch(hits, out_dir, row["label"], "density", stored)
        for err in batch.errors:
            echo_err(f"warning: {err}")
        echo_err(
            f"review batch in {out_dir}: fill the Verdict column of {batch.table} (yes/no), "
            f"then `soundscape annotate import {batch.table}`"
        )
    echo_err(
        f"sample {name!r}: {row['sampled']} of {row['windows']} window(s) to review "
        f"(label {row['label']!r}); then `soundscape density estimate {name}`"
    )
    emit([row], fmt, dn.SAMPLE_COLUMNS)


@density.command("estimate")
@click.argument("name")
@click.option(
    "--by",
    type=click.Choice(["site", "day", "site_day", "all"], case_sensitive=False),
    default="site",
    show_default=True,
    help="One estimate per site, per day, per site and day, or one for all.",
)
@database_option
@format_options
def density_estimate(name, by, database, fmt) -> None:
    """The call density of sample NAME from its verdicts so far: the fraction of windows that
    hold the call, with a 95% interval (ranger.call_density; docs/review.md, "Call density")."""
    from soundscape import density as dn

    with open_db(database).engine.connect() as conn:
        rows = dn.estimate(conn, name, by.lower())
    reviewed = sum(r["reviewed"] for r in rows) if by.lower() in ("site", "all") else None
    if reviewed == 0:
        echo_err(f"no verdicts on sample {name!r} yet: every density below is a guess of 1/2")
    emit(rows, fmt, dn.ESTIMATE_COLUMNS)


@density.command("list")
@database_option
@format_options
def density_list(database, fmt) -> None:
    """List call-density samples: their label, windows and how many were drawn."""
    from soundscape import density as dn

    with open_db(database).engine.connect() as conn:
        rows = dn.list_samples(conn)
    emit(rows, fmt, dn.SAMPLE_COLUMNS)


@density.command("remove")
@click.argument("name")
@database_option
def density_remove(name, database) -> None:
    """Remove a call-density sample (the verdicts, which are annotations, stay)."""
    from soundscape import density as dn

    with open_db(database).engine.begin() as conn:
        dn.remove_sample(conn, name)
    echo_err(f"removed sample {name!r}")
