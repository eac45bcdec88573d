"""Concurrent ingests of one folder while a space is new (issue 24, tracebacks): one ingest
runs with ``-m spectral`` while another adds ``musicnn`` (a new space). The partition creation
(``CREATE TABLE ... PARTITION OF segments``) and the running ingest deadlocked ("lost the
connection ... (deadlock detected)", 5 of 8 runs). Now space creation takes the tables in the
ingest's order first, and a transaction that still loses a deadlock is run again."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import sqlalchemy as sa

from tests.conftest import ROOT, real_audio

CLIPS = ["firetruck.ogg", "blackbird.ogg", "violin.ogg", "lightningbolt.ogg"]


def _folder(folder: Path, copies: int = 3) -> int:
    """Distinct files of real audio (each clip repeated, at a different gain per copy)."""
    folder.mkdir()
    n = 0
    for i in range(copies):
        for name in CLIPS:
            audio, rate = sf.read(real_audio(name))
            sf.write(
                folder / f"{i}_{Path(name).stem}.wav", np.tile(audio, 4) * (0.3 + 0.1 * i), rate
            )
            n += 1
    return n


def test_space_creation_and_an_ingest_transaction_do_not_deadlock(engine) -> None:
    """The window that deadlocked, made certain: an ingest has inserted its recording (it
    holds recordings) and is embedding the first batch when another process creates a space;
    then the ingest writes its windows. Before, the creation took segments and waited for
    recordings while the ingest waited for segments: "deadlock detected"."""
    from soundscape.embedders import get_model_class
    from soundscape.sensors import add_sensor
    from soundscape.spaces import ensure_space

    spectral, musicnn = get_model_class("spectral"), get_model_class("musicnn")
    with engine.begin() as conn:
        sensor = add_sensor(conn, "s1")
        space = ensure_space(conn, spectral, 3.0, 2.0)
    errors: list[BaseException] = []
    created: list = []

    def create() -> None:
        try:
            with engine.begin() as conn:
                created.append(ensure_space(conn, musicnn, 3.0, 2.0))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    with engine.connect() as ingest:
        with ingest.begin():
            rec = ingest.execute(
                sa.text(
                    "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                    "sample_rate, channels, duration_s) VALUES (:s, '/x.wav', repeat('a', 64), "
                    "1, 'WAV', 16000, 1, 3) RETURNING id"
                ),
                {"s": sensor.id},
            ).scalar()
            other = threading.Thread(target=create)
            other.start()
            time.sleep(1.5)  # the other process is now creating its space
            try:
                ingest.execute(
                    sa.text(
                        "INSERT INTO segments (space_id, recording_id, sensor_id, start_s, end_s, "
                        "embedding) VALUES (:sp, :r, :s, 0, 3, CAST(:e AS vector))"
                    ),
                    {"sp": space.id, "r": rec, "s": sensor.id, "e": str([0.1] * 192)},
                )
            except sa.exc.DBAPIError as exc:
                errors.append(exc)
        other.join(timeout=60)
    assert not errors, errors
    assert created and created[0].model == "musicnn"


@pytest.mark.slow
@pytest.mark.parametrize("delay", [2.0, 4.0])
def test_a_new_space_while_another_ingest_runs(db_url: str, tmp_path: Path, delay: float) -> None:
    n = _folder(tmp_path / "audio")
    env = {**os.environ, "SOUNDSCAPE_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "soundscape"]
    subprocess.run([*cmd, "sensors", "add", "s1"], env=env, check=True, capture_output=True)

    def ingest(models: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*cmd, "ingest", str(tmp_path / "audio"), "-s", "s1", "-m", models, "-q"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    first = ingest("spectral")
    time.sleep(delay)
    second = ingest("spectral,musicnn")
    for p in (first, second):
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert "deadlock" not in err.lower() and "Traceback" not in err, err
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        per_space = dict(
            conn.execute(
                sa.text(
                    "SELECT sp.name, count(*) FROM recording_spaces rs "
                    "JOIN spaces sp ON sp.id = rs.space_id GROUP BY sp.name"
                )
            ).all()
        )
    engine.dispose()
    assert per_space == {"spectral": n, "musicnn": n}  # every file in both spaces, once
