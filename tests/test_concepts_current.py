"""A concept's detections follow new audio (issue 23, item 7): ingest, backfill and the worker
(which ingests through ``Ingestor.ingest_file``) compute them for each recording they store,
in the same transaction, without ``soundscape concepts refresh``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import sqlalchemy as sa

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "audio"


def _detected_recordings(engine, concept: str) -> dict[str, int]:
    """File name -> number of the concept's detections in that recording."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT r.path, count(*) AS n FROM detections d "
                "JOIN concepts c ON c.id = d.concept_id "
                "JOIN segments g ON g.space_id = d.space_id AND g.id = d.segment_id "
                "JOIN recordings r ON r.id = g.recording_id WHERE c.name = :c GROUP BY r.path"
            ),
            {"c": concept},
        ).all()
    return {Path(r.path).name: int(r.n) for r in rows}


def _louder(src: Path, dst: Path, gain: float) -> Path:
    """The same sound as another file (another SHA-256: a new recording)."""
    data, rate = sf.read(src)
    sf.write(dst, np.clip(data * gain, -1, 1), rate)
    return dst


def test_ingest_and_backfill_keep_concept_detections_current(cli_env, run_cli, engine, tmp_path):
    assert run_cli("sensors", "add", "north-1", "--site", "Marsh").exit_code == 0
    first = tmp_path / "dog_1.wav"
    _louder(EXAMPLES / "dog.ogg", first, 0.9)
    assert run_cli("ingest", first, "-s", "north-1", "-m", "spectral", "-q").exit_code == 0
    # a vector concept: windows that sound like the dog
    add = run_cli(
        "concepts", "add", "dog-like", "--audio", EXAMPLES / "dog.ogg", "--space", "spectral",
        "--threshold", "0.9",
    )  # fmt: skip
    assert add.exit_code == 0, add.output
    before = _detected_recordings(engine, "dog-like")
    assert set(before) == {"dog_1.wav"}

    # New audio: its detections are there at once (on main they stayed stale).
    second = _louder(EXAMPLES / "dog.ogg", tmp_path / "dog_2.wav", 0.8)
    other = shutil.copy(EXAMPLES / "violin.ogg", tmp_path / "violin.ogg")
    ingest = run_cli("ingest", second, other, "-s", "north-1", "-m", "spectral", "-q")
    assert ingest.exit_code == 0, ingest.output
    after = _detected_recordings(engine, "dog-like")
    assert after.get("dog_2.wav", 0) > 0
    assert after["dog_1.wav"] == before["dog_1.wav"]

    # What refresh computes from scratch is what ingest kept: nothing was missed or doubled.
    with engine.begin() as conn:
        kept = conn.execute(
            sa.text("SELECT count(*) FROM detections d JOIN concepts c ON c.id = d.concept_id")
        ).scalar()
        assert conn.execute(sa.text("SELECT ranger.refresh_detections()")).scalar() == kept
    assert _detected_recordings(engine, "dog-like") == after

    # A label concept of a space added later by backfill: the backfilled windows count.
    assert run_cli("ingest", first, "-s", "north-1", "-m", "birdnet", "-q").exit_code == 0
    dog = run_cli("concepts", "add", "dog", "--text", "dog", "--space", "birdnet",
                  "--threshold", "0.1")  # fmt: skip
    assert dog.exit_code == 0, dog.output
    assert set(_detected_recordings(engine, "dog")) == {"dog_1.wav"}
    backfill = run_cli("backfill", "-m", "birdnet", "-q")
    assert backfill.exit_code == 0, backfill.output
    assert set(_detected_recordings(engine, "dog")) == {"dog_1.wav", "dog_2.wav"}

    # --replace re-embeds a recording: its detections are recomputed, not lost
    replaced = run_cli("ingest", second, "-s", "north-1", "-m", "spectral", "--replace", "-q")
    assert replaced.exit_code == 0, replaced.output
    assert _detected_recordings(engine, "dog-like") == after


def test_worker_jobs_keep_concept_detections_current(cli_env, run_cli, engine, db_url, tmp_path):
    from soundscape.worker import Worker, WorkerOptions

    assert run_cli("sensors", "add", "north-1", "--site", "Marsh").exit_code == 0
    first = _louder(EXAMPLES / "dog.ogg", tmp_path / "dog_1.wav", 0.9)
    assert run_cli("ingest", first, "-s", "north-1", "-m", "spectral", "-q").exit_code == 0
    add = run_cli(
        "concepts", "add", "dog-like", "--audio", EXAMPLES / "dog.ogg", "--space", "spectral",
        "--threshold", "0.9",
    )  # fmt: skip
    assert add.exit_code == 0, add.output
    card = tmp_path / "card"
    card.mkdir()
    _louder(EXAMPLES / "dog.ogg", card / "dog_3.wav", 0.7)
    queued = run_cli("enqueue", card, "-s", "north-1", "-m", "spectral")
    assert queued.exit_code == 0, queued.output
    said: list[str] = []
    assert (
        Worker(db_url, WorkerOptions(once=True), report=said.append).run(install_signals=False) == 0
    ), said
    assert _detected_recordings(engine, "dog-like").get("dog_3.wav", 0) > 0
