"""The soak under faults (bench/soak.py, issue 24) in a short version, and regressions for what
the soak found in the queue's commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

from tests.conftest import real_audio

ROOT = Path(__file__).resolve().parents[1]
SHARED_AUDIO = ROOT.parent / "shared" / "audio"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        seen = path.read_text(errors="replace")
        if text in seen:
            return seen
        if proc.poll() is not None:
            return path.read_text(errors="replace")
        time.sleep(0.3)
    return path.read_text(errors="replace")


@pytest.mark.parametrize("command", ["worker", "watch"])
def test_worker_and_watch_wait_for_an_unreachable_database(db_url, command, tmp_path):
    """Found by the soak: a worker (or watch) started while the server restarts exited 1
    ("cannot connect"); as a service it must wait and start once the server is back."""
    parts = urlsplit(db_url)
    query = parse_qs(parts.query)
    socket_dir = Path(query["host"][0])
    port = query.get("port", ["5432"])[0]
    sock = socket_dir / f".s.PGSQL.{port}"
    assert sock.exists()
    # A socket folder where the server is not (yet): the same URL, another host folder.
    empty = Path(tempfile.mkdtemp(prefix="soak-sock-"))
    try:
        query["host"] = [str(empty)]
        url = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        log = tmp_path / "log"
        args = ["worker", "--poll", "0.5"] if command == "worker" else ["watch", str(tmp_path)]
        if command == "watch":
            subprocess.run(
                [sys.executable, "-m", "soundscape", "sensors", "add", "s1", "-d", db_url],
                env=_env(),
                check=True,
                capture_output=True,
            )
            args += ["-s", "s1", "-m", "spectral", "--interval", "0.5"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "soundscape", *args, "-d", url],
                env=_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                # a suite started in the background (`make test &`) passes SIGINT on ignored,
                # and Python then never turns it into KeyboardInterrupt: Ctrl-C as a user's
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        try:
            seen = _wait_for(log, "waiting for the database", proc, 60)
            assert proc.poll() is None, f"{command} exited {proc.returncode}: {seen}"
            assert "waiting for the database" in seen
            os.symlink(sock, empty / sock.name)  # the server is back
            started = "worker(s) on" if command == "worker" else "watching"
            seen = _wait_for(log, started, proc, 60)
            assert started in seen, seen
            assert proc.poll() is None
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM if command == "worker" else signal.SIGINT)
                proc.wait(timeout=60)
        assert proc.returncode == (0 if command == "worker" else 130)
    finally:
        for p in empty.iterdir():
            p.unlink()
        empty.rmdir()


def test_worker_once_still_fails_fast_without_a_database(tmp_path):
    """--once (cron, CI) does not wait: an unreachable database is exit 1 with the reason."""
    empty = Path(tempfile.mkdtemp(prefix="soak-sock-"))
    try:
        url = f"postgresql+psycopg://postgres@/soundscape?host={empty}"
        r = subprocess.run(
            [sys.executable, "-m", "soundscape", "worker", "--once", "-d", url],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        empty.rmdir()
    assert r.returncode == 1
    assert "cannot connect" in r.stderr


@pytest.mark.slow
def test_soak_short(tmp_path):
    """The soak, short: 6 minutes of field audio for 2 sensors through watch and 3 workers,
    with each fault once or more (kill -9 of a worker, db restart, kill -9 of the postmaster,
    a full tablespace, bad files) and 4 searching clients; every check of the ledger holds."""
    if not (SHARED_AUDIO / "soundscapes" / "xc563936.mp3").exists():
        pytest.skip("needs ../shared/audio")
    out = tmp_path / "soak.json"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--minutes",
            "6",
            "--quick",
            "--drop-minutes",
            "0.5",
            "--out",
            str(out),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.exists(), r.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["ok"] == dict.fromkeys(report["ok"], True), (r.stdout, report["findings"])
    led = report["ledger"]
    assert led["good_files"] >= 3 and led["bad_files"] >= 1
    kinds = set(report["fault_counts"])
    assert {"kill_worker", "db_restart", "postmaster_kill9", "bad_files"} <= kinds
    assert report["search"]["rows_checked"] > 0
    assert report["search"]["wrong_rows"] == 0
    assert r.returncode == 0, r.stdout


def test_a_refused_write_retries_the_job_with_its_reason(db_url, engine, run_cli, cli_env):
    """Found by the soak: a full disk (SQLSTATE 53100) or a lock timeout (55P03) reached the
    worker as ConnectionLost (psycopg reports them as OperationalError); the job was left
    'running' until its lease expired, its reason replaced by "lease ... expired", and every
    such outage used up an attempt (finding 5). Now it is queued again at once with the
    reason as an interruption, not an attempt (``--max-attempts 1`` still leaves it a try),
    ``soundscape ingest`` says what the server refused (finding 3), and the next run stores
    the file once."""
    import soundfile as sf
    import sqlalchemy as sa

    from soundscape.worker import Worker, WorkerOptions

    assert run_cli("sensors", "add", "s1").exit_code == 0
    folder = Path(tempfile.mkdtemp(prefix="soak-clip-"))
    audio, rate = sf.read(SHARED_AUDIO / "soundscapes" / "xc563936.mp3", dtype="float32")
    first, clip = folder / "first.wav", folder / "clip.wav"
    sf.write(first, audio[: rate * 10], rate)
    sf.write(clip, audio[rate * 10 : rate * 30], rate)
    said: list[str] = []
    options = WorkerOptions(lease_s=600, backoff_s=0.1, max_attempts=1)
    worker = Worker(db_url, options, report=said.append)
    db = engine.url.database
    try:
        for path in (first, clip):
            r = run_cli("enqueue", str(path), "-s", "s1", "-m", "spectral", "--json")
            assert r.exit_code == 0, r.output
        job = worker.claim_next()
        assert job is not None and job.path == str(first)
        assert worker.process(job) == "done"  # the space and its partition exist now
        worker.close()
        with engine.begin() as conn:  # a DBA's lock_timeout; the lock below outlasts it
            conn.execute(sa.text(f"ALTER DATABASE \"{db}\" SET lock_timeout = '500ms'"))
        with engine.connect() as locker, locker.begin():
            locker.execute(sa.text("LOCK TABLE recordings IN SHARE MODE"))  # blocks INSERT
            job = worker.claim_next()
            assert job is not None and job.path == str(clip)
            assert worker.process(job) == "retry"
            # the same refusal in `soundscape ingest`: not "lost the connection"
            r = run_cli("ingest", str(clip), "-s", "s1", "-m", "spectral")
            assert r.exit_code == 1
            assert "refused to store" in r.output and "lock" in r.output, r.output
            assert "lost the connection" not in r.output
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT status, attempts, interruptions, last_error FROM jobs WHERE id = :i"
                ),
                {"i": job.id},
            ).one()
        assert row.status == "queued" and row.attempts == 1 and row.interruptions == 1
        assert "lock timeout" in row.last_error, row.last_error
        with engine.begin() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{db}" RESET lock_timeout'))
        worker.close()
        time.sleep(0.5)  # the backoff
        job = worker.claim_next()
        assert job is not None and job.path == str(clip)
        assert worker.process(job) == "done"
    finally:
        worker.close()
        with engine.begin() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{db}" RESET lock_timeout'))
        for p in (first, clip):
            p.unlink()
        folder.rmdir()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM recordings")).scalar() == 2
        assert (
            conn.execute(sa.text("SELECT count(*) FROM jobs WHERE status = 'done'")).scalar() == 2
        )


def test_outages_do_not_use_up_attempts(db_url, engine, run_cli, cli_env):
    """Soak finding 5: a job interrupted by outages failed after max_attempts although its
    file was good. A lease that ran out because the database restarted (its last heartbeat
    is older than the server's start) is an interruption; a lease that ran out while the
    server ran (the worker died, maybe of the file) still counts; and after
    ``jobs.MAX_INTERRUPTIONS`` interruptions the job fails all the same."""
    import sqlalchemy as sa

    from soundscape import jobs
    from soundscape.worker import Worker, WorkerOptions

    assert run_cli("sensors", "add", "s1").exit_code == 0
    clip = real_audio("crow.ogg")
    assert run_cli("enqueue", str(clip), "-s", "s1", "-m", "spectral").exit_code == 0
    worker = Worker(db_url, WorkerOptions(lease_s=600, max_attempts=2), report=lambda m: None)

    def expire(before_restart: bool) -> None:
        heartbeat = (
            "pg_postmaster_start_time() - interval '1 minute'" if before_restart else "now()"
        )
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"UPDATE jobs SET heartbeat_at = {heartbeat}, "
                    "locked_until = now() - interval '1 second' WHERE status = 'running'"
                )
            )

    try:
        first = worker.claim_next()
        assert first is not None and (first.attempts, first.interruptions) == (1, 0)
        for n in range(1, 4):  # the database restarted under it, three times
            expire(before_restart=True)
            job = worker.claim_next()
            assert job is not None and (job.attempts, job.interruptions) == (n + 1, n)
            assert job.counted == 1 and "the database restarted" in (job.last_error or "")
        expire(before_restart=False)  # a worker died while the server ran: counts
        job = worker.claim_next()
        assert job is not None and job.counted == 2 and "restarted" not in (job.last_error or "")
        expire(before_restart=False)  # and a third counted attempt is over the limit
        assert worker.claim_next() is None
        with engine.connect() as conn:
            status, error = conn.execute(sa.text("SELECT status, last_error FROM jobs")).one()
        assert status == "failed" and "gave up after 2 attempt(s)" in error

        with engine.begin() as conn:  # interrupted too often fails too
            conn.execute(
                sa.text(
                    "UPDATE jobs SET status = 'queued', attempts = 0, "
                    "interruptions = 0, run_after = now()"
                )
            )
            job = jobs.claim(conn, "w", 600)
            assert job is not None
            conn.execute(
                sa.text("UPDATE jobs SET interruptions = :n"), {"n": jobs.MAX_INTERRUPTIONS - 1}
            )
            assert jobs.interrupt(conn, jobs.Fence.of(job), "disk full", retry_in=0) == "failed"
            error = conn.execute(sa.text("SELECT last_error FROM jobs")).scalar()
        assert error.startswith(f"interrupted {jobs.MAX_INTERRUPTIONS} times; last: disk full")
    finally:
        worker.close()
