"""The ingestion job queue: a ``jobs`` table in the soundscape database, shared by workers.

Workers on any number of machines coordinate through this table only:

- **Claim.** ``claim`` takes the first runnable job (queued and due, or running with an
  expired lease because its worker died) in ``priority DESC, id`` order with
  ``UPDATE ... WHERE id = (SELECT id ... FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING ...``:
  concurrent claims never wait for each other and never get the same job.
- **Lease.** A claim sets ``locked_by`` (``hostname:pid``) and ``locked_until``; the worker's
  heartbeat extends ``locked_until``. A job whose lease has expired is claimable again.
- **Fence.** Every claim increments ``attempts``; ``(id, locked_by, attempts)`` identifies one
  claim (a :class:`Fence`). Completing, failing or releasing a job is an UPDATE conditioned on
  the fence, so a worker whose job was taken over by another can no longer change it. The
  worker marks a job done *inside* the ingest transaction (see ``soundscape.worker``), so a
  stolen job's data is never committed twice.
- **Retry.** A retryable failure puts the job back to ``queued`` with
  ``run_after = now() + min(cap, base * 2**attempts)``; after ``max_attempts`` it is
  ``failed``. A bad file is failed at once (see ``soundscape.worker`` for the rule).
- **Interruptions.** A claim that ended without a fault of the file's own is an
  *interruption*, not an attempt: the worker lost its connection, the server refused the write
  (full disk, lock timeout; :func:`interrupt`), or the database restarted under it (a lease
  whose last heartbeat is older than the server's start, seen at the next claim). The budget
  of ``max_attempts`` is charged ``attempts - interruptions`` (:func:`Job.counted`), so a
  long file outlives any outage; after ``MAX_INTERRUPTIONS`` it fails all the same, in case
  it is the file that brings the server down. A lease that expired while the server ran (the
  worker died: maybe of this file) counts as an attempt.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from soundscape.audio import is_supported
from soundscape.embedders import get_model_class
from soundscape.errors import SoundscapeError
from soundscape.media_files import sha256_file
from soundscape.sensors import get_sensor
from soundscape.spaces import resolve_window
from soundscape.transcribers import get_transcriber_class, is_transcriber

STATUSES = ("queued", "running", "done", "failed")
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BACKOFF_S = 30.0
BACKOFF_CAP_S = 3600.0
#: interruptions after which a job fails anyway (see the module doc)
MAX_INTERRUPTIONS = 50
#: the longest wait before a job interrupted by an outage is tried again
INTERRUPTED_CAP_S = 300.0

_COLUMNS = (
    "id, path, sensor, models, window_s, hop_s, replace, status, priority, attempts, "
    "interruptions, max_attempts, run_after, locked_by, locked_until, heartbeat_at, created_at, started_at, "
    "finished_at, last_error, result"
)

#: the claim: first runnable job in priority order, skipping rows other workers are claiming
_CLAIM = f"""
UPDATE jobs SET
    status = 'running',
    locked_by = :worker,
    locked_until = now() + make_interval(secs => :lease),
    heartbeat_at = now(),
    started_at = now(),
    finished_at = NULL,
    attempts = attempts + 1,
    interruptions = interruptions + CASE WHEN status = 'running'
        AND heartbeat_at < pg_postmaster_start_time() THEN 1 ELSE 0 END,
    last_error = CASE WHEN status = 'running'
        THEN 'lease of ' || locked_by || ' expired at ' || locked_until::text
            || CASE WHEN heartbeat_at < pg_postmaster_start_time()
                THEN ' (the database restarted under it)' ELSE '' END
        ELSE last_error END
