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


#: the held-out podcast (issue 26): words, topics and voices no test uses; espeak-ng voices
#: (one Scottish, one West Midlands accent), ten keyword sentences
HELDOUT_VOICES = {"anchor": "en-us+m3", "reporter": "en-gb-scotland+f2", "expert": "en-gb-x-gbcwmd"}
HELDOUT = [
    ("vaccine", "anchor", "A new vaccine against malaria was approved by the health agency."),
    ("poaching", "reporter", "Poaching of rhinos has fallen since the park hired more guards."),
    ("earthquake", "expert", "The earthquake shook the coastal towns just before dawn."),
    ("pizza", "anchor", "The best pizza in the city comes from a tiny oven near the station."),
    ("telescope", "reporter", "Astronomers pointed the telescope at a distant comet last night."),
    ("volcano", "expert", "Ash from the volcano closed the airport for three days."),
    ("library", "reporter", "The village library lends books, tools and seeds to its members."),
    ("marathon", "anchor", "Thousands of runners finished the marathon despite the heat."),
    ("dolphin", "expert", "A young dolphin followed the fishing boat into the harbour."),
    ("tractor", "reporter", "The farmer parked his old tractor beside the barn at sunset."),
]
#: two takes: (words per minute, noise level relative to the speech's peak)
HELDOUT_TAKES = {"heldout_clear": (155, 0.01), "heldout_noisy": (160, 0.025)}


def make_heldout(folder: Path, name: str, rate: int = 16000) -> tuple[Path, list[dict]]:
    """A held-out podcast take: the ten sentences by three espeak-ng voices with pauses of
    1-2.5 s over a soft noise floor (16 kHz WAV), and its truth (keyword, times)."""
    import subprocess
    import tempfile

    import soxr

    wpm, noise = HELDOUT_TAKES[name]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(26)
    parts, truth, t = [np.zeros(rate, np.float32)], [], 1.0
    for keyword, who, text in HELDOUT:
        with tempfile.NamedTemporaryFile(suffix=".wav") as f:
            subprocess.run(["espeak-ng", "-v", HELDOUT_VOICES[who], "-s", str(wpm), "-w", f.name,
                            text], check=True)  # fmt: skip
            x, r = sf.read(f.name, dtype="float32")
        x = soxr.resample(x, r, rate).astype(np.float32) if r != rate else x
        loud = np.flatnonzero(np.abs(x) > 1e-3)
        x = x[loud[0] : loud[-1] + 1]
        x = 0.5 * x / np.abs(x).max()
        truth.append({"keyword": keyword, "text": text, "speaker": who,
                      "start_s": round(t, 3), "end_s": round(t + len(x) / rate, 3)})  # fmt: skip
        gap = float(rng.uniform(1.0, 2.5))
        parts += [x, np.zeros(int(gap * rate), np.float32)]
        t += len(x) / rate + gap
    y = np.concatenate(parts)
    white = rng.standard_normal(len(y)).astype(np.float32)
    floor = np.convolve(white, np.ones(16) / 16, mode="same")
    y = (y + noise * floor / floor.std()).astype(np.float32)
    path = folder / f"{name}.wav"
    sf.write(path, y, rate, subtype="PCM_16")
    (folder / f"{name}.json").write_text(json.dumps(truth, indent=1))
    return path, truth


