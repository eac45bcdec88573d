"""The job queue: enqueue, claim (SKIP LOCKED), lease + heartbeat, fenced commit, retries,
workers in separate processes killed mid-job, and the folder watcher."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import sqlalchemy as sa

from soundscape import jobs
from soundscape.worker import (
    Seen,
    Watcher,
    Worker,
    WorkerOptions,
    _Heartbeat,
    is_permanent,
    list_audio_files,
    settle_scan,
)

# End-to-end: worker processes, leases and kills. `make test-fast` (-m "not slow") skips it.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "audio"
DATA = Path(__file__).resolve().parent / "data"
SOUNDSCAPE = EXAMPLES / "xc563936.mp3"
HOST = socket.gethostname()


ENTRY = "soundscape"


def scalar(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def job_row(engine, job_id: int):
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).one()


@pytest.fixture
def sensor(cli_env, run_cli):
    result = run_cli("sensors", "add", "north-1", "--timezone", "Europe/Berlin")
    assert result.exit_code == 0, result.output
    return "north-1"


_SOURCES = sorted(p for p in (*EXAMPLES.glob("*.ogg"), *DATA.glob("*.ogg")))


def make_clips(folder: Path, n: int, prefix: str = "clip") -> list[Path]:
    """``n`` real recordings (the example and test clips with a different gain and a little
    noise each, so every file has its own SHA-256), as FLAC."""
    folder.mkdir(parents=True, exist_ok=True)
    decoded = {}
    out = []
    for i in range(n):
        src = _SOURCES[i % len(_SOURCES)]
        if src not in decoded:
            decoded[src] = sf.read(src, dtype="float32", always_2d=True)
        audio, rate = decoded[src]
        rng = np.random.default_rng(i)
        mono = audio.mean(axis=1) * (0.5 + 0.02 * i) + rng.normal(0, 1e-3, len(audio))
        path = folder / f"{prefix}_{i:02d}_{src.stem}.flac"
        sf.write(path, np.clip(mono, -1, 1).astype(np.float32), rate)
        out.append(path)
    return out


def make_long(path: Path, repeats: int) -> Path:
    """The 72 s forest soundscape looped ``repeats`` times."""
    audio, rate = sf.read(SOUNDSCAPE, dtype="float32", always_2d=True)
    sf.write(path, np.tile(audio[:, 0], repeats), rate)
    return path


def expected_windows(duration: float, window: float = 3.0, hop: float = 2.0) -> int:
    n = 1
    while n * hop < duration and (n - 1) * hop + window < duration:
        n += 1
    return n


def start_worker(db_url: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "SOUNDSCAPE_DATABASE_URL": db_url}
    cmd = [sys.executable, "-m", ENTRY, "worker", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(predicate, timeout: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for p in procs:
            assert p.poll() is None, f"{what}: worker exited: {p.stderr.read().decode()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def copy_active(engine, pid: int) -> bool:
    return bool(
        scalar(
            engine,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY segments%' "
            "AND application_name = :app",
            app=f"soundscape-worker {HOST}:{pid}"[:63],
        )
    )


def enqueue(run_cli, *args) -> list[dict]:
    result = run_cli("enqueue", *args, "--json")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_stored_exactly_once(engine, files: list[Path]) -> None:
    """Every file stored once, complete in its space, and nothing partial or orphaned."""
    with engine.connect() as conn:
        q = lambda sql: conn.execute(sa.text(sql)).fetchall()  # noqa: E731
        paths = [r[0] for r in q("SELECT path FROM recordings ORDER BY path")]
        assert sorted(paths) == sorted(str(f.resolve()) for f in files)
        assert q("SELECT count(DISTINCT sha256) FROM recordings")[0][0] == len(files)
        assert q("SELECT count(*) FROM recording_spaces")[0][0] == len(files)
        # no recording without its space row (a partial recording), no orphan windows
        assert not q(
            "SELECT id FROM recordings r WHERE NOT EXISTS "
            "(SELECT 1 FROM recording_spaces rs WHERE rs.recording_id = r.id)"
        )
        assert not q(
            "SELECT g.id FROM segments g LEFT JOIN recordings r ON r.id = g.recording_id "
            "WHERE r.id IS NULL"
        )
        assert (
            q("SELECT count(*) FROM segments")[0][0]
            == q("SELECT sum(n_segments) FROM recording_spaces")[0][0]
        )
        mismatched = q(
            "SELECT rs.recording_id FROM recording_spaces rs LEFT JOIN "
            "(SELECT recording_id, space_id, count(*) AS n FROM segments "
            "GROUP BY recording_id, space_id) g USING (recording_id, space_id) "
            "WHERE g.n IS DISTINCT FROM rs.n_segments"
        )
        assert not mismatched
        assert q("SELECT count(*) FROM ingest_errors")[0][0] == 0


# ------------------------------------------------------------------ workers, end to end


def test_workers_share_the_queue_and_recover_a_killed_job(
    sensor, engine, db_url, run_cli, tmp_path
):
    """Three worker processes, ~30 real files; one worker is SIGKILLed in the middle of a
    long file. Every file ends up stored exactly once and the killed job is taken over by
    another worker after its lease expired."""
    card = tmp_path / "card"
    shorts = make_clips(card, 28)
    long_a = make_long(card / "long_a.flac", 5)  # 6 min: the job to kill
    long_b = make_long(card / "long_b.flac", 2)
    files = [*shorts, long_a, long_b]

    first = enqueue(run_cli, long_a, "-s", sensor, "-m", "spectral", "--priority", "10")
    killed_id = first[0]["job_id"]
    rest = enqueue(run_cli, card, "-s", sensor, "-m", "spectral")
    assert sum(r["status"] == "queued" for r in rest) == 29
    assert [r["reason"] for r in rest if r["status"] == "skipped"] == [
        f"already queued as job {killed_id}"
    ]

    opts = ("--lease", "3", "--poll", "0.2")
    w1 = start_worker(db_url, "--once", *opts)
    others: list[subprocess.Popen] = []
    try:
        me = f"{HOST}:{w1.pid}"
        wait_for(
            lambda: scalar(engine, "SELECT locked_by FROM jobs WHERE id = :i", i=killed_id) == me,
            60,
            "the first worker to claim the long file",
            [w1],
        )
        others = [start_worker(db_url, *opts) for _ in range(2)]  # polling workers
        wait_for(lambda: copy_active(engine, w1.pid), 60, "the long file's COPY", [w1])
        time.sleep(0.3)
        assert w1.poll() is None, "the long job finished before it could be killed"
        w1.send_signal(signal.SIGKILL)
        w1.wait()
        dead = job_row(engine, killed_id)
        assert (dead.status, dead.attempts, dead.locked_by) == ("running", 1, me)

        # The survivors empty the queue, then take the killed job over once its lease expired.
        wait_for(
            lambda: (
                scalar(engine, "SELECT count(*) FILTER (WHERE status <> 'done') FROM jobs") == 0
            ),
            120,
            "all jobs to be done",
            others,
        )
        for p in others:
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=30)
            assert p.returncode == 0, err.decode()
    finally:
        for p in (w1, *others):
            if p.poll() is None:
                p.kill()
                p.wait()

    job = job_row(engine, killed_id)
    assert job.status == "done" and job.attempts == 2
    assert job.locked_by != me and job.locked_by.startswith(f"{HOST}:")
    assert job.started_at >= dead.locked_until  # taken over only once the lease expired
    assert job.result["status"] == "stored"
    assert scalar(engine, "SELECT count(*) FROM jobs") == len(files)
    assert scalar(engine, "SELECT count(*) FROM jobs WHERE status = 'done'") == len(files)
    assert scalar(engine, "SELECT count(DISTINCT locked_by) FROM jobs") >= 2
    assert_stored_exactly_once(engine, files)
    n_long = scalar(
        engine,
        "SELECT n_segments FROM recording_spaces rs JOIN recordings r ON r.id = rs.recording_id "
        "WHERE r.path = :p",
        p=str(long_a.resolve()),
    )
    info = sf.info(str(long_a))
    assert n_long == expected_windows(info.frames / info.samplerate)


def test_concurrency_runs_worker_processes(sensor, engine, db_url, run_cli, tmp_path):
    files = make_clips(tmp_path / "card", 8)
    enqueue(run_cli, tmp_path / "card", "-s", sensor, "-m", "spectral")
    proc = start_worker(db_url, "--once", "--concurrency", "2", "--poll", "0.2")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    owners = set(scalar(engine, "SELECT array_agg(DISTINCT locked_by) FROM jobs"))
    assert owners and f"{HOST}:{proc.pid}" not in owners  # the children did the work
    assert_stored_exactly_once(engine, files)


def test_sigterm_abandons_the_file_and_releases_the_job(sensor, engine, db_url, run_cli, tmp_path):
    long = make_long(tmp_path / "long.flac", 5)
    job_id = enqueue(run_cli, long, "-s", sensor, "-m", "spectral")[0]["job_id"]
    proc = start_worker(db_url, "--poll", "0.2", "--lease", "30")
    try:
        wait_for(lambda: copy_active(engine, proc.pid), 60, "the COPY", [proc])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert b"released" in err
    job = job_row(engine, job_id)
    assert (job.status, job.attempts, job.locked_until) == ("queued", 0, None)
    assert scalar(engine, "SELECT count(*) FROM recordings") == 0
    assert scalar(engine, "SELECT count(*) FROM segments") == 0


# ---------------------------------------------------------------- claim, lease, fence


def _insert_job(conn, path: str, priority: int = 0, **extra) -> int:
    cols = {"path": path, "sensor": "north-1", "priority": priority, **extra}
    names = ", ".join(cols)
    values = ", ".join(f":{k}" for k in cols)
    return conn.execute(
        sa.text(
            f"INSERT INTO jobs (models, {names}) VALUES ('{{spectral}}', {values}) RETURNING id"
        ),
        cols,
    ).scalar()


def test_claim_order_skip_locked_and_expired_lease(engine):
    with engine.begin() as conn:
        low = _insert_job(conn, "/a/low.wav", 0)
        high = _insert_job(conn, "/a/high.wav", 5)
        high2 = _insert_job(conn, "/a/high2.wav", 5)
        _insert_job(conn, "/a/later.wav", 9)
        conn.execute(
            sa.text("UPDATE jobs SET run_after = now() + interval '1 hour' WHERE priority = 9")
        )

    c1, c2 = engine.connect(), engine.connect()
    try:
        c2.execute(sa.text("SET lock_timeout = '1s'"))  # a blocked claim would fail, not wait
        c2.commit()
        with c1.begin():
            j1 = jobs.claim(c1, "w1", 30)
            with c2.begin():  # while c1's claim is uncommitted, c2 skips its row
                j2 = jobs.claim(c2, "w2", 30)
        assert (j1.id, j2.id) == (high, high2)
        assert (j1.status, j1.attempts, j1.locked_by) == ("running", 1, "w1")
        with c2.begin():
            j3 = jobs.claim(c2, "w2", 30)
            assert j3.id == low
            assert jobs.claim(c2, "w2", 30) is None  # the delayed job is not due yet
    finally:
        c1.close()
        c2.close()

    # w1 dies: once its lease has expired, another worker takes the job over.
    with engine.begin() as conn:
        assert jobs.claim(conn, "w3", 30) is None
        conn.execute(
            sa.text("UPDATE jobs SET locked_until = now() - interval '1 s' WHERE id = :i"),
            {"i": high},
        )
        again = jobs.claim(conn, "w3", 30)
    assert (again.id, again.attempts, again.locked_by) == (high, 2, "w3")
    assert "lease of w1 expired" in again.last_error

    old, new = jobs.Fence(high, "w1", 1), jobs.Fence.of(again)
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert not jobs.extend_lease(conn, old, 30)
        assert not jobs.mark_done(raw, old)
        assert jobs.fail(conn, old, "late", retry_in=0) is None
        assert not jobs.release(conn, old)
        assert jobs.extend_lease(conn, new, 30)
        assert jobs.mark_done(raw, new)
    assert job_row(engine, high).status == "done"


def test_backoff_schedule():
    assert [jobs.backoff_delay(a, 30, 3600) for a in range(1, 8)] == [
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
    ]
    assert jobs.backoff_delay(1000, 30, 3600) == 3600
    assert jobs.backoff_delay(3, 0, 3600) == 0


def test_heartbeat_extends_the_lease_and_notices_a_takeover(engine):
    with engine.begin() as conn:
        job_id = _insert_job(conn, "/a/x.wav")
        job = jobs.claim(conn, "w1", 0.6)
    before = job_row(engine, job_id).locked_until
    hb = _Heartbeat(engine, jobs.Fence.of(job), 0.6).start()
    try:
        time.sleep(0.5)
        assert job_row(engine, job_id).locked_until > before
        assert not hb.lost.is_set()
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE jobs SET locked_by = 'w2', attempts = 2 WHERE id = :i"),
                {"i": job_id},
            )
        assert hb.lost.wait(2)
    finally:
        hb.stop()


def test_a_stolen_job_is_never_committed_twice(sensor, engine, db_url, run_cli, tmp_path):
    """Worker A's lease expired and B took the job over: A's finished ingest rolls back at
    COMMIT (the fenced done-mark matches no row); B stores the file once."""
    clip = make_clips(tmp_path, 1)[0]
    job_id = enqueue(run_cli, clip, "-s", sensor, "-m", "spectral")[0]["job_id"]
    said: list[str] = []
    a = Worker(db_url, WorkerOptions(lease_s=30), identity="host-a:1", report=said.append)
    b = Worker(db_url, WorkerOptions(lease_s=30), identity="host-b:2", report=said.append)
    try:
        job_a = a.claim_next()
        with engine.begin() as conn:  # what B's claim does once A's lease has expired
            conn.execute(
                sa.text(
                    "UPDATE jobs SET locked_by = 'host-b:2', attempts = attempts + 1 WHERE id = :i"
                ),
                {"i": job_id},
            )
        assert a.process(job_a) == "lost"
        assert scalar(engine, "SELECT count(*) FROM recordings") == 0
        assert scalar(engine, "SELECT count(*) FROM segments") == 0
        assert job_row(engine, job_id).status == "running"

        with engine.connect() as conn:
            job_b = jobs.get_job(conn, job_id)
        assert b.process(job_b) == "done"
    finally:
        a.close()
        b.close()
    row = job_row(engine, job_id)
    assert (row.status, row.locked_by, row.attempts) == ("done", "host-b:2", 2)
    assert_stored_exactly_once(engine, [clip])
    assert any("taken over" in s for s in said)


def test_every_space_pass_checks_the_lease_and_shutdown(sensor, engine, tmp_path):
    """The worker's check (Ingestor.on_batch) runs after every batch of every space, so a stop
    or a lost lease abandons the file promptly; the file's transaction rolls back."""
    from soundscape.ingest import Ingestor
    from soundscape.worker import Abandoned

    clip = make_clips(tmp_path, 1)[0]
    ingestor = Ingestor(engine, sensor, ["spectral", "birdnet"], record_errors=False)
    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 2:  # the first batch of the second space
            raise Abandoned("stopping")

    ingestor.on_batch = check
    result = ingestor.ingest_file(clip)
    assert result.status == "failed" and isinstance(result.exception, Abandoned)
    assert scalar(engine, "SELECT count(*) FROM recordings") == 0
    assert scalar(engine, "SELECT count(*) FROM ingest_errors") == 0
    ingestor.on_batch = lambda: calls.append(1)
    assert ingestor.ingest_file(clip).segments.keys() == {"spectral", "birdnet"}
    assert len(calls) >= 4