WHERE id = (
    SELECT id FROM jobs
    WHERE status IN ('queued', 'running')
      AND ((status = 'queued' AND run_after <= now())
           OR (status = 'running' AND locked_until < now()))
    ORDER BY priority DESC, id
    FOR UPDATE SKIP LOCKED
    LIMIT 1
)
RETURNING {_COLUMNS}
"""

#: the condition that a job is still held by the claim a fence describes
_OWNED = "id = :id AND locked_by = :worker AND attempts = :attempt AND status = 'running'"


def worker_identity() -> str:
    """This process as recorded on the jobs it holds: ``hostname:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def backoff_delay(
    attempts: int, base_s: float = DEFAULT_BACKOFF_S, cap_s: float = BACKOFF_CAP_S
) -> float:
    """Seconds to wait before the next try of a job that has failed ``attempts`` times:
    ``base * 2**attempts``, at most ``cap_s``."""
    if base_s <= 0:
        return 0.0
    return float(min(cap_s, base_s * 2.0 ** min(max(attempts, 0), 62)))


@dataclass
class Job:
    id: int
    path: str
    sensor: str
    models: list[str]
    window_s: float | None
    hop_s: float | None
    replace: bool
    status: str
    priority: int
    attempts: int
    max_attempts: int
    interruptions: int = 0
    run_after: datetime | None = None
    locked_by: str | None = None
    locked_until: datetime | None = None
    heartbeat_at: datetime | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_error: str | None = None
    result: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        m = dict(row._mapping)
        m["models"] = list(m["models"] or [])
        return cls(**m)

    @property
    def counted(self) -> int:
        """Attempts charged to the file: claims less those an outage interrupted."""
        return self.attempts - self.interruptions

    @property
    def config(self) -> JobConfig:
        return JobConfig(self.sensor, tuple(self.models), self.window_s, self.hop_s, self.replace)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["models"] = ",".join(self.models)
        return d


@dataclass(frozen=True)
class Fence:
    """One claim of one job: only the holder of a matching claim may change the job."""

    job_id: int
    worker: str
    attempt: int

    @classmethod
    def of(cls, job: Job) -> Fence:
        assert job.locked_by is not None
        return cls(job.id, job.locked_by, job.attempts)

    def params(self) -> dict[str, Any]:
        return {"id": self.job_id, "worker": self.worker, "attempt": self.attempt}


@dataclass(frozen=True)
class JobConfig:
    """What to do with a file: sensor, models (sorted, lower case), window, hop, replace."""

    sensor: str
    models: tuple[str, ...]
    window_s: float | None = None
    hop_s: float | None = None
    replace: bool = False


# ------------------------------------------------------------------------- enqueue


@dataclass
class EnqueueResult:
    path: str
    status: str  # "queued" | "skipped" | "invalid"
    job_id: int | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _SpaceKey:
    model: str
    version: str
    window: float
    hop: float
    params: str


@dataclass
class Plan:
    """A validated configuration and what it writes (to recognise stored files): the spaces
    (None: a space that cannot be recognised from here) and the transcripts, as (model,
    version)."""

    config: JobConfig
    spaces: list[_SpaceKey | None] = field(default_factory=list)
    transcripts: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def validate(
    conn: Connection,
    sensor: str,
    models: Iterable[str],
    *,
    window_s: float | None = None,
    hop_s: float | None = None,
    replace: bool = False,
    allow_gaps: bool = False,
) -> Plan:
    """Check the sensor exists and every model is known and accepts the window and hop.

    Raises ``SoundscapeError`` with what to do. A model that cannot run on *this* machine is
    only a warning: workers elsewhere may have it.
    """
    get_sensor(conn, sensor)
    names = sorted({m.strip().lower() for m in models if m.strip()})
    if not names:
        raise SoundscapeError("no model given; use --model, e.g. --model birdnet")
    plan = Plan(JobConfig(sensor, tuple(names), window_s, hop_s, replace))
    for name in names:
        if is_transcriber(name):  # utterances, not a space: a transcript by this version
            said = get_transcriber_class(name)
            reason = said.unavailable_reason()
            if reason:
                plan.warnings.append(f"model {name!r} cannot run on this machine: {reason}")
            plan.transcripts.append((said.name, str(said.version)))
            continue
        cls = get_model_class(name)
        window, hop = resolve_window(cls, window_s, hop_s, allow_gaps=allow_gaps)
        reason = cls.unavailable_reason()
        if reason:
            plan.warnings.append(f"model {name!r} cannot run on this machine: {reason}")
            plan.spaces.append(None)
            continue
        try:
            params = cls().params
        except Exception:  # noqa: BLE001 - only used to recognise stored files
            plan.spaces.append(None)
            continue
        plan.spaces.append(
            _SpaceKey(name, str(cls.version), window, hop, json.dumps(params, sort_keys=True))
        )
    return plan


