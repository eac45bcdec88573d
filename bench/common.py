"""Shared pieces of the benchmarks: machine facts, a real-ish long recording, a scratch database,
the measurements several benchmarks make (end-to-end ingest timing, medians against a peer, the
peak memory of an ingest in a fresh process) and JSON results. Benchmarks run on demand
(`make bench`), never in CI."""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
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


def load_mono(path: Path, rate: int) -> np.ndarray:
    """A whole file, mixed to mono and resampled to ``rate`` (float32)."""
    data, r = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    return soxr.resample(mono, r, rate).astype(np.float32) if r != rate else mono


def write_looped(path: Path, parts: Sequence[np.ndarray], seconds: float, rate: int) -> Path:
    """``parts`` (mono, at ``rate``) one after the other, looped to ``seconds``; written block by
    block as 16-bit mono WAV. An existing file of that length is kept."""
    if path.exists() and abs(sf.info(str(path)).duration - seconds) < 1:
        return path
    total = int(seconds * rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16", format="WAV") as f:
        written, i = 0, 0
        while written < total:
            chunk = parts[i % len(parts)][: total - written]
            f.write(chunk)
            written += len(chunk)
            i += 1
    return path


def make_recording(path: Path, seconds: float, rate: int = 44100, seed: int = 0) -> Path:
    """The real forest soundscape looped to ``seconds``, with real clips (siren, saw, dog,
    fireworks, birds) mixed in at random places; written block by block as 16-bit WAV."""
    if path.exists() and abs(sf.info(str(path)).duration - seconds) < 1:
        return path
    rng = np.random.default_rng(seed)
    base = load_mono(EXAMPLES / "xc563936.mp3", rate) * 0.5
    clips = [
        load_mono(EXAMPLES / n, rate)
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
        from soundscape import embedded_db

        self.db.engine.dispose()
        embedded_db.stop()
        if not self.keep:
            subprocess.run(["rm", "-rf", str(self.home)], check=False)


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, this process's CPU seconds over all threads, ``fn()``)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def end_to_end(engine, path: Path, models: list[str]) -> tuple[float, float, int]:
    """One ``Ingestor.ingest_file`` (decode ... COPY, commit; ``--replace``) of ``path`` for the
    sensor ``bench``: (wall s, CPU s, windows or utterances stored)."""
    from soundscape.ingest import Ingestor

    ingestor = Ingestor(engine, "bench", models, replace=True)
    wall, cpu, result = timed(lambda: ingestor.ingest_file(path))
    assert result.status == "stored", result.reason  # type: ignore[attr-defined]
    return wall, cpu, sum(result.segments.values())  # type: ignore[attr-defined]


def medians(runs: dict[str, list[tuple]]) -> dict[str, tuple[float, float]]:
    """Per kind of run, the median (wall, CPU) of its ``timed`` runs (kinds without runs left out)."""
    return {
        name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
        for name, rs in runs.items()
        if rs
    }


def against_peer(audio_s: float, med: dict[str, tuple[float, float]]) -> dict:
    """× real time of ``end_to_end`` and ``peer`` (wall and per CPU-second) and their ratios
    (> 1: soundscape is faster), from ``medians``."""
    e2e, peer = med["end_to_end"], med["peer"]
    return {
        "end_to_end_x_realtime": audio_s / e2e[0],
        "end_to_end_x_realtime_per_cpu_s": audio_s / e2e[1],
        "peer_x_realtime": audio_s / peer[0],
        "peer_x_realtime_per_cpu_s": audio_s / peer[1],
        "ratio_end_to_end_to_peer_wall": peer[0] / e2e[0],
        "ratio_end_to_end_to_peer_cpu": peer[1] / e2e[1],
    }


#: Run in a fresh interpreter: the soundscape CLI, then the process's own peak resident memory
#: (VmHWM of /proc/self/status, the high-water mark of its own memory map) on stderr.
#: Not ru_maxrss: a child started by subprocess (fork or vfork, then exec) inherits its parent's
#: peak there, so a benchmark that had loaded models before would inflate the child's figure.
_PEAK_CHILD = (
    "import json, sys\n"
    "from soundscape.cli import main\n"
    "code = 0\n"
    "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
    "print(json.dumps({'vmhwm_kb': int(hwm.split()[1]), 'exit': code}), file=sys.stderr)\n"
)


def cli_peak_memory(args: Sequence[str]) -> dict:
    """Run ``soundscape ARGS`` in a fresh interpreter: its own peak RSS (MiB), exit code, wall."""
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_CHILD, *args], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - t
    try:
        last = json.loads(proc.stderr.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"soundscape {' '.join(args)} failed:\n{proc.stderr[-3000:]}") from None
    return {
        "peak_rss_mib": round(last["vmhwm_kb"] / 1024, 1),
        "exit": last["exit"],
        "wall_s": round(wall, 1),
    }


def ingest_memory(models: str, files: dict[str, Path]) -> dict:
    """Peak memory of ``soundscape ingest FILE -m MODELS --replace`` in a fresh process, per
    file (keys as given), into a scratch database; with the load average after each run."""
    db = ScratchDatabase()
    out: dict = {}
    try:
        for key, path in files.items():
            audio_s = sf.info(str(path)).duration
            run = cli_peak_memory(
                ["ingest", str(path), "-s", "bench", "-m", models, "--replace", "-q", "-d", db.url]
            )
            run["x_realtime"] = round(audio_s / run["wall_s"], 1)
            run["load_avg"] = os.getloadavg()
            out[key] = run
            print(json.dumps({key: run}), file=sys.stderr)
    finally:
        db.close()
    return out


def run_parts(name: str, parts: dict[str, Callable[[], dict]]) -> Path:
    """Machine facts, then each part in order, with the load average before and after, written
    as ``bench/results/<name>-<time>.json``."""
    result: dict = {"machine": machine(), "loadavg_before": os.getloadavg()}
    for key, part in parts.items():
        result[key] = part()
    result["loadavg_after"] = os.getloadavg()
    return write_result(name, result)


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}", file=sys.stderr)
    return out