def test_ingestors_share_model_instances(sensor, db_url, run_cli):
    """A worker keeps one ingestor per job configuration but one instance per model."""
    assert run_cli("sensors", "add", "south-1").exit_code == 0
    worker = Worker(db_url, report=lambda _: None)
    try:
        a = worker._ingestor(jobs.JobConfig("north-1", ("spectral",)))
        b = worker._ingestor(jobs.JobConfig("south-1", ("spectral",), 5.0, 5.0))
        assert a is not b and a.targets[0].space.id != b.targets[0].space.id
        assert a.targets[0].model is b.targets[0].model
        assert worker._ingestor(jobs.JobConfig("north-1", ("spectral",))) is a
    finally:
        worker.close()


def test_permanent_and_retryable_failures(sensor, engine, db_url, run_cli, tmp_path, monkeypatch):
    """A corrupt file fails at once; a database error is retried with backoff, and gives up
    after max attempts."""
    from soundscape.ingest_targets import SpaceTarget

    folder = tmp_path / "card"
    make_clips(folder, 3)
    names = sorted(p.name for p in folder.iterdir())
    flaky, broken, slow = (folder / n for n in names)
    (folder / "corrupt.wav").write_text("this is not audio\n" * 100)
    queued = enqueue(run_cli, folder, "-s", sensor, "-m", "spectral", "--max-attempts", "3")
    ids = {Path(r["path"]).name: r["job_id"] for r in queued}

    calls: dict[str, int] = {}
    original = SpaceTarget.begin

    def begin(self, conn, recording, *args):
        path = recording.source
        calls[path.name] = calls.get(path.name, 0) + 1
        if path.name == broken.name or (path.name == flaky.name and calls[path.name] == 1):
            raise sa.exc.OperationalError("COPY", {}, Exception("server closed the connection"))
        return original(self, conn, recording, *args)

    monkeypatch.setattr(SpaceTarget, "begin", begin)
    with engine.begin() as conn:  # the slow one waits in backoff
        conn.execute(
            sa.text("UPDATE jobs SET run_after = now() + interval '1 hour' WHERE id = :i"),
            {"i": ids[slow.name]},
        )
    said: list[str] = []
    worker = Worker(db_url, WorkerOptions(once=True, backoff_s=0), report=said.append)
    assert worker.run(install_signals=False) == 1  # a job failed for good

    corrupt = job_row(engine, ids["corrupt.wav"])
    assert (corrupt.status, corrupt.attempts) == ("failed", 1)
    assert "not an audio file" in corrupt.last_error
    flaky_job = job_row(engine, ids[flaky.name])
    assert (flaky_job.status, flaky_job.attempts) == ("done", 2)
    broken_job = job_row(engine, ids[broken.name])
    assert (broken_job.status, broken_job.attempts) == ("failed", 3)
    assert "gave up after 3 attempt(s)" in broken_job.last_error
    assert "OperationalError" in broken_job.last_error
    assert job_row(engine, ids[slow.name]).status == "queued"
    with engine.connect() as conn:
        errors = dict(conn.execute(sa.text("SELECT path, error FROM ingest_errors")).fetchall())
    assert {Path(p).name for p in errors} == {"corrupt.wav", broken.name}

    # The backoff: base * 2^attempts after the first failure of a retryable job.
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET run_after = now() WHERE id = :i"), {"i": ids[slow.name]}
        )
    calls.clear()

    def always_down(*args):
        raise sa.exc.OperationalError("COPY", {}, Exception("database is down"))

    monkeypatch.setattr(SpaceTarget, "begin", always_down)
    worker = Worker(db_url, WorkerOptions(once=True, backoff_s=100), report=said.append)
    assert worker.run(install_signals=False) == 0  # retried later: not a failure yet
    delay = scalar(
        engine,
        "SELECT extract(epoch FROM run_after - now()) FROM jobs WHERE id = :i",
        i=ids[slow.name],
    )
    assert 190 < float(delay) <= 200
    assert is_permanent(OSError("gone")) and not is_permanent(RuntimeError("db"))


