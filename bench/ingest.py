"""Ingest benchmarks: throughput against the model-only floor, and peak memory vs file length.

    python bench/ingest.py [--minutes 60] [--models birdnet,spectral] [--repeat 3] [--memory]

1. Throughput (audio seconds per wall second) on a real-ish recording (the forest soundscape
   looped, real clips mixed in, 44.1 kHz WAV so the models must resample):
   decode only, decode + mono + resample + windowing, the model alone on the same windows
   (the floor), and end to end (decode, resample, window, embed, binary COPY, commit).
   The goal is end-to-end >= 0.8 x model-only, measured in the same run (medians).
2. Memory (--memory): peak RSS of `soundscape ingest` in a fresh process for 1-hour and
   2-hour files (the child's own VmHWM, bench/common.cli_peak_memory); the goal is < 1.5 GB
   and flat in file length.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ScratchDatabase,
    end_to_end,
    ingest_memory,
    make_recording,
    run_parts,
)

DATA = Path("/tmp/soundscape-bench-audio")


def decode_only(path: Path) -> float:
    t = time.perf_counter()
    with sf.SoundFile(path) as f:
        for block in f.blocks(blocksize=f.samplerate * 30, dtype="float32", always_2d=True):
            block.mean(axis=1)
    return time.perf_counter() - t


def windows_only(path: Path, rate: int, window: float, hop: float, batch: int) -> float:
    from soundscape.audio import WindowStream

    t = time.perf_counter()
    for _ in WindowStream(path, rate, window, hop, batch_size=batch):
        pass
    return time.perf_counter() - t


def model_only(path: Path, model, window: float, hop: float) -> tuple[float, float]:
    """Time the model alone on exactly the windows ingest gives it: (wall s, CPU s of this
    process over all threads)."""
    from soundscape.audio import WindowStream

    spent = cpu = 0.0
    for batch in WindowStream(path, model.sample_rate, window, hop, batch_size=model.batch_size):
        t, c = time.perf_counter(), time.process_time()
        model.embed_audio_and_scores(batch.samples)
        spent += time.perf_counter() - t
        cpu += time.process_time() - c
    return spent, cpu


def throughput(args) -> dict:
    from soundscape.embedders import get_model_class, load_model

    path = make_recording(DATA / f"forest_{args.minutes}min.wav", args.minutes * 60)
    audio_s = sf.info(str(path)).duration
    db = ScratchDatabase()
    out: dict = {"file": str(path), "audio_s": audio_s, "models": {}}
    try:
        dec = [decode_only(path) for _ in range(args.repeat)]
        out["decode_x_realtime"] = audio_s / statistics.median(dec)
        for name in args.models.split(","):
            cls = get_model_class(name)
            model = load_model(name)
            w, h = cls.default_window_s, cls.default_hop_s
            model.embed_audio_and_scores(np.zeros((1, model.window_samples(w)), np.float32))
            res: dict = {"window_s": w, "hop_s": h, "batch_size": model.batch_size}
            win = [
                windows_only(path, cls.sample_rate, w, h, model.batch_size)
                for _ in range(args.repeat)
            ]
            mod, e2e, mod_cpu, e2e_cpu = [], [], [], []
            for _ in range(args.repeat):  # interleaved, so load changes hit both alike
                m_wall, m_cpu = model_only(path, model, w, h)
                mod.append(m_wall)
                mod_cpu.append(m_cpu)
                wall, cpu, n = end_to_end(db.db.engine, path, [name])
                e2e.append(wall)
                e2e_cpu.append(cpu)
            res.update(
                windows=n,
                decode_resample_window_x_realtime=audio_s / statistics.median(win),
                model_only_x_realtime=audio_s / statistics.median(mod),
                end_to_end_x_realtime=audio_s / statistics.median(e2e),
                ratio_end_to_end_to_model=statistics.median(mod) / statistics.median(e2e),
                # audio seconds per CPU-second of this process (all its threads; the server's
                # COPY is not in it): what the cores would give without other work on them
                model_only_x_realtime_per_cpu_s=audio_s / statistics.median(mod_cpu),
                end_to_end_x_realtime_per_cpu_s=audio_s / statistics.median(e2e_cpu),
                cores=len(os.sched_getaffinity(0)),
                runs_s={
                    "windows": win,
                    "model": mod,
                    "end_to_end": e2e,
                    "model_cpu": mod_cpu,
                    "end_to_end_cpu": e2e_cpu,
                },  # fmt: skip
            )
            out["models"][name] = res
            print(json.dumps({name: {k: v for k, v in res.items() if k != "runs_s"}}, indent=1))
    finally:
        db.close()
    return out


def memory(args) -> dict:
    files = {f"{m}min": make_recording(DATA / f"forest_{m}min.wav", m * 60) for m in (60, 120)}
    return ingest_memory(args.models, files)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=int, default=60)
    p.add_argument("--models", default="birdnet,spectral")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--memory", action="store_true", help="also measure peak RSS (1 h and 2 h)")
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    parts = {}
    if not args.skip_throughput:
        parts["throughput"] = lambda: throughput(args)
    if args.memory:
        parts["memory"] = lambda: memory(args)
    run_parts("ingest", parts)


if __name__ == "__main__":
    main()
