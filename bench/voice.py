"""Voice benchmarks: voice ingest x real time on speech and on a soundscape without speech,
against Resemblyzer's own way of embedding the same windows in the same run, and peak memory
vs file length.

    python bench/voice.py [--speech-minutes 2] [--forest-minutes 3] [--repeat 2] [--memory]

1. Throughput: end to end (`Ingestor(..., ["voice"])`: streaming decode, Silero VAD per batch
   of windows, the speech windows embedded, COPY, commit) on
   - speech: the podcast looped to N minutes, 16 kHz WAV;
   - a soundscape without speech: the forest soundscape looped with clips (siren, saw, dog,
     fireworks, birds) mixed in, 44.1 kHz WAV (bench/common.make_recording).
   The peer is what a user of Resemblyzer would write for the same 2 s / 1 s windows: the file
   decoded into memory, then per window `preprocess_wav` + `VoiceEncoder.embed_utterance`
   (no VAD: every window embedded). The model-only floor is the voice model's
   `embed_audio` on the speech windows ingest keeps. Runs are interleaved (load changes hit
   both alike); medians. Wall time and the process's CPU time (all threads) are reported: the
   machine is shared with other work.
2. Memory (--memory): peak RSS of `soundscape ingest -m voice` in a fresh process for two
   lengths of each file; the goal is flat in file length.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ScratchDatabase, machine, make_recording, write_result  # noqa: E402

DATA = Path("/tmp/soundscape-bench-audio")
PODCAST = Path(__file__).resolve().parents[2] / "shared" / "audio" / "podcast" / "podcast.wav"
RATE = 16000


def make_podcast(path: Path, seconds: float) -> Path:
    """The podcast looped to ``seconds`` (16 kHz mono WAV)."""
    if path.exists() and abs(sf.info(str(path)).duration - seconds) < 1:
        return path
    x, r = sf.read(PODCAST, dtype="float32", always_2d=True)
    mono = x.mean(axis=1)
    if r != RATE:
        mono = soxr.resample(mono, r, RATE).astype(np.float32)
    total = int(seconds * RATE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(path, "w", samplerate=RATE, channels=1, subtype="PCM_16", format="WAV") as f:
        written = 0
        while written < total:
            chunk = mono[: total - written]
            f.write(chunk)
            written += len(chunk)
    return path


def timed(fn) -> tuple[float, float, object]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def end_to_end(engine, path: Path) -> tuple[float, float, int]:
    from soundscape.ingest import Ingestor

    ingestor = Ingestor(engine, "bench", ["voice"], replace=True)
    wall, cpu, result = timed(lambda: ingestor.ingest_file(path))
    assert result.status == "stored", result.reason  # type: ignore[attr-defined]
    return wall, cpu, sum(result.segments.values())  # type: ignore[attr-defined]


def peer(path: Path, encoder) -> tuple[float, float, int]:
    """Resemblyzer alone: decode the whole file, then preprocess + embed every 2 s window."""
    from resemblyzer import preprocess_wav

    def run() -> int:
        x, r = sf.read(path, dtype="float32", always_2d=True)
        mono = x.mean(axis=1)
        if r != RATE:
            mono = soxr.resample(mono, r, RATE).astype(np.float32)
        n = 0
        for start in range(0, max(1, len(mono) - RATE), RATE):
            window = mono[start : start + 2 * RATE]
            wav = preprocess_wav(window, source_sr=None)
            if len(wav) == 0:
                wav = window
            encoder.embed_utterance(wav)
            n += 1
        return n

    wall, cpu, n = timed(run)
    return wall, cpu, int(n)  # type: ignore[arg-type]


def model_only(path: Path, model) -> tuple[float, float, int]:
    """The voice model's embed_audio on exactly the windows ingest keeps (VAD not timed)."""
    from soundscape.audio import WindowStream

    kept = [
        b.subset(model.select_windows(b.samples, b.start_s))
        for b in WindowStream(path, RATE, 2.0, 1.0, batch_size=model.batch_size)
    ]
    wall, cpu, _ = timed(lambda: [model.embed_audio(b.samples) for b in kept if len(b)])
    return wall, cpu, sum(len(b) for b in kept)


