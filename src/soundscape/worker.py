"""Ingestion workers on the ``jobs`` queue, their heartbeat, and the folder watcher.

A worker process loops: claim a job (``soundscape.jobs.claim``: SKIP LOCKED, priority order),
ingest its file with ``Ingestor.ingest_file`` (one transaction), record the outcome. Workers on
several machines share nothing but the database.

**Lease and heartbeat.** A claim holds the job until ``locked_until``. A background thread, on
its own connection, extends the lease every ``lease / 3``. If the worker dies (SIGKILL, power
loss, network partition) the lease runs out and any worker claims the job again; the dead
worker's ingest transaction was rolled back by the server, so nothing of it remains.

**No double commit of a stolen job.** A worker that is merely slow (stalled, paused, cut off
from the database longer than the lease) can find its job claimed by another worker when it
comes back. Each claim is fenced by ``(locked_by, attempts)``; ``attempts`` grows with every
claim. The worker marks the job ``done`` *inside its ingest transaction*, just before COMMIT
(a SQLAlchemy ``commit`` event on the ingest engine runs the fenced UPDATE on the same
connection). If the job is no longer held by this claim, the UPDATE matches no row, the hook
raises ``LeaseLost`` and the whole transaction (recording, windows, scores) rolls back. If it
matches, the row lock it takes keeps any other worker from claiming the job (their claim skips
locked rows) until the data and the ``done`` mark are committed together. So the recording is
committed by exactly one claim, and a job is never ``done`` without its data. A heartbeat that
finds the job taken sets a flag, and the worker abandons the file at its next batch instead of
finishing work that would be rolled back anyway.

**Failures.** A bad file (``AudioError``: empty, truncated, not audio, unsupported, missing,
extreme sample values; an ``OSError`` reading it; a PostgreSQL data exception, class 22, which
the same file would raise again) is a permanent failure: the job is ``failed`` at once and the file
is noted in ``ingest_errors`` (retrying a corrupt file is pointless; fix it, then
``soundscape jobs retry ID``). Any other exception (database or connection errors, a model
that cannot load here, a sensor removed since) is retried: the job goes back to ``queued``
with ``run_after = now() + min(cap, base * 2**attempts)``, until ``max_attempts`` attempts,
then it is ``failed`` with the last error. A job whose worker died counts the lost attempt.
An ingest whose connection failed (``ConnectionLost``) or whose write the server refused
(``ServerRefused``: a full disk, a lock timeout) is *interrupted* (``jobs.interrupt``): retried
with its reason after ``min(5 min, base * 2**interruptions)`` without using up an attempt.
When the queue does not answer either, the worker waits for the database and records the
interruption then (unless another worker has claimed the job meanwhile: that claim sees the
server's restart and does not count the attempt either).

**Shutdown.** SIGTERM or SIGINT: the worker stops claiming, abandons the current file at its
next batch (the ingest transaction rolls back; a file that finishes first is kept), releases
the job (``queued`` again, the attempt not counted) and exits. A second signal interrupts at
once (the transaction still rolls back and the job is still released).
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from soundscape import jobs
from soundscape.audio import is_supported
from soundscape.db import make_engine, raw_connection
from soundscape.errors import AudioError, ConnectionLost, ServerRefused
from soundscape.ingest import FileResult, Ingestor, describe_counts, interruption
from soundscape.recall import check_grown

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The job was claimed by another worker (this one's lease had expired): do not commit."""


class Abandoned(Exception):
    """The worker is shutting down: the current file is given up and its job released."""


def is_permanent(exc: BaseException | None) -> bool:
    """True for failures of the file itself (retrying cannot help); see the module doc.
    PostgreSQL's data exceptions (class 22, e.g. a value a column refuses) are deterministic
    for the same file, so they fail at once too."""
    if isinstance(exc, sa.exc.DBAPIError):
        exc = exc.orig
    return isinstance(exc, AudioError | OSError | psycopg.DataError)


