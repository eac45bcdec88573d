"""``soundscape enqueue | worker | watch | jobs ...``: ingestion through the job queue.

The commands are standalone click objects; ``register(cli)`` adds them to the main group
(idempotent).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from soundscape.cli.base import (
    SECONDS,
    Number,
    PathParam,
    database_option,
    echo_err,
    format_options,
    open_db,
    weights_option,
)
from soundscape.output import emit

_MODEL_HELP = "Model(s) to embed with; repeat or separate by commas (e.g. birdnet,spectral)."


def _config_options(f):
    """--sensor, --model, --window, --hop, --allow-gaps, --replace: what the queued jobs do."""
    for decorator in reversed(
        [
            click.option("-s", "--sensor", required=True, help="Sensor that made the recordings."),
            click.option(
                "-m",
                "--model",
                "model_opts",
                multiple=True,
                default=("birdnet",),
                show_default=True,
                help=_MODEL_HELP,
            ),
            click.option(
                "--window",
                type=SECONDS,
                help="Window length in seconds (default: the model's).",
            ),
            click.option(
                "--hop",
                type=SECONDS,
                help="Hop between window starts in seconds (default: the model's).",
            ),
            click.option(
                "--allow-gaps",
                is_flag=True,
                help="Accept a --hop longer than the window (the audio between windows is "
                "never embedded).",
            ),
            click.option("--replace", is_flag=True, help="Re-embed files already stored."),
            click.option(
                "--priority",
                type=int,
                default=0,
                show_default=True,
                help="Higher priorities are taken first.",
            ),
        ]
    ):
        f = decorator(f)
    return f


def _open_db_waiting(database: str | None, poll_s: float, what: str):
    """Open the database, waiting (a service) while it cannot be reached: a worker or watcher
    started during a restart or a crash recovery of the server would otherwise exit. Other
    problems (a schema to upgrade, a bad option) still stop the command at once."""
    import sqlalchemy as sa

    from soundscape.errors import DatabaseError

    said = False
    while True:
        try:
            return open_db(database)
        except DatabaseError as exc:
            if not isinstance(exc.__cause__, sa.exc.OperationalError):
                raise
            if not said:
                echo_err(f"{what}: {exc}; waiting for the database (Ctrl-C to stop)")
                said = True
            time.sleep(poll_s)


def _plan(
    conn, sensor: str, model_opts: tuple[str, ...], window, hop, allow_gaps: bool, replace: bool
):
    from soundscape import jobs

    models = [m for opt in model_opts for m in opt.split(",") if m.strip()]
    plan = jobs.validate(
        conn, sensor, models, window_s=window, hop_s=hop, replace=replace, allow_gaps=allow_gaps
    )
    for warning in plan.warnings:
        echo_err(f"warning: {warning}")
    return plan


# --------------------------------------------------------------------------------- enqueue
@click.command()
@click.argument("paths", nargs=-1, required=True, type=PathParam(path_type=Path))
@click.option("-r", "--recursive", is_flag=True, help="Descend into sub-folders.")
@_config_options
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Give up on a job after this many attempts.",
)
@click.option(
    "--check-stored/--no-check-stored",
    default=True,
    show_default=True,
    help="Hash each file and skip those already stored in all the requested spaces.",
)
@database_option
@format_options
def enqueue(
    paths,
    recursive,
    sensor,
    model_opts,
    window,
    hop,
    allow_gaps,
    replace,
    priority,
    max_attempts,
    check_stored,
    database,
    fmt,
) -> None:
    """Queue audio files or folders for `soundscape worker` (one job per file).

    A file already queued, running or done with the same sensor, models, window and hop is
    not queued again (unless --replace); a failed one is re-queued. Paths are stored as
    absolute paths: workers on other machines must see the files at the same path.
    """
    from soundscape import jobs
    from soundscape.ingest import collect_files

    existing = [p for p in paths if p.exists()]
    collected = collect_files(existing, recursive=recursive)
    files = [str(f) for f in collected.files]
    files += [str(p) for p in paths if not p.exists()]
    database_ = open_db(database)
    with database_.engine.connect() as conn:
        plan = _plan(conn, sensor, model_opts, window, hop, allow_gaps, replace)
    results = jobs.enqueue(
        database_.engine,
        plan,
        files,
        priority=priority,
        max_attempts=max_attempts,
        check_stored=check_stored,
    )
    results += [
        jobs.EnqueueResult(str(f), "skipped", reason=f"{f}: {why}") for f, why in collected.skipped
    ]
    counts = {s: sum(r.status == s for r in results) for s in ("queued", "skipped", "invalid")}
    for r in results:
        if r.status == "invalid":
            echo_err(f"invalid: {r.reason}")
    emit([r.as_dict() for r in results], fmt, ["job_id", "status", "path", "reason"])
    echo_err(
        f"queued {counts['queued']}, skipped {counts['skipped']}, invalid {counts['invalid']} "
        f"file(s) for {','.join(plan.config.models)} on {database_.safe_url}"
    )
    if counts["invalid"]:
        sys.exit(1)


# ---------------------------------------------------------------------------------- worker
@click.command()
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes to run (each with its own models and connections).",
)
@click.option("--once", is_flag=True, help="Exit when no job is runnable (for cron and tests).")
@click.option(
    "--lease",
    type=Number(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds a claimed job stays locked without a heartbeat (renewed every lease/3).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    help="Give up on a job after N attempts (default: the job's own, set at enqueue).",
)
@click.option(
    "--poll",
    type=Number(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds between looks at an empty queue.",
)
@click.option(
    "--backoff",
    type=Number(min=0),
    default=30.0,
    show_default=True,
    help="Retry delay base: a failed job waits base * 2^attempts seconds (at most 1 h).",
)
@click.option("-q", "--quiet", is_flag=True, help="No per-job messages.")
@weights_option
@database_option
def worker(concurrency, once, lease, max_attempts, poll, backoff, quiet, database) -> None:
    """Take jobs from the queue and ingest them, until stopped (or --once).

    Any number of workers, on any machines sharing the database, can run side by side. A bad
    file fails its job at once; other errors are retried with exponential backoff. SIGTERM or
    Ctrl-C abandons the current file (nothing of it is kept), puts its job back and exits.
    An unreachable database (at start or later) is waited for, except with --once.
    Exit code: 0; 1 with --once if a job failed; 130 after Ctrl-C.
    """
    from soundscape.worker import WorkerOptions, run_workers

    # --once (cron, tests) reports an unreachable database at once; a service waits for it
    database_ = open_db(database) if once else _open_db_waiting(database, poll, "worker")
    url = database_.url
    database_.engine.dispose()
    options = WorkerOptions(
        lease_s=lease,
        poll_s=poll,
        max_attempts=max_attempts,
        backoff_s=backoff,
        once=once,
        quiet=quiet,
    )
    if not quiet:
        echo_err(
            f"{concurrency} worker(s) on {database_.safe_url}"
            + (", until the queue is empty" if once else "; Ctrl-C to stop")
        )
    code = run_workers(url, options, concurrency)
    if code:
        sys.exit(code)


# ----------------------------------------------------------------------------------- watch
@click.command()
@click.argument(
    "folder", type=PathParam(exists=True, file_okay=False, path_type=Path), metavar="DIR"
)
@click.option("-r", "--recursive", is_flag=True, help="Watch sub-folders too.")
@_config_options
@click.option(
    "--interval",
    type=Number(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds between scans of the folder.",
)
@click.option(
    "--settle",
    type=Number(min=0),
    default=5.0,
    show_default=True,
    help="Queue a file once its size and mtime have not changed for this many seconds.",
)
@click.option("--scans", type=click.IntRange(min=1), help="Stop after N scans (default: never).")
@database_option
def watch(
    folder,
    recursive,
    sensor,
    model_opts,
    window,
    hop,
    allow_gaps,
    replace,
    priority,
    interval,
    settle,
    scans,
    database,
) -> None:
    """Queue new audio files as they appear in DIR (e.g. recorder cards copied into it).

    The folder is polled every --interval seconds; a file still being written (its size or
    mtime changing) is queued only after it has been stable for --settle seconds. Files
    already queued or stored are skipped. An unreachable database is waited for. Run
    `soundscape worker` to ingest them.
    """
    import sqlalchemy as sa

    from soundscape import jobs
    from soundscape.worker import Watcher

    database_ = _open_db_waiting(database, interval, "watch")
    with database_.engine.connect() as conn:
        plan = _plan(conn, sensor, model_opts, window, hop, allow_gaps, replace)
    echo_err(
        f"watching {folder} every {interval:g} s (settle {settle:g} s) for "
        f"{','.join(plan.config.models)}; Ctrl-C to stop"
    )
    watcher = Watcher(folder, settle_s=settle, recursive=recursive)
    done = 0
    try:
        while True:
            ready = watcher.poll()
            if ready:
                try:
                    results = jobs.enqueue(database_.engine, plan, ready, priority=priority)
                except sa.exc.SQLAlchemyError as exc:
                    echo_err(f"cannot queue {len(ready)} file(s), will try again: {exc}")
                    watcher.unmark(ready)
                else:
                    for r in results:
                        detail = f" ({r.reason})" if r.reason else ""
                        job = f" as job {r.job_id}" if r.status == "queued" else ""
                        echo_err(f"{r.status}{job}: {r.path}{detail}")
            done += 1
            if scans is not None and done >= scans:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        echo_err("stopped watching")
        sys.exit(130)


# ------------------------------------------------------------------------------------ jobs
@click.group("jobs")
def jobs_group() -> None:
    """Show and manage the ingestion job queue."""


_JOB_COLUMNS = [
    "id",
    "status",
    "path",
    "sensor",
    "models",
    "priority",
    "attempts",
    "max_attempts",
    "locked_by",
    "run_after",
    "started_at",
    "finished_at",
    "last_error",
]


@jobs_group.command("list")
@click.option("--status", type=click.Choice(["queued", "running", "done", "failed"]))
@click.option("--limit", type=click.IntRange(min=1), help="At most N jobs.")
@database_option
@format_options
def jobs_list(status, limit, database, fmt) -> None:
    """List jobs (oldest first) and a count per status."""
    from soundscape import jobs

    with open_db(database).engine.connect() as conn:
        rows = [j.as_dict() for j in jobs.list_jobs(conn, status, limit)]
        stats = jobs.job_stats(conn)
    emit(rows, fmt, _JOB_COLUMNS)
    echo_err(", ".join(f"{s['status']} {s['jobs']}" for s in stats))


@jobs_group.command("stats")
@database_option
@format_options
def jobs_stats(database, fmt) -> None:
    """Jobs per status: how many, how many can run now, oldest, last finished."""
    from soundscape import jobs

    with open_db(database).engine.connect() as conn:
        rows = jobs.job_stats(conn)
    emit(rows, fmt, ["status", "jobs", "runnable", "oldest", "last_finished"])


@jobs_group.command("retry")
@click.argument("ids", nargs=-1, type=click.IntRange(min=1), metavar="[ID]...")
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed job.")
@database_option
def jobs_retry(ids, all_failed, database) -> None:
    """Put jobs back in the queue (due now, attempts reset): the given IDs and/or --failed."""
    from soundscape import jobs

    if not ids and not all_failed:
        raise click.UsageError("name job IDs or use --failed")
    with open_db(database).engine.begin() as conn:
        requeued, problems = jobs.retry_jobs(conn, ids, failed=all_failed)
    for p in problems:
        echo_err(f"not retried: {p}")
    echo_err(f"re-queued {len(requeued)} job(s)")
    if problems:
        sys.exit(1)


@jobs_group.command("purge")
@click.option("--done", is_flag=True, help="Delete done jobs.")
@click.option("--failed", is_flag=True, help="Delete failed jobs.")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Delete all jobs, queued ones too (not those a live worker holds).",
)
@database_option
def jobs_purge(done, failed, everything, database) -> None:
    """Delete finished jobs from the queue (recordings are not touched)."""
    from soundscape import jobs

    if not (done or failed or everything):
        raise click.UsageError("choose what to delete: --done, --failed or --all")
    with open_db(database).engine.begin() as conn:
        n = jobs.purge_jobs(conn, done=done, failed=failed, everything=everything)
    echo_err(f"deleted {n} job(s)")


COMMANDS = (enqueue, worker, watch, jobs_group)


def register(group: click.Group) -> None:
    """Add the queue commands to ``group`` (the ``soundscape`` CLI); safe to call twice."""
    for command in COMMANDS:
        if command.name not in group.commands:
            group.add_command(command)