def keywords(args) -> dict:
    """Keyword recall and precision@5 of `search --said` on the shared podcast and the held-out
    takes, transcribed by whisper tiny.en into one database: a keyword is found when the
    first hit lies in its sentence; precision@5 is the share of a keyword's hits (at most 5)
    that lie in a sentence saying it, averaged over the keywords with hits. ``--no-phonetic``
    measures the search as it was before issue 26 (phonetic route off: no doubted words)."""
    import sqlalchemy as sa

    from soundscape.speech import SpeechRequest, search_speech

    sets = {
        "podcast": (
            PODCAST / "podcast.wav",
            json.loads((PODCAST / "truth.json").read_text())["sentences"],
        )
    }
    for name in HELDOUT_TAKES:
        sets[name] = make_heldout(DATA / "heldout", name)  # type: ignore[assignment]
    db = ScratchDatabase()
    out: dict = {}
    try:
        from soundscape.ingest import Ingestor
        from soundscape.queries import Filters
        from soundscape.sensors import add_sensor

        for name, (path, _) in sets.items():  # one sensor each: the takes share their words
            with db.db.engine.begin() as conn:
                add_sensor(conn, name, site="Bench", timezone="Europe/London")
            assert Ingestor(db.db.engine, name, ["whisper"]).ingest_file(path).status == "stored"
        with db.db.engine.begin() as conn:
            if args.no_phonetic:
                conn.execute(sa.text("DELETE FROM speech_words WHERE doubtful"))
        with db.db.engine.connect() as conn:
            for name, (path, truth) in sets.items():
                found, precision, misses = 0, [], []
                for s in truth:
                    request = SpeechRequest(s["keyword"], Filters(sensors=[name]), limit=5)
                    hits = search_speech(conn, request)
                    good = [
                        h.path.endswith(path.name) and h.start_s < s["end_s"]
                        and h.end_s > s["start_s"]
                        for h in hits
                    ]  # fmt: skip
                    if good and good[0]:
                        found += 1
                    else:
                        misses.append(s["keyword"])
                    if hits:
                        precision.append(sum(good) / len(hits))
                out[name] = {
                    "found": found,
                    "keywords": len(truth),
                    "precision_at_5": round(sum(precision) / max(1, len(precision)), 3),
                    "missed": misses,
                }
                print(json.dumps({name: out[name]}), file=sys.stderr)
    finally:
        db.close()
    return out


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
                    # Whisper's word probabilities: about 15 % of the words doubted (< 0.5)
                    probs = np.clip(1.0 - rng.beta(1.0, 4.0, k) * 1.4, 0.01, 1.0)
                    js = json.dumps(
                        [{"w": w, "s": start + j * 0.3, "e": start + j * 0.3 + 0.25,
                          "p": round(float(probs[j]), 3)}
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
            conn.execute(  # and the doubted ones (migration 0035's rule)
                sa.text(
                    "INSERT INTO speech_words (word, doubtful) SELECT DISTINCT lower(regexp_replace("
                    "w ->> 'w', '[^[:alnum:]]', '', 'g')), true FROM utterances, "
                    "jsonb_array_elements(words) w WHERE ranger._speech_doubtful((w ->> 'p')::real)"
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
            # issue 26: nothing spelt alike, so the phonetic route runs (doubted words only)
            "phonetic (vaccine)": ("vaccine", {}),
            "phonetic (telescope)": ("telescope", {}),
            "phonetic, a common word's sound (kaptin: KPTN)": ("kaptin", {}),
            "phonetic, two words (voters election)": ("voters election", {}),
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
                methods = conn.execute(
                    sa.text("SELECT method, count(*) FROM ranger.search_speech(:q, 10) GROUP BY 1"),
                    {"q": q},
                ).all()
                out[name] = {
                    "hits": rows,
                    "methods": dict((m, int(c)) for m, c in methods),
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
    p.add_argument(
        "--keywords",
        action="store_true",
        help="keyword recall and precision@5 on the podcast and held-out takes",
    )
    p.add_argument(
        "--no-phonetic",
        action="store_true",
        help="--keywords without the phonetic route (as before issue 26)",
    )
    p.add_argument("--search", type=int, default=0, metavar="N",
                   help="also time ranger.search_speech on N synthetic utterances")  # fmt: skip
    args = p.parse_args()
    parts = {}
    if not args.skip_throughput:
        parts["throughput"] = lambda: throughput(args)
    if args.memory:
        parts["memory"] = lambda: memory(args)
    if args.keywords:
        parts["keywords"] = lambda: keywords(args)
    if args.search:
        parts["search"] = lambda: search_scale(args.search)
    run_parts("speech", parts)


if __name__ == "__main__":
    main()