@dataclass
class WorkerOptions:
    lease_s: float = 60.0
    poll_s: float = 5.0
    #: overrides each job's own max_attempts when set
    max_attempts: int | None = None
    backoff_s: float = jobs.DEFAULT_BACKOFF_S
    backoff_cap_s: float = jobs.BACKOFF_CAP_S
    #: exit when nothing is runnable instead of polling
    once: bool = False
    quiet: bool = False


@dataclass
class WorkerStats:
    done: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    lost: int = 0

    def line(self) -> str:
        return ", ".join(f"{v} {k}" for k, v in vars(self).items())


@dataclass
class _Armed:
    """The claim whose ingest transaction is in progress on the ingest engine."""

    fence: jobs.Fence
    committed: bool = False


class _Heartbeat:
    """Extends a job's lease every ``lease / 3`` on its own connection until stopped."""

    def __init__(self, engine: Engine, fence: jobs.Fence, lease_s: float) -> None:
        self.engine = engine
        self.fence = fence
        self.lease_s = lease_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-job-{fence.job_id}", daemon=True
        )

    def start(self) -> _Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        interval = max(self.lease_s / 3.0, 0.05)
        while not self._stop.wait(interval):
            try:
                with self.engine.begin() as conn:
                    held = jobs.extend_lease(conn, self.fence, self.lease_s)
            except Exception as exc:  # noqa: BLE001 - keep trying while the lease lasts
                log.warning("heartbeat of job %s failed: %s", self.fence.job_id, exc)
                continue
            if not held:
                if not self._stop.is_set():
                    self.lost.set()
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _engine(url: str, identity: str, pool_size: int) -> Engine:
    return make_engine(  # with soundscape's rule on passwords (db.auth_options)
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=1,
        connect_args={"application_name": f"soundscape-worker {identity}"[:63]},
    )


def _say_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Claims:
    """The worker's side of the queue, on its own engine: claiming jobs, giving them back,
    and the worker's lines on stderr."""

    def __init__(
        self, engine: Engine, identity: str, options: WorkerOptions, report: Callable[[str], None]
    ) -> None:
        self.engine = engine
        self.identity = identity
        self.options = options
        self.report = report
        self.stats = WorkerStats()

    def say(self, message: str) -> None:
        if not self.options.quiet:
            self.report(f"worker {self.identity}: {message}")

    def claim_next(self) -> jobs.Job | None:
        """Claim the next runnable job; jobs already past their attempts are failed here."""
        while True:
            with self.engine.begin() as conn:
                job = jobs.claim(conn, self.identity, self.options.lease_s)
            if job is None:
                return None
            limit = self.options.max_attempts or job.max_attempts
            if job.counted <= limit:
                return job
            # Only a job whose worker died (lease expired) or whose limit was lowered.
            error = f"gave up after {job.counted - 1} attempt(s); last: {job.last_error}"
            with self.engine.begin() as conn:
                jobs.fail(conn, jobs.Fence.of(job), error, retry_in=None)
            self.stats.failed += 1
            self.say(f"job {job.id} failed: {error}")

    def release(self, fence: jobs.Fence) -> str:
        """Give a claimed job back (``queued``, the attempt not counted)."""
        try:
            with self.engine.begin() as conn:
                jobs.release(conn, fence)
        except sa.exc.SQLAlchemyError as exc:  # the lease will expire instead
            log.warning("could not release job %s: %s", fence.job_id, exc)
        self.stats.released += 1
        self.say(f"job {fence.job_id} released (back to queued)")
        return "released"


