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
   lengths of each file (the child's own VmHWM, bench/common.cli_peak_memory); the goal is
   flat in file length.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ScratchDatabase,
    against_peer,
    end_to_end,
    ingest_memory,
    load_mono,
    make_recording,
    medians,
    run_parts,
    timed,
    write_looped,
)

DATA = Path("/tmp/soundscape-bench-audio")
PODCAST = Path(__file__).resolve().parents[2] / "shared" / "audio" / "podcast" / "podcast.wav"
RATE = 16000


def make_podcast(path: Path, seconds: float) -> Path:
    """The podcast looped to ``seconds`` (16 kHz mono WAV)."""
    return write_looped(path, [load_mono(PODCAST, RATE)], seconds, RATE)


def peer(path: Path, encoder) -> tuple[float, float, int]:
    """Resemblyzer alone: decode the whole file, then preprocess + embed every 2 s window."""
    from resemblyzer import preprocess_wav

    def run() -> int:
        mono = load_mono(path, RATE)
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
                e2e.append(end_to_end(db.db.engine, path, ["voice"]))
                ref.append(peer(path, encoder))
                if kind == "speech":
                    floor.append(model_only(path, model))
            runs = {"end_to_end": e2e, "peer": ref, "model_only": floor}
            med = medians(runs)
            res = {
                "file": str(path),
                "audio_s": audio_s,
                "voice_windows": e2e[0][2],
                "peer_windows": ref[0][2],
                **against_peer(audio_s, med),
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


def memory(args) -> dict:
    files: dict[str, Path] = {}
    if "speech" in args.kinds:
        for m in (1, 4):
            files[f"speech_{m}min"] = make_podcast(DATA / f"podcast_{m}min.wav", m * 60)
    if "soundscape" in args.kinds:
        for m in (3, 12):
            files[f"soundscape_{m}min"] = make_recording(DATA / f"forest_{m}min.wav", m * 60)
    return ingest_memory("voice", files)


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
    parts = {}
    if not args.skip_throughput:
        parts["throughput"] = lambda: throughput(args)
    if args.memory:
        parts["memory"] = lambda: memory(args)
    run_parts("voice", parts)


if __name__ == "__main__":
    main()
