"""A small field store from real audio for search tests (issue 22; bench/realaudio.py is the
full benchmark): AudioMoth-style files of the real forest soundscape (shared/audio) looped, as
a fixed recorder's surroundings repeat, with real clips mixed in at known places and SNRs
(0-10 dB), for a few sensors, embedded with BirdNET (or the spectral model) and stored as
ingest stores them.

The background is the 72 s soundscape padded to exactly 72.000 s (36 hops of 2 s), so that
windows repeat bit for bit from loop to loop and from file to file: the store holds a few
thousand windows, most of them exact copies of 36 background windows. Windows whose samples
are identical are embedded once (a model gives the same vector for the same samples), so a
store of 4,500 BirdNET windows costs ~400 model calls, not 4,500.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
FOREST = SHARED_AUDIO / "soundscapes" / "xc563936.mp3"
RATE = 48000
WINDOW_S, HOP_S = 3.0, 2.0
#: label -> clip (shared/audio/clips); the issue's kind of question: birds, a dog, a siren...
CLIPS = {
    "cuckoo": "animals/birds/cuckoo.ogg",
    "dog": "animals/mammals/dogs/dog.ogg",
    "owl": "animals/birds/owl.ogg",
    "crow": "animals/birds/crow.ogg",
    "firetruck": "vehicles/emergency/firetruck.ogg",
    "saw": "household/tools/saw.ogg",
    "fireworks": "seasonal/newyears/fireworks.ogg",
    "frog": "animals/amphibians/frog.ogg",
    "cow": "animals/mammals/bovines/cow.ogg",
}
SENSORS = (("rs-a", "Marsh", "N"), ("rs-b", "Marsh", "E"), ("rs-c", "Forest", "S"))


@dataclass(frozen=True)
class Event:
    recording: int
    start_s: float
    end_s: float
    label: str
    snr_db: float


@dataclass
class SmallStore:
    """What was stored: the space, every window (id, recording, start) and the events."""

    space: object
    ids: np.ndarray  # segment ids, in storage order
    recording: np.ndarray  # recording index per window
    start_s: np.ndarray
    vectors: np.ndarray
    events: list[Event]
    embedded: int  # distinct windows (each embedded once)
    event_of: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def event_window(self, e: int) -> int:
        """Row of the window that overlaps event ``e`` most."""
        rows = np.flatnonzero(self.event_of == e)
        return int(rows[len(rows) // 2])

    def events_hit(self, segment_ids: list[int]) -> set[int]:
        """Events with at least one of ``segment_ids`` overlapping them."""
        row = {int(s): i for i, s in enumerate(self.ids)}
        return {int(self.event_of[row[s]]) for s in segment_ids if self.event_of[row[s]] >= 0}


def _load(path: Path) -> np.ndarray:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    return soxr.resample(mono, rate, RATE).astype(np.float32) if rate != RATE else mono


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def synthesize(
    n_files: int, file_s: float, events_per_label: int, seed: int = 22, exact_loop: bool = True
) -> tuple[list[np.ndarray], list[Event]]:
    """The files (int16 at 48 kHz) and their events: the looped background at gain 0.5, the
    labels' events spread at random over the files, without overlap, at 0-10 dB SNR."""
    rng = np.random.default_rng(seed)
    forest = _load(FOREST)
    hop = int(HOP_S * RATE)
    period = -(-len(forest) // hop) * hop
    loop = (
        np.concatenate([forest, forest[: period - len(forest)]]) if exact_loop else forest
    ) * 0.5
    n = int(file_s * RATE)
    clips = {label: _load(SHARED_AUDIO / "clips" / p) for label, p in CLIPS.items()}
    # slots of 12 s, shuffled: events never overlap and never touch a file's end
    slots = [(f, s * 12.0 + 5) for f in range(n_files) for s in range(int((file_s - 20) // 12))]
    order = rng.permutation(len(slots))
    events, k = [], 0
    for label in CLIPS:
        for _ in range(events_per_label):
            f, at = slots[int(order[k])]
            k += 1
            at += float(rng.uniform(0, 2))
            dur = len(clips[label]) / RATE
            events.append(Event(f, round(at, 3), round(at + dur, 3), label,
                                round(float(rng.uniform(0, 10)), 2)))  # fmt: skip
    files = []
    for f in range(n_files):
        audio = np.tile(loop, n // len(loop) + 1)[:n].copy()
        for e in (e for e in events if e.recording == f):
            clip = clips[e.label]
            i = int(e.start_s * RATE)
            gain = max(_rms(audio[i : i + len(clip)]), 0.01) * 10 ** (e.snr_db / 20) / _rms(clip)
            audio[i : i + len(clip)] += clip * gain
        files.append((np.clip(audio, -1, 32767 / 32768) * 32768).astype(np.int16))
    return files, events


def build_store(
    engine,
    model_name: str = "birdnet",
    n_files: int = 6,
    file_s: float = 1500.0,
    events_per_label: int = 13,
    seed: int = 22,
    exact_loop: bool = True,
    cache: Path | None = None,
) -> SmallStore:
    """Synthesize, embed (distinct windows once) and COPY the store into ``engine``'s database:
    files round-robin over three sensors (UTC, one file per sensor and night from 2024-05-01
    22:00), into the model's own space (as `soundscape ingest -m MODEL` makes it)."""
    import sqlalchemy as sa

    from soundscape.db import raw_connection, register_vector
    from soundscape.embedders import get_model_class, load_model
    from soundscape.ingest import SEGMENT_COPY, SEGMENT_TYPES
    from soundscape.spaces import ensure_space

    model = load_model(model_name)
    cls = get_model_class(model_name)
    files, events = synthesize(n_files, file_s, events_per_label, seed, exact_loop)
    memo: dict[bytes, np.ndarray] = {}
    # ``cache``: a folder keeping the vectors of distinct windows between runs (by the model's
    # name and version and the windows' samples), so only a first run pays for the model
    saved = None
    if cache is not None:
        saved = cache / f"{cls.name}-{cls.version}.npz"
        if saved.exists():
            z = np.load(saved)
            memo = {bytes(k): v for k, v in zip(z["keys"], z["vectors"])}
    known = len(memo)
    used: set[bytes] = set()
    per_file = []
    for pcm in files:
        x = pcm.astype(np.float32) / 32768
        if model.sample_rate != RATE:
            x = soxr.resample(x, RATE, model.sample_rate).astype(np.float32)
        win, hop = int(WINDOW_S * model.sample_rate), int(HOP_S * model.sample_rate)
        index = np.arange((len(x) - win) // hop + 1)
        keys = [hashlib.blake2b(x[j * hop : j * hop + win].tobytes(), digest_size=16).digest()
                for j in index]  # fmt: skip
        todo: dict[bytes, int] = {}
        for j, key in zip(index.tolist(), keys):
            if key not in memo:
                todo.setdefault(key, j)
        items = list(todo.items())
        for b in range(0, len(items), model.batch_size):
            chunk = items[b : b + model.batch_size]
            batch = np.stack([x[j * hop : j * hop + win] for _, j in chunk])
            for (key, _), v in zip(chunk, model.embed_audio(batch)):
                memo[key] = v
        per_file.append((index * HOP_S, np.stack([memo[k] for k in keys])))
        used.update(keys)
    if saved is not None and len(memo) > known:
        saved.parent.mkdir(parents=True, exist_ok=True)
        keys_all = list(memo)
        np.savez(saved, keys=np.array(keys_all, dtype="S16"),
                 vectors=np.stack([memo[k] for k in keys_all]))  # fmt: skip
    with engine.begin() as conn:
        space = ensure_space(conn, cls, WINDOW_S, HOP_S)
        for name, site, quadrant in SENSORS:
            conn.execute(
                sa.text("INSERT INTO sensors (name, site, quadrant, timezone) "
                        "VALUES (:n, :s, :q, 'UTC') ON CONFLICT DO NOTHING"),
                {"n": name, "s": site, "q": quadrant},
            )  # fmt: skip
        sensor_ids = [
            conn.execute(sa.text("SELECT id FROM sensors WHERE name = :n"), {"n": s[0]}).scalar()
            for s in SENSORS
        ]
        register_vector(conn)
        ids, recs, starts_all, vecs = [], [], [], []
        for f, (starts, vectors) in enumerate(per_file):
            sid = sensor_ids[f % len(SENSORS)]
            day = date(2024, 5, 1) + timedelta(days=f // len(SENSORS))
            t0 = datetime(day.year, day.month, day.day, 22, tzinfo=timezone.utc)
            name = f"{t0:%Y%m%d_%H%M%S}.WAV"
            rec_id = conn.execute(
                sa.text("INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                        "sample_rate, channels, duration_s, started_at) VALUES (:s, :p, :h, 0, "
                        "'wav', 48000, 1, :d, :t) RETURNING id"),
                {"s": sid, "p": f"/field/{SENSORS[f % len(SENSORS)][0]}/{name}",
                 "h": hashlib.sha256(f"small{seed}/{f}".encode()).hexdigest(), "d": file_s,
                 "t": t0},
            ).scalar()  # fmt: skip
            raw = raw_connection(conn)
            with raw.cursor() as cur:
                seg = [r[0] for r in cur.execute(
                    "SELECT nextval('segments_id_seq') FROM generate_series(1, %s)",
                    [len(starts)])]  # fmt: skip
                with cur.copy(SEGMENT_COPY) as copy:
                    copy.set_types(SEGMENT_TYPES)
                    for j, s in enumerate(starts.tolist()):
                        at = t0 + timedelta(seconds=s)
                        copy.write_row((seg[j], space.id, rec_id, sid, s, s + WINDOW_S, at,
                                        at.date(), at.time().replace(tzinfo=None),
                                        vectors[j]))  # fmt: skip
            ids += seg
            recs += [f] * len(starts)
            starts_all.append(starts)
            vecs.append(vectors)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"ANALYZE {space.partition}"))
    store = SmallStore(
        space, np.array(ids), np.array(recs), np.concatenate(starts_all),
        np.concatenate(vecs), events, len(used),
    )  # fmt: skip
    # the event each window overlaps most (at least min(0.5 s, half the event)), else -1
    store.event_of = np.full(len(ids), -1, np.int64)
    best = np.zeros(len(ids))
    for i, e in enumerate(events):
        on = store.recording == e.recording
        ov = np.minimum(e.end_s, store.start_s + WINDOW_S) - np.maximum(e.start_s, store.start_s)
        take = on & (ov >= min(0.5, (e.end_s - e.start_s) / 2)) & (ov > best)
        store.event_of[take], best[take] = i, ov[take]
    return store