def _stored_recording(conn: Connection, plan: Plan, digest: str) -> int | None:
    """The recording with this SHA-256 if it is complete in every space of ``plan`` and has
    a transcript by each of its transcribers (same version)."""
    if any(k is None for k in plan.spaces):
        return None
    rec = conn.execute(
        sa.text("SELECT id FROM recordings WHERE sha256 = :h"), {"h": digest}
    ).scalar()
    if rec is None:
        return None
    for key in plan.spaces:
        assert key is not None
        found = conn.execute(
            sa.text(
                "SELECT 1 FROM recording_spaces rs JOIN spaces sp ON sp.id = rs.space_id "
                "WHERE rs.recording_id = :r AND sp.model = :model AND sp.model_version = :version "
                "AND sp.window_s = CAST(:window AS real) AND sp.hop_s = CAST(:hop AS real) "
                "AND sp.params = CAST(:params AS jsonb)"
            ),
            {"r": rec, **asdict(key)},
        ).fetchone()
        if found is None:
            return None
    for model, version in plan.transcripts:
        found = conn.execute(
            sa.text(
                "SELECT 1 FROM transcripts WHERE recording_id = :r AND model = :m "
                "AND model_version = :v"
            ),
            {"r": rec, "m": model, "v": version},
        ).fetchone()
        if found is None:
            return None
    return int(rec)


_SAME_CONFIG = (
    "path = :path AND sensor = :sensor AND models = CAST(:models AS text[]) "
    "AND window_s IS NOT DISTINCT FROM CAST(:window AS double precision) "
    "AND hop_s IS NOT DISTINCT FROM CAST(:hop AS double precision)"
)


def _existing(conn: Connection, path: str, config: JobConfig) -> tuple[Any, Any]:
    """(blocking job, failed job) with the same path and configuration, if any.

    Without ``replace`` a queued, running or done job blocks a new one; with ``replace`` only
    a queued replace job does (one not yet started will re-embed anyway).
    """
    params = {
        "path": path,
        "sensor": config.sensor,
        "models": list(config.models),
        "window": config.window_s,
        "hop": config.hop_s,
    }
    blocking = (
        "status = 'queued' AND replace"
        if config.replace
        else "status IN ('queued', 'running', 'done')"
    )
    block = conn.execute(
        sa.text(
            f"SELECT id, status FROM jobs WHERE {_SAME_CONFIG} AND {blocking} ORDER BY id LIMIT 1"
        ),
        params,
    ).fetchone()
    failed = conn.execute(
        sa.text(
            f"SELECT id FROM jobs WHERE {_SAME_CONFIG} AND status = 'failed' "
            "ORDER BY id DESC LIMIT 1"
        ),
        params,
    ).fetchone()
    return block, failed


def enqueue(
    engine: Engine,
    plan: Plan,
    files: Sequence[str | Path],
    *,
    priority: int = 0,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    check_stored: bool = True,
) -> list[EnqueueResult]:
    """Queue one job per file (absolute paths). Returns one result per file.

    A file with a queued, running or done job of the same path and configuration is skipped
    (unless ``replace``); a failed one is re-queued (attempts reset). With ``check_stored`` a
    file whose SHA-256 is already stored in all the plan's spaces, and transcribed by all its
    transcribers, is skipped as well.
    Concurrent enqueuers are serialised by an advisory lock, so a file is never queued twice.
    """
    config = plan.config
    # Read-only pass: cheap checks and hashing outside the locked transaction.
    with engine.connect() as conn:
        results = [_check_file(conn, plan, os.path.abspath(f), check_stored) for f in files]
    todo = [r for r in results if r.status == "queued"]
    if not todo:
        return results
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('soundscape.jobs.enqueue'))"))
        for r in todo:
            block, failed = _existing(conn, r.path, config)
            if block is not None:  # queued by someone else since the first pass
                dup = _duplicate(r.path, block)
                r.status, r.job_id, r.reason = dup.status, dup.job_id, dup.reason
            elif failed is not None:
                _requeue_failed(conn, int(failed.id), config, priority, max_attempts)
                r.job_id, r.reason = int(failed.id), "re-queued a failed job"
            else:
                r.job_id = _insert_job(conn, r.path, config, priority, max_attempts)
    return results