class _Outcomes(_Claims):
    """Recording how a claimed job ended (module doc, **Failures**): done; failed for good or
    retried with backoff; interrupted by an outage (not an attempt); taken over (lost)."""

    def __init__(
        self, engine: Engine, identity: str, options: WorkerOptions, report: Callable[[str], None]
    ) -> None:
        super().__init__(engine, identity, options, report)
        #: a claim an outage interrupted while the queue did not answer either: recorded
        #: (``jobs.interrupt``) once it answers again
        self.interrupted: tuple[jobs.Job, jobs.Fence, str] | None = None

    def done(
        self, job: jobs.Job, fence: jobs.Fence, result: FileResult, committed: bool, took: float
    ) -> str:
        with self.engine.begin() as conn:
            if not committed:  # defensive: ingest committed nothing we saw
                jobs.mark_done(raw_connection(conn), fence)
            jobs.set_result(conn, fence, result.as_dict())
        self.stats.done += 1
        what = describe_counts(result.segments) if result.status == "stored" else result.reason
        if result.resumed:
            what += f"; {result.resumed} resumed from an interrupted ingest"
        self.say(f"job {job.id} done in {took:.1f} s: {job.path} ({result.status}: {what})")
        return "done"

    def failed(
        self,
        job: jobs.Job,
        fence: jobs.Fence,
        exc: BaseException | None,
        reason: str,
        result: FileResult | None = None,
        digest: str | None = None,
    ) -> str:
        if isinstance(exc, LeaseLost):
            self.stats.lost += 1
            self.say(f"job {job.id}: {exc}; left to its new worker")
            return "lost"
        if isinstance(exc, Abandoned):
            return self.release(fence)
        as_dict = result.as_dict() if result is not None else None
        limit = self.options.max_attempts or job.max_attempts
        if is_permanent(exc):
            retry_in, error = None, reason
        elif job.counted >= limit:
            retry_in, error = None, f"gave up after {job.counted} attempt(s): {reason}"
        else:
            retry_in = jobs.backoff_delay(
                job.counted, self.options.backoff_s, self.options.backoff_cap_s
            )
            error = reason
        with self.engine.begin() as conn:
            status = jobs.fail(conn, fence, error, retry_in=retry_in, result=as_dict, sha256=digest)
        if status is None:
            self.stats.lost += 1
            self.say(f"job {job.id} failed ({reason}) but was taken over by another worker")
            return "lost"
        if status == "queued":
            self.stats.retried += 1
            self.say(f"job {job.id} will be retried in {retry_in:.0f} s: {reason}")
            return "retry"
        self.stats.failed += 1
        self.say(f"job {job.id} failed: {error}")
        return "failed"


class _Interruptions(_Outcomes):
    """Claims an outage interrupted (``ConnectionLost``, ``ServerRefused``): recorded with
    ``jobs.interrupt`` now, or once the queue answers again."""

    def interrupt(self, job: jobs.Job, fence: jobs.Fence, reason: str) -> str:
        """Nothing of the file was stored, and it is not the file's fault."""
        self.interrupted = (job, fence, reason)
        try:
            return self.record_interruption()
        except sa.exc.SQLAlchemyError:
            raise ConnectionLost(reason) from None  # the loop waits for the database

    def record_interruption(self) -> str:
        """Record the pending interrupted claim (``jobs.interrupt``); raises SQLAlchemyError
        (and keeps it pending) while the queue does not answer."""
        if self.interrupted is None:
            return "retry"
        job, fence, reason = self.interrupted
        retry_in = min(
            jobs.backoff_delay(
                job.interruptions, self.options.backoff_s, self.options.backoff_cap_s
            ),
            jobs.INTERRUPTED_CAP_S,
        )
        with self.engine.begin() as conn:
            status = jobs.interrupt(conn, fence, reason, retry_in=retry_in)
        self.interrupted = None
        if status is None:
            self.stats.lost += 1
            self.say(f"job {job.id} interrupted ({reason}); already claimed again")
            return "lost"
        if status == "queued":
            self.stats.retried += 1
            self.say(f"job {job.id} interrupted, tried again in {retry_in:.0f} s: {reason}")
            return "retry"
        self.stats.failed += 1
        self.say(f"job {job.id} failed: interrupted too often; last: {reason}")
        return "failed"


