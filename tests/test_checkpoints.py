"""An ingest cut off mid-file resumes from its checkpoints (issue 24, soak finding 7).

Real BirdNET (vectors and class scores) on real audio, a real PostgreSQL: the first ingest
is cut off after a few batches (its transaction rolls back: nothing of the recording is
stored), the second reuses the checkpointed batches instead of running the model over them,
and stores exactly what an ingest from scratch stores."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import sqlalchemy as sa

from soundscape import checkpoints
from soundscape.ingest import Ingestor
from tests.conftest import SHARED_AUDIO


class Cut(Exception):
    """The outage of the test: raised after a number of batches."""


def _clip(seconds: int) -> Path:
    """The first ``seconds`` of the Xeno-canto soundscape (90 s long), looped if longer."""
    audio, rate = sf.read(SHARED_AUDIO / "soundscapes" / "xc563936.mp3", dtype="float32")
    audio = np.tile(audio, (rate * seconds) // len(audio) + 1)[: rate * seconds]
    path = Path(tempfile.mkdtemp(prefix="checkpoint-clip-")) / "clip.wav"
    sf.write(path, audio, rate)
    return path


def _stored(engine, rec_id: int) -> tuple[dict, set]:
    with engine.connect() as conn:
        vectors = {
            float(s): np.array(e.strip("[]").split(","), dtype=np.float32)
            for s, e in conn.execute(
                sa.text("SELECT start_s, embedding::text FROM segments WHERE recording_id = :r"),
                {"r": rec_id},
            )
        }
        scores = {
            (float(s), int(label), round(float(v), 5))
            for s, label, v in conn.execute(
                sa.text(
                    "SELECT g.start_s, c.label_id, c.score FROM segment_scores c "
                    "JOIN segments g ON g.id = c.segment_id WHERE g.recording_id = :r"
                ),
                {"r": rec_id},
            )
        }
    return vectors, scores


def _count(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM ingest_checkpoints")).scalar())


def test_an_interrupted_ingest_resumes_from_its_checkpoints(engine, run_cli, cli_env, monkeypatch):
    assert run_cli("sensors", "add", "s1").exit_code == 0
    clip = _clip(90)  # 45 BirdNET windows (3 s, hop 2 s): 3 batches (16, 16, 13)
    monkeypatch.setattr(checkpoints, "EVERY_S", 0.0)  # a checkpoint after every batch

    first = Ingestor(engine, "s1", ["birdnet"])
    fed = 0

    def cut_after_two() -> None:
        nonlocal fed
        fed += 1
        if fed == 2:
            raise Cut("the database went away")

    first.on_batch = cut_after_two
    r = first.ingest_file(clip)
    assert r.status == "failed" and "went away" in r.reason
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM recordings")).scalar() == 0
    assert _count(engine) == 2  # the two batches embedded before the cut

    again = Ingestor(engine, "s1", ["birdnet"])
    model = again.spaces[0].model
    embedded: list[int] = []
    real = model.embed_audio_and_scores

    def counting(samples):
        embedded.append(len(samples))
        return real(samples)

    monkeypatch.setattr(model, "embed_audio_and_scores", counting)
    r = again.ingest_file(clip)
    assert r.status == "stored", r.reason
    assert r.segments == {"birdnet": 45}
    assert r.resumed == 32 and sum(embedded) == 13  # only the last batch ran the model
    assert _count(engine) == 0  # stored: its checkpoints went with the commit
    resumed = _stored(engine, r.recording_id)

    # the same file from scratch (--replace, no checkpoints): the same windows and scores
    monkeypatch.setattr(checkpoints, "EVERY_S", 1e9)
    fresh = Ingestor(engine, "s1", ["birdnet"], replace=True).ingest_file(clip)
    assert fresh.status == "stored" and fresh.resumed == 0
    scratch = _stored(engine, fresh.recording_id)
    assert resumed[0].keys() == scratch[0].keys() and len(resumed[0]) == 45
    for start, vec in scratch[0].items():
        np.testing.assert_allclose(resumed[0][start], vec, atol=1e-6)
    assert resumed[1] == scratch[1] and resumed[1]


def test_a_checkpoint_is_reused_only_for_the_same_windows(engine, run_cli, cli_env):
    """A batch whose window starts differ from the checkpoint's (another window or hop
    would be another space; this is the guard against any drift) is embedded anew."""
    assert run_cli("sensors", "add", "s1").exit_code == 0
    ing = Ingestor(engine, "s1", ["birdnet"])
    space_id = ing.spaces[0].space.id
    cp = checkpoints.Checkpoints(engine, "ab" * 32, space_id, every_s=0.0).open()
    starts = np.arange(0, 32, 2, dtype=np.float64)
    vectors = np.random.default_rng(0).standard_normal((16, 1024)).astype(np.float32)
    scores = checkpoints.top_k(np.random.default_rng(1).random((16, 50)), 5)
    cp.add(checkpoints.Batch(0.0, starts, vectors, scores))
    again = checkpoints.Checkpoints(engine, "ab" * 32, space_id).open()
    got = again.get(0.0, starts)
    assert got is not None and again.reused == 16
    np.testing.assert_array_equal(got.vectors, vectors)
    np.testing.assert_array_equal(got.scores[0], scores[0])
    assert again.get(0.0, starts + 1.0) is None  # other windows
    assert again.get(32.0, starts + 32.0) is None  # never checkpointed
    with engine.begin() as conn:
        checkpoints.clear(conn, "ab" * 32)
    assert _count(engine) == 0


@pytest.mark.parametrize("k", [1, 5])
def test_top_k_is_the_class_scores_ingest_keeps(k):
    """The checkpoint's fixed-size top k, cut at the floor, is what ``top_scores`` picks."""
    from soundscape.embedders.scores import top_scores

    rng = np.random.default_rng(3)
    s = rng.random((20, 40)).astype(np.float32)
    s[3, 7] = np.nan
    s[4, :] = 0.01  # nothing above the floor
    s[5, 10:12] = 0.9  # a tie: the lower class index first
    idx, val = checkpoints.top_k(s, k)
    for row, (want_idx, want_val) in enumerate(top_scores(s, k, 0.05)):
        keep = val[row] >= 0.05
        np.testing.assert_array_equal(idx[row][keep], want_idx)
        np.testing.assert_array_equal(val[row][keep], want_val)


