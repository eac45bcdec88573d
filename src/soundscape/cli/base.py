"""The ``soundscape`` command group and what its commands share (options, output, errors)."""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import click
import psycopg
import sqlalchemy as sa

from soundscape import __version__, cluster
from soundscape.errors import BadOption, SoundscapeError

DATABASE_ENV = "SOUNDSCAPE_DATABASE_URL"


def _printable(exc: BaseException) -> str:
    """An error's message with control characters escaped (names in it come from users)."""
    from soundscape.output import printable

    return printable(str(exc), keep="\n\t")


class _Group(click.Group):
    """Turns library errors (and file system errors naming a file) into clean ``Error: ...``
    messages with exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BadOption as exc:  # an option's value: a usage error (exit 2)
            raise click.BadParameter(_printable(exc), param_hint=exc.option) from exc
        except SoundscapeError as exc:
            raise click.ClickException(_printable(exc)) from exc
        except (sa.exc.DBAPIError, psycopg.Error) as exc:
            lost = cluster.node_error(exc)  # a Citus worker that went away mid-query
            if lost is None:
                raise
            raise click.ClickException(str(lost)) from exc
        except OSError as exc:
            # a file or folder the command was told to write or read (--export DIR, an output
            # file): say which and why, not a traceback
            if exc.filename is None:
                raise
            raise click.ClickException(f"{exc.filename}: {exc.strerror or exc}") from exc


class Number(click.FloatRange):
    """A finite number, optionally within a range (``Number(0, 1)``). click's ``float`` and
    ``FloatRange`` accept ``nan`` (no comparison fails for it) and ``inf``, which no option of
    soundscape means."""

    name = "number"

    def __init__(self, min: float | None = None, max: float | None = None, **kwargs: Any) -> None:
        super().__init__(min, max, **kwargs)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


#: the longest window or hop (s) an option takes: a day (a longer one is a typo, and 1e308
#: overflowed the database's real column with a traceback)
MAX_SECONDS = 86400.0

#: ``--window`` and ``--hop``: positive seconds, at most a day
SECONDS = Number(0, MAX_SECONDS, min_open=True)


class PathParam(click.Path):
    """``click.Path`` that refuses an empty value: ``Path('')`` is the current folder, so
    ``ingest ''`` ingested it, never what was meant."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail(
                "an empty path (it would mean the current folder); name a file or folder, "
                "e.g. '.' for this one",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


def database_option(f: Callable) -> Callable:
    return click.option(
        "-d",
        "--database",
        "database",
        envvar=DATABASE_ENV,
        metavar="URL",
        help=f"PostgreSQL URL (with pgvector); default: the embedded database. Env: {DATABASE_ENV}.",
    )(f)


def weights_option(f: Callable) -> Callable:
    """``--weights FILE`` for models with downloadable weights (CLAP)."""

    def remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value:
            os.environ["SOUNDSCAPE_CLAP_WEIGHTS"] = value

    return click.option(
        "--weights",
        type=PathParam(exists=True, dir_okay=False),
        expose_value=False,
        callback=remember,
        help="CLAP weights file (CLAP_weights_2023.pth). Env: SOUNDSCAPE_CLAP_WEIGHTS.",
    )(f)


def all_species_option(f: Callable) -> Callable:
    """``--all-species``: keep BirdNET classes unlikely at the sensor and week."""
    return click.option(
        "--all-species",
        is_flag=True,
        help="Keep BirdNET classes its occurrence model finds unlikely at the sensor's place "
        "and week (left out by default; sensors without coordinates are never filtered).",
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
    """A message on stderr, its control characters escaped (but newlines and tabs): messages
    quote names from the database and from files."""
    from soundscape.output import printable

    click.echo(printable(message, keep="\n\t"), err=True)


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


def main() -> None:
    cli(prog_name="soundscape")