# --------------------------------------------------------------------------- the CLI


def test_enqueue_deduplicates_and_validates(sensor, engine, run_cli, tmp_path):
    from soundscape.ingest import Ingestor

    folder = tmp_path / "card"
    clips = make_clips(folder, 3)
    first = enqueue(run_cli, folder, "-s", sensor, "-m", "spectral")
    assert [r["status"] for r in first] == ["queued"] * 3
    again = enqueue(run_cli, folder, "-s", sensor, "-m", "SPECTRAL")
    assert [r["status"] for r in again] == ["skipped"] * 3
    assert again[0]["reason"] == f"already queued as job {first[0]['job_id']}"
    other = enqueue(run_cli, clips[0], "-s", sensor, "-m", "spectral", "--hop", "1")
    assert other[0]["status"] == "queued"  # another configuration
    replace = enqueue(run_cli, clips[0], "-s", sensor, "-m", "spectral", "--replace")
    assert replace[0]["status"] == "queued"
    assert (
        enqueue(run_cli, clips[0], "-s", sensor, "-m", "spectral", "--replace")[0]["status"]
        == "skipped"
    )

    # A file already stored (also under another name) is skipped; a failed job is re-queued.
    Ingestor(engine, sensor, ["spectral"]).ingest_file(clips[1])
    copy = tmp_path / "copy.flac"
    shutil.copy(clips[1], copy)
    stored = enqueue(run_cli, copy, "-s", sensor, "-m", "spectral")
    assert stored[0]["status"] == "skipped" and "already stored" in stored[0]["reason"]
    both = enqueue(run_cli, copy, "-s", sensor, "-m", "spectral,birdnet")
    assert both[0]["status"] == "queued"  # not stored in the birdnet space yet
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET status = 'failed', attempts = 5 WHERE id = :i"),
            {"i": first[2]["job_id"]},
        )
    requeued = enqueue(run_cli, clips[2], "-s", sensor, "-m", "spectral")
    assert requeued[0] == {
        "job_id": first[2]["job_id"],
        "status": "queued",
        "path": str(clips[2]),
        "reason": "re-queued a failed job",
    }
    assert job_row(engine, first[2]["job_id"]).attempts == 0
    models = scalar(engine, "SELECT models FROM jobs WHERE id = :i", i=both[0]["job_id"])
    assert models == ["birdnet", "spectral"]

    # Clear errors, exit code 1, nothing queued.
    count = scalar(engine, "SELECT count(*) FROM jobs")
    nosensor = run_cli("enqueue", folder, "-s", "nobody", "-m", "spectral")
    assert nosensor.exit_code == 1 and "soundscape sensors add nobody" in nosensor.stderr
    nomodel = run_cli("enqueue", folder, "-s", sensor, "-m", "nosuchmodel")
    assert nomodel.exit_code == 1 and "available: birdnet" in nomodel.stderr
    window = run_cli("enqueue", folder, "-s", sensor, "-m", "birdnet", "--window", "5")
    assert window.exit_code == 2 and "only accepts 3 s windows" in window.stderr
    assert scalar(engine, "SELECT count(*) FROM jobs") == count
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    bad = run_cli(
        "enqueue",
        tmp_path / "missing.wav",
        notes,
        clips[0],
        "-s",
        sensor,
        "-m",
        "spectral",
        "--json",
    )
    assert bad.exit_code == 1
    statuses = {Path(r["path"]).name: r["status"] for r in map(json.loads, bad.stdout.splitlines())}
    assert statuses == {"missing.wav": "invalid", "notes.txt": "invalid", clips[0].name: "skipped"}
    assert "no such file" in bad.stderr and "unsupported format" in bad.stderr
    assert run_cli("enqueue", "-s", sensor).exit_code == 2


