"""Acoustic indices ingest (`--model indices`, 60 s windows): × real time against BirdNET's
ingest in the same run, and peak memory against file length.

    python bench/indices.py [--minutes 10] [--repeat 2] [--memory 10,60]

The same measurements as bench/music_ingest.py, on the same real-ish recording (the forest
soundscape looped with real clips mixed in, 44.1 kHz WAV, so both models resample):

1. Throughput: the model alone on exactly the windows ingest gives it, and end to end
   (decode, resample to 24 kHz, window, indices, binary COPY, commit); BirdNET measured in the
   same run, interleaved, as the peer. Goal (issue 25): >= 200x real time on 2 cores.
2. CPU time per window with one thread (process time: barely changed by other people's load),
   and of the whole ingest (--e2e-cpu): audio seconds per CPU second of this process over all
   its threads, i.e. × real time on one core it had to itself; two cores do at least that.
3. Memory (--memory MINUTES,...): peak RSS (`VmHWM`) of `soundscape ingest -m indices` in a
   fresh process for files of those lengths; flat in file length is the goal.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ScratchDatabase,
    end_to_end,
    ingest_memory,
    machine,
    make_recording,
    write_result,
)
from music_ingest import DATA, cpu_time, throughput  # noqa: E402


def e2e_cpu(args: argparse.Namespace) -> dict:
    """CPU seconds of whole ingests (decode ... COPY, commit) per model: × real time per core."""
    import json
    import statistics

    import soundfile as sf

    path = make_recording(DATA / f"forest_{args.minutes}min.wav", args.minutes * 60)
    audio_s = sf.info(str(path)).duration
    db = ScratchDatabase()
    out: dict = {}
    try:
        for name in args.models.split(","):
            end_to_end(db.db.engine, path, [name])  # warm: the model loaded, caches filled
            runs = [end_to_end(db.db.engine, path, [name]) for _ in range(args.repeat)]
            cpu = statistics.median(r[1] for r in runs)
            wall = statistics.median(r[0] for r in runs)
            out[name] = {
                "cpu_s": round(cpu, 2),
                "wall_s": round(wall, 2),
                "one_core_x_realtime": round(audio_s / cpu, 1),
                "windows": runs[0][2],
            }
        print(json.dumps({"e2e_cpu": out}), file=sys.stderr)
    finally:
        db.close()
    return out


def memory(args: argparse.Namespace) -> dict:
    files = {
        f"{m}min": make_recording(DATA / f"forest_{m}min.wav", m * 60)
        for m in (int(m) for m in args.memory.split(","))
    }
    return ingest_memory("indices", files)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=int, default=10)
    p.add_argument(
        "--models", default="indices,birdnet", help="the first is measured, the rest are peers"
    )
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--memory", default="", help="file lengths in minutes, e.g. 10,60")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-cpu", action="store_true")
    p.add_argument("--e2e-cpu", action="store_true", help="CPU time of whole ingests")
    args = p.parse_args()
    result: dict = {"machine": machine()}
    if not args.skip_throughput:
        result["throughput"] = throughput(args)
    if not args.skip_cpu:
        result["cpu"] = cpu_time(args)
    if args.e2e_cpu:
        result["e2e_cpu"] = e2e_cpu(args)
    if args.memory:
        result["memory"] = memory(args)
    result["load_avg_at_end"] = os.getloadavg()
    print(write_result("indices", result), file=sys.stderr)


if __name__ == "__main__":
    main()