class _Ingestors:
    """One ingestor per job configuration on the ingest engine, one model instance per model
    in this process, whatever the sensor or window (weights load lazily, on first use)."""

    def __init__(self, engine: Engine, side_engine: Engine) -> None:
        self.engine = engine
        self.side_engine = side_engine
        self._by_config: dict[jobs.JobConfig, Ingestor] = {}
        self._models: dict[tuple[str, str], Any] = {}

    def get(self, config: jobs.JobConfig) -> Ingestor:
        ingestor = self._by_config.get(config)
        if ingestor is not None:
            ingestor.refresh_sensor()
            return ingestor
        ingestor = Ingestor(
            self.engine,
            config.sensor,
            list(config.models),
            window_s=config.window_s,
            hop_s=config.hop_s,
            replace=config.replace,
            record_errors=False,  # a failure is recorded once, when the job fails for good
            allow_gaps=True,  # checked when the job was queued (jobs.validate)
        )
        ingestor.side_engine = self.side_engine
        # the new ingestor's own model instances are never loaded (lazy weights)
        for target in ingestor.spaces:
            key = (target.space.model, json.dumps(target.space.params, sort_keys=True))
            target.model = self._models.setdefault(key, target.model)
        self._by_config[config] = ingestor
        return ingestor


class _Processing:
    """Ingesting one claimed job under its lease: a heartbeat extends it, a check after every
    batch abandons the file when the lease is lost or the worker stops, and the commit fence
    marks the job done inside the ingest transaction (module doc)."""

    def __init__(
        self, url: str, identity: str, queue: _Interruptions, stopping: Callable[[], bool]
    ) -> None:
        self.queue = queue
        self.stopping = stopping
        self.ingest_engine = _engine(url, identity, 1)
        self.heartbeat_engine = _engine(url, identity, 1)
        # checkpoints of a file commit beside its transaction: never on the ingest engine,
        # where every commit is the job's fenced "done" (a checkpoint there marked the job
        # done and lost the file: found by the hour-long soak)
        self.side_engine = _engine(url, identity, 1)
        event.listen(self.ingest_engine, "commit", self._on_commit)
        self.ingestors = _Ingestors(self.ingest_engine, self.side_engine)
        self._armed: _Armed | None = None

    def _on_commit(self, conn: Any) -> None:
        """Before the ingest transaction commits: mark the job done, fenced (module doc)."""
        armed = self._armed
        if armed is None or armed.committed:
            return
        if not jobs.mark_done(raw_connection(conn), armed.fence):
            raise LeaseLost(
                f"job {armed.fence.job_id} was taken over by another worker "
                "(this worker's lease expired); its transaction is rolled back"
            )
        armed.committed = True

    def process(self, job: jobs.Job) -> str:
        """Ingest one claimed job; returns done | failed | retry | released | lost."""
        fence = jobs.Fence.of(job)
        if self.stopping():
            return self.queue.release(fence)
        started = time.monotonic()
        heartbeat = _Heartbeat(self.heartbeat_engine, fence, self.queue.options.lease_s).start()
        armed = _Armed(fence)
        try:
            outcome = self._ingest(job, armed, heartbeat)
        except (KeyboardInterrupt, SystemExit):
            # A second signal (KeyboardInterrupt) or SystemExit: the ingest transaction has
            # rolled back; give the job back before leaving.
            if not armed.committed:
                self.queue.release(fence)
            raise
        finally:
            heartbeat.stop()
        if isinstance(outcome, str):
            return outcome
        if isinstance(outcome, (ConnectionLost, ServerRefused)):
            # The ingest's connection failed, or the server refused a write (a full disk, a
            # lock timeout): nothing of the file was stored, and it is not the file's fault.
            return self.queue.interrupt(job, fence, str(outcome))
        took = time.monotonic() - started
        if outcome.status != "failed":
            return self.queue.done(job, fence, outcome, armed.committed, took)
        return self.queue.failed(
            job, fence, outcome.exception, outcome.reason, outcome, outcome.sha256
        )

    def _ingest(
        self, job: jobs.Job, armed: _Armed, heartbeat: _Heartbeat
    ) -> FileResult | ConnectionLost | ServerRefused | str:
        """The job's file through its ingestor, armed with the fence and the batch check: the
        result, the outage that interrupted it, or (set-up failed) the recorded outcome."""

        def check() -> None:
            if heartbeat.lost.is_set():
                raise LeaseLost(f"job {job.id} was taken over by another worker")
            if self.stopping():
                raise Abandoned(f"job {job.id} abandoned: the worker is stopping")

        try:
            ingestor = self.ingestors.get(job.config)
        except Exception as exc:  # noqa: BLE001 - set-up problems are retried
            # an outage at set-up (the server, or a Citus worker node, went away; a refused
            # write) is an interruption like one while storing, not the job's attempt
            if isinstance(exc, (sa.exc.DBAPIError, psycopg.Error)):
                outage = interruption(exc, Path(job.path))
                if outage is not None:
                    return outage
            return self.queue.failed(job, armed.fence, exc, f"cannot start the ingest: {exc}")
        self._armed, ingestor.on_batch = armed, check
        try:
            return ingestor.ingest_file(Path(job.path))
        except (ConnectionLost, ServerRefused) as exc:
            return exc
        finally:
            self._armed, ingestor.on_batch = None, None

    def close(self) -> None:
        for engine in (self.ingest_engine, self.heartbeat_engine, self.side_engine):
            engine.dispose()