def test_jobs_list_stats_retry_purge(sensor, engine, run_cli, tmp_path):
    with engine.begin() as conn:
        q = _insert_job(conn, "/a/queued.wav")
        done = _insert_job(conn, "/a/done.wav", status="done")
        f1 = _insert_job(conn, "/a/f1.wav", status="failed", attempts=5, last_error="boom")
        f2 = _insert_job(conn, "/a/f2.wav", status="failed", attempts=5, last_error="bang")
        live = jobs.claim(conn, "elsewhere:1", 3600)  # the queued job, held by a live worker
    assert live.id == q

    listed = run_cli("jobs", "list", "--status", "failed", "--json")
    assert listed.exit_code == 0
    rows = [json.loads(x) for x in listed.stdout.splitlines()]
    assert [(r["id"], r["last_error"]) for r in rows] == [(f1, "boom"), (f2, "bang")]
    assert "queued 0, running 1, done 1, failed 2" in listed.stderr
    csv_out = run_cli("jobs", "list", "--csv").stdout.splitlines()
    assert csv_out[0].startswith("id,status,path") and len(csv_out) == 5
    table = run_cli("jobs", "list").stdout
    assert "elsewhere:1" in table and "/a/done.wav" in table
    stats = [json.loads(x) for x in run_cli("jobs", "stats", "--json").stdout.splitlines()]
    assert {s["status"]: s["jobs"] for s in stats} == {
        "queued": 0,
        "running": 1,
        "done": 1,
        "failed": 2,
    }
    assert run_cli("jobs", "list", "--status", "bogus").exit_code == 2

    assert run_cli("jobs", "retry").exit_code == 2
    one = run_cli("jobs", "retry", str(f1))
    assert one.exit_code == 0 and "re-queued 1 job(s)" in one.stderr
    row = job_row(engine, f1)
    assert (row.status, row.attempts) == ("queued", 0)
    missing = run_cli("jobs", "retry", "999999", str(q))
    assert missing.exit_code == 1
    assert "no job 999999" in missing.stderr and "live lease" in missing.stderr
    assert run_cli("jobs", "retry", "--failed").exit_code == 0
    assert job_row(engine, f2).status == "queued"

    assert run_cli("jobs", "purge").exit_code == 2
    purged = run_cli("jobs", "purge", "--done")
    assert purged.exit_code == 0 and "deleted 1 job(s)" in purged.stderr
    assert scalar(engine, "SELECT count(*) FROM jobs WHERE id = :i", i=done) == 0
    everything = run_cli("jobs", "purge", "--all")
    assert "deleted 2 job(s)" in everything.stderr  # not the one a live worker holds
    assert scalar(engine, "SELECT array_agg(id) FROM jobs") == [q]


