"""Shared pieces of the benchmarks: machine facts, a real-ish long recording, a scratch database,
and JSON results. Benchmarks run on demand (`make bench`), never in CI."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "audio"
RESULTS = ROOT / "bench" / "results"


def machine() -> dict:
    """Facts that make numbers comparable: CPU, cores, memory, versions."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    import librosa
    import sqlalchemy

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "memory_gib": mem,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "librosa": librosa.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "platform": platform.platform(),
        "load_avg_at_start": os.getloadavg(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _load(path: Path, rate: int) -> np.ndarray:
    data, r = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    return soxr.resample(mono, r, rate).astype(np.float32) if r != rate else mono


def make_recording(path: Path, seconds: float, rate: int = 44100, seed: int = 0) -> Path:
    """The real forest soundscape looped to ``seconds``, with real clips (siren, saw, dog,
    fireworks, birds) mixed in at random places; written block by block as 16-bit WAV."""
    if path.exists() and abs(sf.info(str(path)).duration - seconds) < 1:
        return path
    rng = np.random.default_rng(seed)
    base = _load(EXAMPLES / "xc563936.mp3", rate) * 0.5
    clips = [
        _load(EXAMPLES / n, rate)
        for n in (
            "firetruck.ogg",
            "saw.ogg",
            "dog.ogg",
            "fireworks.ogg",
            "blackbird.ogg",
            "owl.ogg",
        )
    ]
    total = int(seconds * rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16", format="WAV") as f:
        written = 0
        while written < total:
            chunk = base.copy()
            for _ in range(2):
                clip = clips[rng.integers(len(clips))]
                at = int(rng.integers(0, max(1, len(chunk) - len(clip))))
                chunk[at : at + len(clip)] += clip[: len(chunk) - at] * 0.4
            chunk = np.clip(chunk[: total - written], -1, 1)
            f.write(chunk)
            written += len(chunk)
    return path


class ScratchDatabase:
    """An embedded PostgreSQL in a temporary SOUNDSCAPE_HOME, migrated, with one sensor.

    With ``home``, that folder is used and kept (the server is stopped on close, the data
    stays), so a later run with the same ``home`` finds what an earlier one loaded."""

    def __init__(self, home: Path | None = None) -> None:
        # SIGTERM (kill, timeout) runs the caller's `finally: close()` like Ctrl-C does, so the
        # server (with its GBs of shared buffers) and its data directory never outlive the run.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        self.keep = home is not None
        fresh = home is None or not (home / "ready").exists()
        if home is None:
            home = Path(tempfile.mkdtemp(prefix="soundscape-bench-"))
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.home.chmod(0o711)  # run as root, the server's system user must traverse it
        os.environ["SOUNDSCAPE_HOME"] = str(self.home)
        os.environ.pop("SOUNDSCAPE_DATABASE_URL", None)
        from soundscape.db import open_database
        from soundscape.sensors import add_sensor

        self.db = open_database(None)
        if fresh:
            with self.db.engine.begin() as conn:
                add_sensor(conn, "bench", site="Bench", quadrant="N", timezone="Europe/Berlin")
            (self.home / "ready").write_text("ok")
        self.url = self.db.url

    def close(self) -> None:
        from soundscape import server

        self.db.engine.dispose()
        server.stop()
        if not self.keep:
            subprocess.run(["rm", "-rf", str(self.home)], check=False)


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}", file=sys.stderr)
    return out