def throughput(args) -> dict:
    from soundscape.embedders import load_model
    from soundscape.embedders.birdnet import inference_threads

    files = {
        "speech": make_podcast(DATA / f"podcast_{args.speech_minutes}min.wav",
                               args.speech_minutes * 60),
        "soundscape": make_recording(DATA / f"forest_{args.forest_minutes}min.wav",
                                     args.forest_minutes * 60),
    }  # fmt: skip
    files = {kind: path for kind, path in files.items() if kind in args.kinds}
    model = load_model("voice")
    model.embed_audio(np.zeros((1, 2 * RATE), np.float32))  # load the weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import torch
        from resemblyzer import VoiceEncoder

        torch.set_num_threads(inference_threads())
        encoder = VoiceEncoder("cpu", verbose=False)
    db = ScratchDatabase()
    out: dict = {}
    try:
        for kind, path in files.items():
            audio_s = sf.info(str(path)).duration
            e2e, ref, floor = [], [], []
            for _ in range(args.repeat):  # interleaved
                e2e.append(end_to_end(db.db.engine, path))
                ref.append(peer(path, encoder))
                if kind == "speech":
                    floor.append(model_only(path, model))
            runs = {"end_to_end": e2e, "peer": ref, "model_only": floor}
            med = {
                name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
                for name, rs in runs.items()
                if rs
            }
            res = {
                "file": str(path),
                "audio_s": audio_s,
                "voice_windows": e2e[0][2],
                "peer_windows": ref[0][2],
                "end_to_end_x_realtime": audio_s / med["end_to_end"][0],
                "end_to_end_x_realtime_per_cpu_s": audio_s / med["end_to_end"][1],
                "peer_x_realtime": audio_s / med["peer"][0],
                "peer_x_realtime_per_cpu_s": audio_s / med["peer"][1],
                "ratio_end_to_end_to_peer_wall": med["peer"][0] / med["end_to_end"][0],
                "ratio_end_to_end_to_peer_cpu": med["peer"][1] / med["end_to_end"][1],
                "runs": runs,
            }
            if "model_only" in med:
                res["model_only_x_realtime"] = audio_s / med["model_only"][0]
                res["ratio_end_to_end_to_model_only_wall"] = (
                    med["model_only"][0] / med["end_to_end"][0]
                )
            out[kind] = res
            print(json.dumps({kind: {k: v for k, v in res.items() if k != "runs"}}, indent=1))
    finally:
        db.close()
    return out


#: the child's own peak (VmHWM): ru_maxrss of a child started by subprocess inherits the
#: parent's peak (docs/benchmarks.md, Music: MusiCNN)
MEASURE = (
    "import sys, json\n"
    "from soundscape.cli import main\n"
    "try:\n    main()\n    code = 0\nexcept SystemExit as e:\n    code = e.code\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
    "print(json.dumps({'maxrss_kb': int(hwm.split()[1]), 'exit': code}), file=sys.stderr)\n"
)


def memory(args) -> dict:
    db = ScratchDatabase()
    out: dict = {}
    lengths = {
        "speech": [(m, make_podcast(DATA / f"podcast_{m}min.wav", m * 60)) for m in (1, 4)],
        "soundscape": [(m, make_recording(DATA / f"forest_{m}min.wav", m * 60)) for m in (3, 12)],
    }
    lengths = {kind: files for kind, files in lengths.items() if kind in args.kinds}
    try:
        for kind, files in lengths.items():
            for minutes, path in files:
                t = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-c", MEASURE, "ingest", str(path), "-s", "bench",
                     "-m", "voice", "--replace", "-q", "-d", db.url],
                    capture_output=True, text=True,
                )  # fmt: skip
                wall = time.perf_counter() - t
                last = json.loads(proc.stderr.strip().splitlines()[-1])
                key = f"{kind}_{minutes}min"
                out[key] = {
                    "peak_rss_mib": round(last["maxrss_kb"] / 1024, 1),
                    "exit": last["exit"],
                    "wall_s": round(wall, 1),
                    "x_realtime": round(minutes * 60 / wall, 1),
                }
                print(json.dumps({key: out[key]}), file=sys.stderr)
    finally:
        db.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--speech-minutes", type=int, default=2)
    p.add_argument("--forest-minutes", type=int, default=3)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--memory", action="store_true", help="also measure peak RSS vs length")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument(
        "--kinds",
        type=lambda v: v.split(","),
        default=["speech", "soundscape"],
        help="which files: speech,soundscape",
    )
    args = p.parse_args()
    result: dict = {"machine": machine()}
    load = Path("/proc/loadavg")
    if load.exists():
        result["loadavg_before"] = load.read_text().split()[:3]
    if not args.skip_throughput:
        result["throughput"] = throughput(args)
    if args.memory:
        result["memory"] = memory(args)
    if load.exists():
        result["loadavg_after"] = load.read_text().split()[:3]
    write_result("voice", result)


if __name__ == "__main__":
    main()