def test_worker_exit_codes(sensor, engine, run_cli, tmp_path):
    empty = run_cli("worker", "--once", "-q")
    assert empty.exit_code == 0
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + b"\0" * 100)
    enqueue(run_cli, bad, "-s", sensor, "-m", "spectral")
    failed = run_cli("worker", "--once", "--poll", "0.1")
    assert failed.exit_code == 1 and "failed" in failed.stderr
    down = run_cli("worker", "--once", "-d", "postgresql://nobody@127.0.0.1:9/none")
    assert down.exit_code == 1 and "cannot connect" in down.stderr
    assert run_cli("worker", "--lease", "0").exit_code == 2
    assert run_cli("worker", "--concurrency", "0").exit_code == 2


# ------------------------------------------------------------------------------ watch


def test_settle_scan_waits_for_files_to_stop_changing():
    state: dict[str, Seen] = {}

    def scan(listing, now, settle=5.0):
        nonlocal state
        state, ready = settle_scan(state, listing, now, settle)
        return ready

    assert scan({"a.wav": (100, 1)}, 0.0) == []  # first sight: not yet known to be stable
    assert scan({"a.wav": (200, 2)}, 2.0) == []  # still growing
    assert scan({"a.wav": (200, 2)}, 6.9) == []  # stable for 4.9 s only
    assert scan({"a.wav": (200, 2), "b.wav": (5, 1)}, 7.0) == ["a.wav"]
    assert scan({"a.wav": (200, 2), "b.wav": (5, 1)}, 20.0) == ["b.wav"]  # each once
    assert scan({"a.wav": (200, 2), "b.wav": (5, 1)}, 30.0) == []
    assert scan({"a.wav": (200, 3)}, 31.0) == []  # rewritten: waits again; b.wav forgotten
    assert scan({"a.wav": (200, 3)}, 36.0) == ["a.wav"]
    assert set(state) == {"a.wav"}
    assert settle_scan({}, {"c.wav": (1, 1)}, 0.0, 0.0)[1] == ["c.wav"]


