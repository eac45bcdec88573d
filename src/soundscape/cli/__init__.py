"""The ``soundscape`` command line. Kept thin: each command parses options, calls the library
and renders the result. Data goes to stdout, progress and messages to stderr; errors exit 1,
usage errors 2. Commands live in modules by area and register themselves on ``cli``."""

from soundscape.cli import (  # noqa: F401  (register commands)
    analytics,
    annotate,
    catalog,
    db,
    density,
    hoplite,
    ingest,
    jobs,
    search,
    serve,
    speakers,
    species,
    speech,
    train,
)
from soundscape.cli.base import (
    cli,
    database_option,
    echo_err,
    format_options,
    main,
    open_db,
)

jobs.register(cli)

__all__ = ["cli", "database_option", "echo_err", "format_options", "main", "open_db"]