def _check_file(conn: Connection, plan: Plan, path: str, check_stored: bool) -> EnqueueResult:
    """The first, unlocked look at one file (an absolute path): ``invalid``, ``skipped``
    (already queued or stored), or ``queued`` (to insert under the lock)."""
    if not os.path.isfile(path):
        what = "not a regular file" if os.path.exists(path) else "no such file"
        return EnqueueResult(path, "invalid", reason=f"{path}: {what}")
    if not is_supported(path):
        return EnqueueResult(
            path, "invalid", reason=f"{path}: unsupported format (wav, flac, ogg, mp3)"
        )
    block, _ = _existing(conn, path, plan.config)
    if block is not None:
        return _duplicate(path, block)
    if check_stored and not plan.config.replace:
        try:
            rec = _stored_recording(conn, plan, sha256_file(Path(path)))
        except OSError as exc:
            return EnqueueResult(path, "invalid", reason=f"{path}: cannot read: {exc}")
        if rec is not None:
            return EnqueueResult(path, "skipped", reason=f"already stored (recording {rec})")
    return EnqueueResult(path, "queued")


def _requeue_failed(
    conn: Connection, job_id: int, config: JobConfig, priority: int, max_attempts: int
) -> None:
    """Put a failed job back in the queue with its attempts reset (under the enqueue lock)."""
    conn.execute(
        sa.text(
            "UPDATE jobs SET status = 'queued', attempts = 0, interruptions = 0, run_after = now(), "
            "priority = :priority, max_attempts = :max, replace = :replace, "
            "locked_until = NULL, finished_at = NULL WHERE id = :id"
        ),
        {
            "id": job_id,
            "priority": priority,
            "max": max_attempts,
            "replace": config.replace,
        },
    )


def _insert_job(
    conn: Connection, path: str, config: JobConfig, priority: int, max_attempts: int
) -> int | None:
    """Insert a new queued job (under the enqueue lock); its id."""
    return conn.execute(
        sa.text(
            "INSERT INTO jobs (path, sensor, models, window_s, hop_s, replace, "
            "priority, max_attempts) VALUES (:path, :sensor, CAST(:models AS text[]), "
            ":window, :hop, :replace, :priority, :max) RETURNING id"
        ),
        {
            "path": path,
            "sensor": config.sensor,
            "models": list(config.models),
            "window": config.window_s,
            "hop": config.hop_s,
            "replace": config.replace,
            "priority": priority,
            "max": max_attempts,
        },
    ).scalar()


def _duplicate(path: str, block: Any) -> EnqueueResult:
    return EnqueueResult(
        path, "skipped", int(block.id), f"already {block.status} as job {block.id}"
    )


# ------------------------------------------------------------------ worker side


def claim(conn: Connection, worker: str, lease_s: float) -> Job | None:
    """Claim the next runnable job for ``worker`` (commit ``conn`` to publish the claim)."""
    row = conn.execute(sa.text(_CLAIM), {"worker": worker, "lease": float(lease_s)}).fetchone()
    return Job.from_row(row) if row is not None else None