class Worker:
    """One worker: the loop over claims (``run``), with its queue side (``_Interruptions``:
    claims and outcomes) and its ingest side (``_Processing``), each on its own engine."""

    def __init__(
        self,
        url: str,
        options: WorkerOptions | None = None,
        *,
        identity: str | None = None,
        parent_pid: int | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options or WorkerOptions()
        self.identity = identity or jobs.worker_identity()
        self.parent_pid = parent_pid
        self.queue = _Interruptions(
            _engine(url, self.identity, 1), self.identity, self.options, report or _say_stderr
        )
        self.processing = _Processing(url, self.identity, self.queue, self.stopping)
        self._stop_signal: int | None = None
        self._wake = threading.Event()
        #: jobs were processed since the queue last ran dry (then the spaces they grew are due
        #: for a recall check: ``_check_recall``)
        self._worked = False

    @property
    def stats(self) -> WorkerStats:
        return self.queue.stats

    def claim_next(self) -> jobs.Job | None:
        return self.queue.claim_next()

    def process(self, job: jobs.Job) -> str:
        return self.processing.process(job)

    def _ingestor(self, config: jobs.JobConfig) -> Ingestor:
        return self.processing.ingestors.get(config)

    # -- stopping ---------------------------------------------------------------------------
    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
        self._wake.set()

    def stopping(self) -> bool:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self.request_stop()  # the --concurrency parent is gone
        return self._stop_signal is not None

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None:
            raise KeyboardInterrupt  # second signal: stop now
        self.request_stop(signum)

    # -- the loop ---------------------------------------------------------------------------
    def run(self, *, install_signals: bool = True) -> int:
        """Process jobs until stopped (or, with ``once``, until nothing is runnable).

        Exit code: 0; 130 after SIGINT; 1 with ``once`` if a job failed for good or the
        database could not be reached.
        """
        previous: dict[signal.Signals, Any] = {}
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        interrupted = broken = False
        try:
            while not self.stopping():
                step = self._step()
                if step == "job":
                    continue
                if self.options.once:
                    broken = step == "down"
                    break
                self._wake.wait(self.options.poll_s)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        self.queue.say(f"exiting: {self.stats.line()}")
        if interrupted or self._stop_signal == signal.SIGINT:
            return 130
        if broken or (self.options.once and self.stats.failed):
            return 1
        return 0

    def _step(self) -> str:
        """One turn of the loop: ``job`` (one processed: go on at once), ``idle`` (none
        runnable; the recall check is done when jobs were) or ``down`` (the database is
        unreachable: a job in progress is rolled back and its lease will expire)."""
        try:
            self.queue.record_interruption()
            job = self.claim_next()
            if job is not None:
                self.process(job)
                self._worked = True
                return "job"
            if self._worked:
                self._worked = False
                self._check_recall()
            return "idle"
        except (sa.exc.SQLAlchemyError, ConnectionLost) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            self.queue.report(f"worker {self.identity}: database error: {reason}")
            return "down"

    def _check_recall(self) -> None:
        """The queue ran dry: measure the index of each space that grew enough since its last
        recall check (soundscape.recall; off the ingest path, one worker per space)."""
        for result in check_grown(self.queue.engine):  # not the ingest engine: fenced commits
            self.queue.say(f"index recall measured: {result.summary()}")

    def close(self) -> None:
        self.queue.engine.dispose()
        self.processing.close()


# ------------------------------------------------------------------------ several


def _child(url: str, options: WorkerOptions, log_level: int, parent_pid: int) -> None:
    """Entry point of a ``--concurrency`` worker process (spawned)."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the parent only, which forwards it once
    logging.basicConfig(
        level=log_level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    sys.exit(Worker(url, options, parent_pid=parent_pid).run())


def run_workers(url: str, options: WorkerOptions, concurrency: int = 1) -> int:
    """Run ``concurrency`` workers (spawned processes when more than one); exit code as
    ``Worker.run``: 130 if interrupted, else 1 if any worker failed, else 0."""
    if concurrency <= 1:
        return Worker(url, options).run()
    ctx = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    procs = [
        ctx.Process(
            target=_child,
            args=(url, options, level, os.getpid()),
            name=f"soundscape-worker-{i + 1}",
        )
        for i in range(concurrency)
    ]
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [p.exitcode for p in procs]
    if signal.SIGINT in received or 130 in codes:
        return 130
    return 0 if all(c == 0 for c in codes) else 1


# ------------------------------------------------------------------------- watch


@dataclass(frozen=True)
class Seen:
    """A file as last observed: its size and mtime, since when they have not changed, and
    whether it has been queued in that state."""

    size: int
    mtime: int
    since: float
    queued: bool = False


def settle_scan(
    previous: Mapping[str, Seen],
    listing: Mapping[str, tuple[int, int]],
    now: float,
    settle_s: float,
) -> tuple[dict[str, Seen], list[str]]:
    """One scan of a watched folder (pure): the new state and the files ready to queue.

    ``listing`` maps each file to ``(size, mtime)``. A file is ready once the same size and
    mtime have been observed for at least ``settle_s`` (so a file still being copied, whose
    size or mtime keeps changing, waits), and it is returned once per such state: a file that
    changes after being queued becomes ready again when it has settled anew. Files that
    disappeared are forgotten.
    """
    state: dict[str, Seen] = {}
    ready: list[str] = []
    for path in sorted(listing):
        size, mtime = listing[path]
        seen = previous.get(path)
        if seen is None or (seen.size, seen.mtime) != (size, mtime):
            seen = Seen(size, mtime, now)
        if not seen.queued and now - seen.since >= settle_s:
            seen = replace(seen, queued=True)
            ready.append(path)
        state[path] = seen
    return state, ready


def list_audio_files(
    folder: str | Path,
    *,
    recursive: bool = False,
    stat: Callable[[str], os.stat_result] = os.stat,
) -> dict[str, tuple[int, int]]:
    """Supported audio files under ``folder`` (hidden names skipped) -> (size, mtime_ns)."""
    out: dict[str, tuple[int, int]] = {}
    root = os.path.abspath(folder)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in filenames:
            if name.startswith(".") or not is_supported(name):
                continue
            path = os.path.join(dirpath, name)
            try:
                st = stat(path)
            except FileNotFoundError:  # removed or renamed during the scan
                continue
            out[path] = (int(st.st_size), int(st.st_mtime_ns))
    return out


@dataclass
class Watcher:
    """Polls a folder; ``poll`` returns the files that have settled since the last poll."""

    folder: str | Path
    settle_s: float = 5.0
    recursive: bool = False
    clock: Callable[[], float] = time.monotonic
    stat: Callable[[str], os.stat_result] = os.stat
    state: dict[str, Seen] = field(default_factory=dict)

    def poll(self) -> list[str]:
        listing = list_audio_files(self.folder, recursive=self.recursive, stat=self.stat)
        self.state, ready = settle_scan(self.state, listing, self.clock(), self.settle_s)
        return ready

    def unmark(self, paths: list[str]) -> None:
        """Queueing failed: offer these files again at the next poll."""
        for p in paths:
            if p in self.state:
                self.state[p] = replace(self.state[p], queued=False)
