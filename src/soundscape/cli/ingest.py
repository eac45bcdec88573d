"""``soundscape ingest``."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from tqdm import tqdm

from soundscape.cli.base import (
    SECONDS,
    PathParam,
    cli,
    database_option,
    echo_err,
    open_db,
    weights_option,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from soundscape.ingest import FileResult, Summary


class _Progress:
    """The audio bar of ingest and backfill, in seconds of audio.

    A file's audio counts as it is embedded, but its last 5 % only once the file is stored
    (committed): while the other models and the database write run, the bar says
    "finishing" and is not at 100 %. Files that are skipped or fail count as done, so the bar
    ends at 100 %. The bar is moved to exact sums of the files' durations, never past its
    total (no TqdmWarning, no negative time left).
    """

    HOLD = 0.05

    def __init__(self, total: float | None, quiet: bool) -> None:
        self.bar = tqdm(
            total=total,
            unit="s",
            unit_scale=True,
            desc="audio",
            file=sys.stderr,
            disable=quiet,
            dynamic_ncols=True,
            smoothing=0.1,
        )
        self.phase = "audio"
        self.done = 0.0  # the durations of the files finished
        self.duration = self.shown = self.embedded = 0.0  # the file in progress

    def set_total(self, total: float) -> None:
        self.bar.total = total
        self.bar.refresh()

    def start(self, duration: float) -> None:
        self.duration, self.shown, self.embedded = max(float(duration), 0.0), 0.0, 0.0

    def advance(self, seconds: float) -> None:
        self.embedded += seconds
        target = min(self.embedded, self.duration * (1 - self.HOLD))
        if target > self.shown:
            self.bar.update(target - self.shown)
            self.shown = target
        if self.embedded >= self.duration and self.phase != "finishing":
            self._phase("finishing")

    def finish(self) -> None:
        self.done += self.duration
        self.bar.update(self.done - self.bar.n)
        self.duration = self.shown = self.embedded = 0.0
        self._phase("audio")

    def _phase(self, name: str) -> None:
        self.phase = name
        self.bar.set_description_str(name)

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------------------- ingest
@cli.command()
@click.argument("paths", nargs=-1, required=True, type=PathParam(path_type=Path))
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
    type=SECONDS,
    help="Window length in seconds (default: the model's).",
)
@click.option(
    "--hop",
    type=SECONDS,
    help="Hop between window starts in seconds (default: the model's).",
)
@click.option(
    "--start-time",
    help="Recording start, ISO 8601 (one file only; default: the WAV's GUANO Timestamp, else "
    "parsed from the file name).",
)
@click.option(
    "--allow-gaps",
    is_flag=True,
    help="Accept a --hop longer than the window (the audio between windows is never embedded).",
)
@click.option("--replace", is_flag=True, help="Re-embed files already stored.")
@click.option(
    "--allow-truncated",
    is_flag=True,
    help="Store the decodable part of truncated files (with a warning; the recording's "
    "metadata says so) instead of failing them.",
)
@click.option("--fail-fast", is_flag=True, help="Stop at the first file that fails.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the per-file results and summary as JSON."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@weights_option
@database_option
def ingest(
    paths,
    recursive,
    sensor,
    model_opts,
    window,
    hop,
    allow_gaps,
    start_time,
    replace,
    allow_truncated,
    fail_fast,
    as_json,
    quiet,
    database,
) -> None:
    """Embed audio files (wav, flac, ogg, mp3) or folders of them into the database.

    Files already stored (same SHA-256) are skipped, so re-running resumes an interrupted
    ingest. Each file is stored in one transaction: nothing half-written is ever left behind.
    """
    from soundscape.ingest import Ingestor

    models_ = [m for opt in model_opts for m in opt.split(",") if m.strip()]
    inputs = _resolve_inputs(paths, recursive, start_time)
    database_ = open_db(database)
    ingestor = Ingestor(
        database_.engine,
        sensor,
        models_,
        window_s=window,
        hop_s=hop,
        allow_gaps=allow_gaps,
        replace=replace,
        allow_truncated=allow_truncated,
    )
    durations = _probe_durations(inputs.files)
    total = sum(durations.values())
    echo_err(
        f"ingesting {len(inputs.files)} file(s), {total / 3600:.2f} h of audio, into "
        f"{ingestor.model_names} on {database_.safe_url}"
    )

    from soundscape.ingest import FileResult, Summary

    summary = Summary()
    progress = _Progress(total, quiet)
    report = _reporter(summary, progress.bar, quiet)
    for m in inputs.missing:
        report(ingestor._failed(m, None, f"{m}: {inputs.loops.get(m, 'no such file or folder')}"))
    for f, why in inputs.skipped:
        report(FileResult(str(f), "skipped", reason=why))
    try:
        for f in inputs.files:
            progress.start(durations.get(f, 0.0))
            r = ingestor.ingest_file(f, start_time=inputs.start, on_progress=progress.advance)
            progress.finish()
            report(r)
            if fail_fast and r.status == "failed":
                break
    except KeyboardInterrupt:
        progress.close()
        echo_err(
            f"interrupted: {summary.stored} file(s) stored; the file in progress was rolled "
            "back. Run the same command again to resume."
        )
        sys.exit(130)
    progress.close()
    _finish(summary, database_.engine, as_json)


@dataclass
class _Inputs:
    """What the paths named on the command line turned out to be."""

    files: list[Path]  # the audio files to ingest
    missing: list[str]  # paths that do not exist
    loops: dict[str, str]  # of the missing, the broken links and why
    skipped: list[tuple[Path, str]]  # files found but not audio, and why
    start: datetime | None  # --start-time, parsed


def _resolve_inputs(paths: tuple[Path, ...], recursive: bool, start_time: str | None) -> _Inputs:
    """Collect the audio files under ``paths`` and check ``--start-time`` against them."""
    from soundscape.ingest import broken_link, collect_files
    from soundscape.timeutil import parse_iso_start

    missing = [str(p) for p in paths if not p.exists()]
    loops = {m: why for m in missing if (why := broken_link(Path(m)))}
    collected = collect_files([p for p in paths if p.exists()], recursive=recursive)
    files = collected.files
    start = None
    if start_time is not None:
        if len(files) + len(missing) != 1:
            raise click.UsageError("--start-time applies to a single file; name one file")
        try:
            start = parse_iso_start(start_time)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--start-time") from exc
    return _Inputs(files, missing, loops, collected.skipped, start)


def _probe_durations(files: list[Path]) -> dict[Path, float]:
    """Each readable file's duration in seconds (files that cannot be probed are left out)."""
    from soundscape.audio import probe
    from soundscape.errors import AudioError

    durations = {}
    for f in files:
        with contextlib.suppress(AudioError, OSError):
            durations[f] = probe(f).duration_s
    return durations