def extend_lease(conn: Connection, fence: Fence, lease_s: float) -> bool:
    """Heartbeat: push the lease ``lease_s`` into the future. False if the job is no longer
    held by this claim (another worker took it over, or it was purged)."""
    row = conn.execute(
        sa.text(
            "UPDATE jobs SET locked_until = now() + make_interval(secs => :lease), "
            f"heartbeat_at = now() WHERE {_OWNED} RETURNING id"
        ),
        {**fence.params(), "lease": float(lease_s)},
    ).fetchone()
    return row is not None


#: marks a job done; the worker runs it inside the ingest transaction, on its DBAPI connection
_COMPLETE = (
    "UPDATE jobs SET status = 'done', finished_at = now(), locked_until = NULL, "
    "heartbeat_at = now(), last_error = NULL "
    "WHERE id = %s AND locked_by = %s AND attempts = %s AND status = 'running' RETURNING id"
)


def mark_done(dbapi_conn: Any, fence: Fence) -> bool:
    """Mark the job done in the current transaction of a psycopg connection. False (nothing
    changed) if the job is no longer held by ``fence``."""
    cur = dbapi_conn.execute(_COMPLETE, (fence.job_id, fence.worker, fence.attempt))
    return cur.fetchone() is not None


def set_result(conn: Connection, fence: Fence, result: dict[str, Any]) -> None:
    """Attach the ingest result to a job this claim completed."""
    conn.execute(
        sa.text(
            "UPDATE jobs SET result = CAST(:r AS jsonb) WHERE id = :id AND locked_by = :worker "
            "AND attempts = :attempt"
        ),
        {**fence.params(), "r": json.dumps(result)},
    )


def fail(
    conn: Connection,
    fence: Fence,
    error: str,
    *,
    retry_in: float | None,
    result: dict[str, Any] | None = None,
    sha256: str | None = None,
) -> str | None:
    """Record a failed attempt: back to ``queued`` in ``retry_in`` seconds, or (``None``)
    ``failed`` for good, also noted in ``ingest_errors``. Returns the new status, or None
    when the job is no longer held by ``fence``."""
    params = {**fence.params(), "error": error, "r": json.dumps(result) if result else None}
    if retry_in is not None:
        row = conn.execute(
            sa.text(
                "UPDATE jobs SET status = 'queued', locked_until = NULL, last_error = :error, "
                "run_after = now() + make_interval(secs => :delay), "
                f"result = CAST(:r AS jsonb) WHERE {_OWNED} RETURNING id"
            ),
            {**params, "delay": float(retry_in)},
        ).fetchone()
        return "queued" if row else None
    row = conn.execute(
        sa.text(
            "UPDATE jobs SET status = 'failed', locked_until = NULL, finished_at = now(), "
            f"last_error = :error, result = CAST(:r AS jsonb) WHERE {_OWNED} "
            "RETURNING path, sensor, array_to_string(models, ',') AS models"
        ),
        params,
    ).fetchone()
    if row is None:
        return None
    conn.execute(
        sa.text(
            "INSERT INTO ingest_errors (path, sha256, sensor, models, error) "
            "VALUES (:p, :h, :s, :m, :e)"
        ),
        {"p": row.path, "h": sha256, "s": row.sensor, "m": row.models, "e": error},
    )
    return "failed"


def interrupt(conn: Connection, fence: Fence, error: str, *, retry_in: float) -> str | None:
    """Record an interrupted claim (lost connection, a write the server refused): back to
    ``queued`` in ``retry_in`` seconds without using up an attempt, or ``failed`` once it has
    been interrupted ``MAX_INTERRUPTIONS`` times. Returns the new status, or None when the job
    is no longer held by ``fence``."""
    row = conn.execute(
        sa.text(
            f"UPDATE jobs SET interruptions = interruptions + 1 WHERE {_OWNED} "
            "RETURNING interruptions"
        ),
        fence.params(),
    ).fetchone()
    if row is None:
        return None
    if row.interruptions >= MAX_INTERRUPTIONS:
        return fail(
            conn, fence, f"interrupted {row.interruptions} times; last: {error}", retry_in=None
        )
    return fail(conn, fence, error, retry_in=retry_in)


