"""Concurrent ingests of one folder while a space is new (issue 24, tracebacks): one ingest
runs with ``-m spectral`` while another adds ``musicnn`` (a new space). The partition creation
(``CREATE TABLE ... PARTITION OF segments``) and the running ingest deadlocked ("lost the
connection ... (deadlock detected)", 5 of 8 runs). Now space creation takes the tables in the
ingest's order first, and a transaction that still loses a deadlock is run again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import sqlalchemy as sa

from tests.conftest import ROOT, real_audio

pytestmark = pytest.mark.slow

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