def _reporter(summary: Summary, bar: tqdm, quiet: bool) -> Callable[[FileResult], None]:
    """A callback that counts a file's result in ``summary`` and says it above the bar."""

    def report(r: FileResult) -> None:
        summary.add(r)
        if r.status == "failed":
            bar.write(f"failed: {r.reason}", file=sys.stderr)
        elif r.status == "skipped" and not quiet:
            bar.write(f"skipped: {r.path}: {r.reason}", file=sys.stderr)
        if r.warning:
            bar.write(f"warning: {r.path}: stored, but {r.warning}", file=sys.stderr)
        if r.resumed and not quiet:
            bar.write(
                f"resumed: {r.path}: {r.resumed} window(s) from an interrupted ingest",
                file=sys.stderr,
            )
        bar.set_postfix(stored=summary.stored, skipped=summary.skipped, failed=summary.failed)

    return report


def _finish(summary: Summary, engine: Engine, as_json: bool) -> None:
    """Print the summary, check the indexes that grew, and exit 1 if a file failed."""
    s = summary.as_dict()
    echo_err(
        f"stored {s['stored']}, skipped {s['skipped']}, failed {s['failed']} file(s); "
        f"{s['audio_hours']:.3f} h of audio, {summary.describe()}"
    )
    if summary.stored:
        _check_recall(engine)
    if as_json:
        click.echo(json.dumps({"summary": s, "files": [r.as_dict() for r in summary.results]}))
    if summary.failed:
        sys.exit(1)


def _check_recall(engine: Engine) -> None:
    """Measure the index of each space that grew enough since its last check (issue 22)."""
    from soundscape.recall import check_grown

    for result in check_grown(engine):
        echo_err(f"index recall measured: {result.summary()}")


@cli.command()
@click.option(
    "-m",
    "--model",
    "model_opts",
    multiple=True,
    required=True,
    help="Model(s) whose windows to add; repeat or separate by commas (e.g. clap).",
)
@click.option("--window", type=SECONDS, help="Window length (s).")
@click.option("--hop", type=SECONDS, help="Hop (s).")
@click.option(
    "--allow-gaps",
    is_flag=True,
    help="Accept a --hop longer than the window (the audio between windows is never embedded).",
)
@click.option("-s", "--sensor", "sensors", multiple=True, help="Only this sensor (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the results and summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@weights_option
@database_option
def backfill(model_opts, window, hop, allow_gaps, sensors, as_json, quiet, database) -> None:
    """Add a model's windows to recordings already stored (re-decoded from their path).

    This is how a database first filled with BirdNET gets CLAP. Files that moved or changed
    since ingest (SHA-256) are reported; re-running resumes where an interrupted run stopped.
    """
    from soundscape.ingest import backfill as run_backfill

    models_ = [m for opt in model_opts for m in opt.split(",") if m.strip()]
    database_ = open_db(database)
    progress = _Progress(None, quiet)
    bar = progress.bar
    pending: list[float] = []

    def plan(items) -> None:
        pending.extend(float(i.duration_s or 0.0) for i in items)
        progress.set_total(sum(pending))
        if pending:
            progress.start(pending.pop(0))

    def report(r) -> None:
        progress.finish()
        if pending:
            progress.start(pending.pop(0))
        if r.status == "failed":
            bar.write(f"failed: {r.reason}", file=sys.stderr)
        bar.set_postfix(done=r.recording_id)

    try:
        summary = run_backfill(
            database_.engine,
            models_,
            window_s=window,
            hop_s=hop,
            allow_gaps=allow_gaps,
            sensors=list(sensors) or None,
            on_plan=plan,
            on_result=report,
            on_progress=progress.advance,
        )
    except KeyboardInterrupt:
        progress.close()
        echo_err(
            "interrupted: the recording in progress was rolled back. Run the same "
            "command again to resume."
        )
        sys.exit(130)
    progress.close()
    s = summary.as_dict()
    echo_err(
        f"backfilled {s['stored']}, skipped {s['skipped']}, failed {s['failed']} "
        f"recording(s); {s['audio_hours']:.3f} h of audio, {summary.describe()}"
    )
    if summary.stored:
        _check_recall(database_.engine)
    if as_json:
        click.echo(json.dumps({"summary": s, "recordings": [r.as_dict() for r in summary.results]}))
    if summary.failed:
        sys.exit(1)