def release(conn: Connection, fence: Fence) -> bool:
    """Give a job back unfinished (worker shutting down): queued again, due now, and the
    abandoned attempt does not count."""
    row = conn.execute(
        sa.text(
            "UPDATE jobs SET status = 'queued', locked_until = NULL, run_after = now(), "
            f"attempts = GREATEST(attempts - 1, 0) WHERE {_OWNED} RETURNING id"
        ),
        fence.params(),
    ).fetchone()
    return row is not None


# -------------------------------------------------------------------- management


def _check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise SoundscapeError(f"unknown job status {status!r}; one of {', '.join(STATUSES)}")


def list_jobs(conn: Connection, status: str | None = None, limit: int | None = None) -> list[Job]:
    _check_status(status)
    sql = (
        f"SELECT {_COLUMNS} FROM jobs WHERE (CAST(:status AS text) IS NULL OR status = :status) "
        "ORDER BY id"
    )
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [Job.from_row(r) for r in conn.execute(sa.text(sql), {"status": status})]


def get_job(conn: Connection, job_id: int) -> Job | None:
    row = conn.execute(sa.text(f"SELECT {_COLUMNS} FROM jobs WHERE id = :id"), {"id": job_id})
    found = row.fetchone()
    return Job.from_row(found) if found is not None else None


def job_stats(conn: Connection) -> list[dict[str, Any]]:
    """One row per status: jobs, how many can run now, oldest creation, last finish."""
    rows = conn.execute(
        sa.text(
            "SELECT s.status, count(j.id) AS jobs, "
            "count(j.id) FILTER (WHERE (j.status = 'queued' AND j.run_after <= now()) "
            "OR (j.status = 'running' AND j.locked_until < now())) AS runnable, "
            "min(j.created_at) AS oldest, max(j.finished_at) AS last_finished "
            "FROM unnest(CAST(:statuses AS text[])) WITH ORDINALITY AS s(status, n) "
            "LEFT JOIN jobs j ON j.status = s.status GROUP BY s.status, s.n ORDER BY s.n"
        ),
        {"statuses": list(STATUSES)},
    )
    return [dict(r._mapping) for r in rows]


def retry_jobs(
    conn: Connection, ids: Sequence[int] = (), *, failed: bool = False
) -> tuple[list[int], list[str]]:
    """Put jobs back to ``queued`` (due now, attempts reset): the given ids and/or all failed
    ones. Returns (re-queued ids, problems such as unknown ids or jobs still running)."""
    problems: list[str] = []
    targets: set[int] = set()
    if failed:
        targets.update(
            conn.execute(sa.text("SELECT id FROM jobs WHERE status = 'failed'")).scalars()
        )
    for job_id in ids:
        row = conn.execute(
            sa.text("SELECT status, locked_until > now() AS live FROM jobs WHERE id = :id"),
            {"id": job_id},
        ).fetchone()
        if row is None:
            problems.append(f"no job {job_id}")
        elif row.status == "running" and row.live:
            problems.append(f"job {job_id} is running (its worker holds a live lease)")
        else:
            targets.add(job_id)
    if not targets:
        return [], problems
    done = conn.execute(
        sa.text(
            "UPDATE jobs SET status = 'queued', attempts = 0, interruptions = 0, run_after = now(), "
            "locked_until = NULL, finished_at = NULL WHERE id = ANY(:ids) RETURNING id"
        ),
        {"ids": sorted(targets)},
    ).scalars()
    return sorted(done), problems


def purge_jobs(
    conn: Connection, *, done: bool = False, failed: bool = False, everything: bool = False
) -> int:
    """Delete done and/or failed jobs, or (``everything``) all jobs except running ones whose
    worker still holds a live lease. Returns how many were deleted."""
    if everything:
        where = "NOT (status = 'running' AND locked_until > now())"
    else:
        statuses = [s for s, on in (("done", done), ("failed", failed)) if on]
        if not statuses:
            return 0
        where = "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"
    return int(conn.execute(sa.text(f"DELETE FROM jobs WHERE {where}")).rowcount or 0)
