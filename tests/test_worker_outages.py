"""A job's set-up (its sensor, its spaces) meeting an outage: an interruption, not an attempt.

Found by the soak on Citus (issue 24): with a worker node down, a worker's first job of a
configuration failed while the ingestor was being set up ("cannot start the ingest: connection
to the remote node ... failed"), and each such failure used up an attempt of the job's budget,
where the same outage while storing the file is an interruption that does not."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import soundfile as sf
import sqlalchemy as sa

from tests.conftest import SHARED_AUDIO


def test_an_outage_while_setting_up_the_ingest_is_an_interruption(engine, db_url, run_cli, cli_env):
    from soundscape.worker import Worker, WorkerOptions

    assert run_cli("sensors", "add", "s1").exit_code == 0
    folder = Path(tempfile.mkdtemp(prefix="outage-clip-"))
    audio, rate = sf.read(SHARED_AUDIO / "soundscapes" / "xc563936.mp3", dtype="float32")
    clip = folder / "clip.wav"
    sf.write(clip, audio[: rate * 10], rate)
    r = run_cli("enqueue", str(clip), "-s", "s1", "-m", "spectral", "--json")
    assert r.exit_code == 0, r.output
    db = engine.url.database
    with engine.begin() as conn:  # a DBA's lock_timeout; the lock below outlasts it
        conn.execute(sa.text(f"ALTER DATABASE \"{db}\" SET lock_timeout = '500ms'"))
    worker = Worker(db_url, WorkerOptions(lease_s=600, backoff_s=0.1, max_attempts=1))
    try:
        with engine.connect() as locker, locker.begin():
            # the ingestor's set-up reads the sensor: refused (55P03) while this lock is held
            locker.execute(sa.text("LOCK TABLE sensors IN ACCESS EXCLUSIVE MODE"))
            job = worker.claim_next()
            assert job is not None
            assert worker.process(job) == "retry"
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT status, attempts, interruptions, last_error FROM jobs "
                        "WHERE id = :i"),
                {"i": job.id},
            ).one()  # fmt: skip
        # --max-attempts 1 and an attempt charged would have failed it for good
        assert row.status == "queued" and row.attempts == 1 and row.interruptions == 1, row
        assert "refused" in row.last_error and "lock" in row.last_error, row.last_error
        with engine.begin() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{db}" RESET lock_timeout'))
        worker.close()
        time.sleep(0.5)  # the backoff
        job = worker.claim_next()
        assert job is not None
        assert worker.process(job) == "done"
    finally:
        worker.close()
