"""Speech benchmarks: whisper ingest x real time on speech and on a soundscape without speech,
against faster-whisper's own VAD + transcribe in the same run, and peak memory vs file length.

    python bench/speech.py [--speech-minutes 5] [--forest-minutes 10] [--repeat 2] [--memory]

1. Throughput: end to end (`Ingestor(..., ["whisper"])`: streaming decode, Silero VAD,
   transcription of the speech only, utterances stored and committed) on
   - speech: the podcast and "A Tale of Two Cities" (real read speech) looped to N minutes,
     16 kHz WAV; goal >= 10x real time on 2 cores;
   - a soundscape without speech: the forest soundscape looped with clips (siren, saw, dog,
     fireworks, birds) mixed in, 44.1 kHz WAV (bench/common.make_recording); goal >= 100x.
   The peer is what a user of faster-whisper would run: the whole file decoded into memory,
   `WhisperModel.transcribe(..., vad_filter=True, word_timestamps=True)` with the same model
   and decoding settings. Runs are interleaved (load changes hit both alike); medians. Wall
   time and the process's CPU time (all threads) are both reported: the machine is shared.
2. Memory (--memory): peak RSS of `soundscape ingest -m whisper` in a fresh process for two
   lengths of each file (the child's own VmHWM, bench/common.cli_peak_memory); the goal is
   flat in file length.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
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
PODCAST = Path(__file__).resolve().parents[2] / "shared" / "audio" / "podcast"


def make_speech(path: Path, seconds: float, rate: int = 16000) -> Path:
    """The podcast and the two-cities reading, alternating, looped to ``seconds`` (16 kHz)."""
    parts = [load_mono(PODCAST / name, rate) for name in ("podcast.wav", "two_cities.wav")]
    return write_looped(path, parts, seconds, rate)


def peer(path: Path) -> tuple[float, float, int]:
    """faster-whisper alone: decode the whole file, its own VAD filter, transcribe."""
    from soundscape.transcribers.whisper import DECODING, _model, weights_path
    from soundscape.vad import SAMPLE_RATE

    model = _model(str(weights_path()), 2)

    def run() -> int:
        mono = load_mono(path, SAMPLE_RATE)
        segments, _ = model.transcribe(mono, language="en", vad_filter=True, **DECODING)
        return len(list(segments))

    wall, cpu, n = timed(run)
    return wall, cpu, int(n)  # type: ignore[arg-type]


def vad_only(path: Path) -> tuple[float, float, float]:
    from soundscape.speech import SpeechStream

    stream = SpeechStream(path)
    wall, cpu, _ = timed(lambda: sum(1 for _ in stream))
    return wall, cpu, stream.speech_s


def throughput(args) -> dict:
    from soundscape.transcribers import load_transcriber

    files = {
        "speech": make_speech(DATA / f"speech_{args.speech_minutes}min.wav",
                              args.speech_minutes * 60),
        "soundscape": make_recording(DATA / f"forest_{args.forest_minutes}min.wav",
                                     args.forest_minutes * 60),
    }  # fmt: skip
    load_transcriber("whisper").transcribe(np.zeros(16000, np.float32))  # load the weights
    db = ScratchDatabase()
    out: dict = {}
    try:
        for kind, path in files.items():
            audio_s = sf.info(str(path)).duration
            vad = [vad_only(path) for _ in range(args.repeat)]
            e2e, ref = [], []
            for _ in range(args.repeat):  # interleaved
                e2e.append(end_to_end(db.db.engine, path, ["whisper"]))
                ref.append(peer(path))
            runs = {"end_to_end": e2e, "peer": ref, "vad": vad}
            med = medians(runs)
            res = {
                "file": str(path),
                "audio_s": audio_s,
                "speech_s": vad[0][2],
                "utterances": e2e[0][2],
                "peer_segments": ref[0][2],
                **against_peer(audio_s, med),
                "vad_x_realtime": audio_s / med["vad"][0],
                "runs": runs,
            }
            out[kind] = res
            print(json.dumps({kind: {k: v for k, v in res.items() if k != "runs"}}, indent=1))
    finally:
        db.close()
    return out


def memory(args) -> dict:
    files = {f"speech_{m}min": make_speech(DATA / f"speech_{m}min.wav", m * 60) for m in (3, 9)}
    for m in (20, 60):
        files[f"soundscape_{m}min"] = make_recording(DATA / f"forest_{m}min.wav", m * 60)
    return ingest_memory("whisper", files)


def search_scale(n: int, repeat: int = 20) -> dict:
    """``ranger.search_speech`` on ``n`` synthetic utterances (6-15 words: 60 % drawn from the
    podcast's words without its 12 keywords, each then in about 8 % of the utterances, the rest
    from 20,000 random words; "bitcoin" put in 0.1 %): latency of rare, common, phrase,
    exclusion, fuzzy and filtered queries, median and p95 of ``repeat`` runs."""
    import sqlalchemy as sa

    rng = np.random.default_rng(0)
    truth = json.loads((PODCAST / "truth.json").read_text())
    keywords = {s["keyword"] for s in truth["sentences"]}
    common = sorted(
        {w.strip(".,").lower() for s in truth["sentences"] for w in s["text"].split()} - keywords
    )
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    rare = ["".join(rng.choice(letters, rng.integers(4, 10))) for _ in range(20000)]
    db = ScratchDatabase()
    out: dict = {"utterances": n}
    try:
        engine = db.db.engine
        with engine.begin() as conn:
            sensor = conn.execute(sa.text("SELECT id FROM sensors WHERE name = 'bench'")).scalar()
            rec = conn.execute(
                sa.text(
                    "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                    "sample_rate, channels, duration_s) VALUES (:s, '/bench/speech.wav', "
                    "repeat('0', 64), 0, 'wav', 16000, 1, :d) RETURNING id"
                ),
                {"s": sensor, "d": n * 5.0},
            ).scalar()
            tid = conn.execute(
                sa.text(
                    "INSERT INTO transcripts (recording_id, model, model_version) "
                    "VALUES (:r, 'whisper', 'bench') RETURNING id"
                ),
                {"r": rec},
            ).scalar()
        t0 = time.perf_counter()
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            with cur.copy(
                "COPY utterances (transcript_id, recording_id, sensor_id, start_s, end_s, "
                "starts_at, local_date, local_time, text, words) FROM STDIN"
            ) as copy:
                for i in range(n):
                    k = int(rng.integers(6, 16))
                    words = [
                        common[rng.integers(len(common))] if rng.random() < 0.6
                        else rare[rng.integers(len(rare))]
                        for _ in range(k)
                    ]  # fmt: skip
                    if rng.random() < 0.001:
                        words[int(rng.integers(k))] = "bitcoin"
                    start = i * 5.0
                    at = "2024-05-01T00:00:00+00:00"
                    js = json.dumps(
                        [{"w": w, "s": start + j * 0.3, "e": start + j * 0.3 + 0.25}
                         for j, w in enumerate(words)]
                    )  # fmt: skip
                    copy.write_row(
                        (tid, rec, sensor, start, start + k * 0.3, at,
                         f"2024-05-{1 + (i * 31) // n:02d}", f"{(i * 7) % 24:02d}:00:00",
                         " ".join(words), js)
                    )  # fmt: skip
            raw.commit()
        finally:
            raw.close()
        with engine.begin() as conn:  # the vocabulary ingest keeps (speech.add_vocabulary)
            conn.execute(
                sa.text(
                    "INSERT INTO speech_words (word) SELECT DISTINCT lower(regexp_replace("
                    "w ->> 'w', '[^[:alnum:]]', '', 'g')) FROM utterances, "
                    "jsonb_array_elements(words) w"
                )
            )
            conn.execute(sa.text("ANALYZE utterances"))
            conn.execute(sa.text("ANALYZE speech_words"))
        out["load_s"] = round(time.perf_counter() - t0, 1)
        queries = {
            "rare word (bitcoin, 0.1 %)": ("bitcoin", {}),
            "common word (captain, ~8 %)": ("captain", {}),
            'phrase ("late goal")': ('"late goal"', {}),
            "exclusion (captain -goal)": ("captain -goal", {}),
            "fuzzy only (bit coin)": ("bit coin", {}),
            "fuzzy, a common word misspelt (captainn)": ("captainn", {}),
            "rare word, --time 22:00-04:00": ("bitcoin", {"tf": "22:00", "tt": "04:00"}),
        }
        with engine.connect() as conn:
            for name, (q, f) in queries.items():
                times, rows = [], 0
                for _ in range(repeat):
                    t = time.perf_counter()
                    rows = len(
                        conn.execute(
                            sa.text(
                                "SELECT * FROM ranger.search_speech(:q, 10, p_time_from => "
                                "CAST(:tf AS time), p_time_to => CAST(:tt AS time))"
                            ),
                            {"q": q, "tf": f.get("tf"), "tt": f.get("tt")},
                        ).all()
                    )
                    times.append((time.perf_counter() - t) * 1000)
                times.sort()
                out[name] = {
                    "hits": rows,
                    "p50_ms": round(statistics.median(times), 1),
                    "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
                }
                print(json.dumps({name: out[name]}), file=sys.stderr)
    finally:
        db.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--speech-minutes", type=int, default=5)
    p.add_argument("--forest-minutes", type=int, default=10)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--memory", action="store_true", help="also measure peak RSS vs length")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--search", type=int, default=0, metavar="N",
                   help="also time ranger.search_speech on N synthetic utterances")  # fmt: skip
    args = p.parse_args()
    parts = {}
    if not args.skip_throughput:
        parts["throughput"] = lambda: throughput(args)
    if args.memory:
        parts["memory"] = lambda: memory(args)
    if args.search:
        parts["search"] = lambda: search_scale(args.search)
    run_parts("speech", parts)


if __name__ == "__main__":
    main()