def test_a_worker_s_checkpoints_do_not_mark_its_job_done(
    engine, db_url, run_cli, cli_env, monkeypatch
):
    """Found by the hour-long soak: checkpoints were committed on the worker's ingest engine,
    where every commit is the job's fenced "done": the first checkpoint marked the job done,
    the heartbeat then saw the job gone ("taken over by another worker"), the file's own
    transaction rolled back, and the file was lost with its job done. Checkpoints now commit
    on an engine of their own."""
    from soundscape.worker import Worker, WorkerOptions

    assert run_cli("sensors", "add", "s1").exit_code == 0
    clip = _clip(300)  # 150 BirdNET windows: 10 batches, each checkpointed
    monkeypatch.setattr(checkpoints, "EVERY_S", 0.0)
    r = run_cli("enqueue", str(clip), "-s", "s1", "-m", "birdnet", "--json")
    assert r.exit_code == 0, r.output
    # a short lease: the heartbeat looks at the job every 0.5 s while the file is embedded
    worker = Worker(db_url, WorkerOptions(lease_s=1.5, backoff_s=0.1, max_attempts=1))
    try:
        job = worker.claim_next()
        assert job is not None
        assert worker.process(job) == "done"
    finally:
        worker.close()
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT status, result FROM jobs WHERE id = :i"), {"i": job.id}
        ).one()
        stored = conn.execute(
            sa.text("SELECT count(*) FROM segments g JOIN recordings r ON r.id = g.recording_id "
                    "WHERE r.sha256 IS NOT NULL")
        ).scalar()  # fmt: skip
    assert row.status == "done" and row.result is not None and row.result["status"] == "stored"
    assert stored == row.result["segments"]["birdnet"] == 150
    assert _count(engine) == 0
