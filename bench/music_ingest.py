"""MusiCNN ingest: × real time against BirdNET in the same run, and peak memory vs file length.

    python bench/music_ingest.py [--minutes 3] [--repeat 2] [--memory 2,8]

1. Throughput on the real-ish recording of bench/ingest.py (the forest soundscape looped with
   real clips mixed in, 44.1 kHz WAV, so both models resample): the model alone on exactly
   the windows ingest gives it, and end to end (decode, resample, window, embed, class
   scores, binary COPY, commit); BirdNET measured in the same run, interleaved, as the peer.
2. CPU time per window with one inference thread (process time: barely changed by other
   people's load on a shared machine), for each model: the load-independent comparison.
3. Memory (--memory MINUTES,...): peak RSS of `soundscape ingest -m musicnn` in a fresh
   process for files of those lengths; flat in file length is the goal.
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
    machine,
    make_recording,
    write_result,
)
from ingest import model_only  # noqa: E402

DATA = Path("/tmp/soundscape-bench-audio")


def throughput(args: argparse.Namespace) -> dict:
    from soundscape.embedders import get_model_class, load_model

    path = make_recording(DATA / f"forest_{args.minutes}min.wav", args.minutes * 60)
    audio_s = sf.info(str(path)).duration
    names = args.models.split(",")
    db = ScratchDatabase()
    out: dict = {"file": str(path), "audio_s": audio_s, "models": {}}
    runs: dict[str, dict[str, list[float]]] = {n: {"model": [], "end_to_end": []} for n in names}
    models = {}
    try:
        for name in names:
            cls = get_model_class(name)
            model = load_model(name)
            window = model.window_samples(cls.default_window_s)
            t = time.perf_counter()
            model.embed_audio_and_scores(np.zeros((1, window), np.float32))
            out["models"][name] = {"first_call_s": round(time.perf_counter() - t, 2)}
            models[name] = (cls, model)
        for _ in range(args.repeat):  # interleaved, so load changes hit both models alike
            for name, (cls, model) in models.items():
                w, h = cls.default_window_s, cls.default_hop_s
                runs[name]["model"].append(model_only(path, model, w, h))
                wall, _, n = end_to_end(db.db.engine, path, [name])
                runs[name]["end_to_end"].append(wall)
                out["models"][name]["windows"] = n
        for name, r in runs.items():
            mod, e2e = statistics.median(r["model"]), statistics.median(r["end_to_end"])
            out["models"][name].update(
                model_only_x_realtime=round(audio_s / mod, 2),
                end_to_end_x_realtime=round(audio_s / e2e, 2),
                windows_per_s=round(out["models"][name]["windows"] / e2e, 2),
                ratio_end_to_end_to_model=round(mod / e2e, 3),
                runs_s=r,
            )
        if len(names) > 1:
            a, b = names[0], names[1]
            out[f"{a}_over_{b}_end_to_end"] = round(
                out["models"][a]["end_to_end_x_realtime"]
                / out["models"][b]["end_to_end_x_realtime"],
                3,
            )
        print(json.dumps(out, indent=1), file=sys.stderr)
    finally:
        db.close()
    return out


def cpu_time(args: argparse.Namespace) -> dict:
    """CPU seconds per window with one inference thread (process time, so other people's load
    on the machine barely changes it): the load-independent cost of each model."""
    from soundscape.audio import WindowStream
    from soundscape.embedders import get_model_class, load_model

    path = make_recording(DATA / f"forest_{args.minutes}min.wav", args.minutes * 60)
    saved = os.environ.get("SOUNDSCAPE_THREADS")
    os.environ["SOUNDSCAPE_THREADS"] = "1"
    out: dict = {}
    try:
        for name in args.models.split(","):
            cls = get_model_class(name)
            model = load_model(name)  # a fresh instance: BirdNET reads the threads at load
            w, h = cls.default_window_s, cls.default_hop_s
            stream = WindowStream(path, cls.sample_rate, w, h, batch_size=model.batch_size)
            batches = [b.samples for b, _ in zip(stream, range(2))]
            model.embed_audio_and_scores(batches[0][:1])
            spent, n = [], 0
            for _ in range(args.repeat):
                for batch in batches:
                    t = time.process_time()
                    model.embed_audio_and_scores(batch)
                    spent.append((time.process_time() - t) / len(batch))
                    n += len(batch)
            per_window = statistics.median(spent)
            out[name] = {
                "cpu_s_per_window": round(per_window, 4),
                "one_core_x_realtime": round(h / per_window, 2),
                "windows": n,
            }
        names = list(out)
        if len(names) > 1:
            a, b = names[0], names[1]
            out[f"{a}_over_{b}"] = round(
                out[a]["one_core_x_realtime"] / out[b]["one_core_x_realtime"], 3
            )
        print(json.dumps({"cpu": out}), file=sys.stderr)
    finally:
        if saved is None:
            os.environ.pop("SOUNDSCAPE_THREADS", None)
        else:
            os.environ["SOUNDSCAPE_THREADS"] = saved
    return out


def memory(args: argparse.Namespace) -> dict:
    files = {
        f"{m}min": make_recording(DATA / f"forest_{m}min.wav", m * 60)
        for m in (int(m) for m in args.memory.split(","))
    }
    return ingest_memory("musicnn", files)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=int, default=3)
    p.add_argument(
        "--models", default="musicnn,birdnet", help="the first is measured, the rest are peers"
    )
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--memory", default="", help="file lengths in minutes, e.g. 2,8")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-cpu", action="store_true")
    args = p.parse_args()
    result: dict = {"machine": machine()}
    if not args.skip_throughput:
        result["throughput"] = throughput(args)
    if not args.skip_cpu:
        result["cpu"] = cpu_time(args)
    if args.memory:
        result["memory"] = memory(args)
    result["load_avg_at_end"] = os.getloadavg()
    print(write_result("musicnn", result), file=sys.stderr)


if __name__ == "__main__":
    main()