def test_watcher_with_injected_clock_and_stat(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.wav", "b.FLAC", ".hidden.wav", "notes.txt", "sub/c.ogg"):
        (tmp_path / name).write_bytes(b"x")
    now = [0.0]
    sizes = {str(tmp_path / "a.wav"): 10}

    class St:
        def __init__(self, size):
            self.st_size, self.st_mtime_ns = size, 7

    def fake_stat(path):
        return St(sizes.get(path, 1))

    listing = list_audio_files(tmp_path, stat=fake_stat)
    assert sorted(Path(p).name for p in listing) == ["a.wav", "b.FLAC"]
    assert len(list_audio_files(tmp_path, recursive=True)) == 3

    w = Watcher(tmp_path, settle_s=5, clock=lambda: now[0], stat=fake_stat)
    assert w.poll() == []
    now[0] = 3.0
    sizes[str(tmp_path / "a.wav")] = 20  # still being copied
    assert w.poll() == []
    now[0] = 6.0
    assert [Path(p).name for p in w.poll()] == ["b.FLAC"]
    now[0] = 8.0
    ready = w.poll()
    assert [Path(p).name for p in ready] == ["a.wav"]
    w.unmark(ready)  # queueing failed: offered again
    assert w.poll() == ready


def test_watch_command_queues_settled_files(sensor, engine, run_cli, tmp_path):
    folder = tmp_path / "incoming"
    make_clips(folder, 3)
    (folder / "partial.wav.tmp").write_bytes(b"x")
    result = run_cli(
        "watch",
        folder,
        "-s",
        sensor,
        "-m",
        "spectral",
        "--interval",
        "0.05",
        "--settle",
        "0.01",
        "--scans",
        "3",
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.count("queued as job") == 3
    assert scalar(engine, "SELECT count(*) FROM jobs WHERE status = 'queued'") == 3
    again = run_cli(
        "watch", folder, "-s", sensor, "-m", "spectral", "--settle", "0", "--scans", "1"
    )
    assert again.stderr.count("skipped") == 3
    assert scalar(engine, "SELECT count(*) FROM jobs") == 3
    nosensor = run_cli("watch", folder, "-s", "nobody", "--scans", "1")
    assert nosensor.exit_code == 1 and "sensors add" in nosensor.stderr
