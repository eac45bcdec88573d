"""A real-audio benchmark set for search recall (issue 22): field recordings built from
shared/audio, embedded with the real models, loaded into soundscape and searched by every
route, each compared with the exact answer, query by query.

    python bench/realaudio.py build --model birdnet --hours 5.6          # the real 10k set
    python bench/realaudio.py eval --model birdnet --hours 5.6 --n 10000  # recall tables
    python bench/realaudio.py eval --model birdnet --hours 5.6 --n 100000 --index halfvec

**The recordings** (`plan`, `synthesize`; deterministic with `--seed`): 30-minute files,
round-robin over `--sensors` sensors (4 quadrants, 2 sites, three timezones), one file per sensor
and day from 2024-05-01, starting at local times that include the night (some cross local
midnight). Each file has one background:

- ``loop``: the 72 s forest soundscape (soundscapes/xc563936.mp3) looped as it is
  (3,455,179 samples, 821 short of 36 hops: successive loops shift by 17 ms against the 2 s
  hop, so every background window has ~25 near-identical copies per file);
- ``loop_exact``: the same soundscape padded to exactly 72.000 s at the same gain in every file
  (a fixed recorder's surroundings): windows repeat bit for bit, exact duplicate vectors;
- ``varied``: the soundscape per 72 s piece with a random offset, gain (0.2-0.7) and speed/pitch
  (x 0.94-1.06 by resampling): real but not repeating;
- ``silence``: a recorder's self-noise (Gaussian, 1.5 LSB of 16 bits);
- ``rain``: high-passed white noise with a slow level drift and ~150 drops/s (short decaying
  clicks of random level);
- ``wind``: low-passed (200 Hz) brown noise with slow gusts (0.03-0.3 Hz amplitude modulation).

Events: `--events-per-hour` real clips of every family in clips/ (animals, birds, insects,
vehicles, household, fireworks, weather, instruments, ...), 60 % of them from `FOCUS` labels (so
those have a dozen or more events each), the rest cycling through every clip. Placed without
overlap, at an SNR drawn uniformly in 0-10 dB (15 % of them in -6-0 dB): the clip's RMS against
the background's RMS over the event's span, or against a -40 dBFS floor when the background is
quieter (silence). The mix is written as 16-bit (quantised as a WAV file would be).
Stored near-duplicates: file 0 stored a second time under the next sensor (same audio, another
recording: exact copies), and the last 20 minutes of file 1 stored again as an overlapping
recording of the same sensor starting 601 s in (its windows fall 1 s off the original's grid).

**Embedding** (`build`): the windows ingest makes (3 s every 2 s; full windows only, so ingest's
last zero-padded window of each file is not in the set), at the model's rate (BirdNET: the 48 kHz
mix; spectral: the mix resampled to 16 kHz with soxr), through `soundscape.embedders.load_model`.
Windows whose samples are bit-identical are embedded once (a deterministic model gives the same
vector). Per window the truth is the event it overlaps most (at least min(0.5 s, half the event)),
else background. Cached as /work/cache/realaudio-<model>-<hours>h-s<seed>.npz (`--cache`).

**Larger sets** (`--n` above the real count) tile the real windows: tile 0 is the real set; tile
t > 0 is a copy of every real window on its own sensors (same quadrant, site and timezone, names
suffixed -t<t>) with dates shifted by t x (the real set's span in days), and each vector
perturbed: v + eps * |v| * g / |g| with g ~ N(0, I) and eps = `--eps` (0.1: cosine ~0.995 to
its original), renormalised, except a fraction `--exact-frac` (0.1) of rows copied unchanged
(exact duplicates, as a looped background across days gives). Filters are fitted per set (below),
so they keep their selectivity whatever the tiling.

**Evaluation** (`eval`): the set is COPYed (binary, as ingest and bench/search.py do) into a
scratch database (bench/common.py ScratchDatabase) as its own space, the space's HNSW index is
built as each `--index` type in turn (spaces.set_index_type), and `ranger.search_vector` runs
per query with p_exclude = the query window itself. Queries: one event window (the window that
overlaps the event most) per label with >= 2 events (labels with the most events first, up to
`--queries`), `--background-queries` background windows, and each of those labels' clip itself
as `soundscape search --audio CLIP` embeds it (its windows averaged; the issue's query; not
excluded from anything). Filter families, fitted to the set's
metadata: none, ~50 % (quadrants N+E), ~10 % (quadrant N + a time of day range), ~1 % and ~0.1 %
(the fewest sensors holding twice that + time), 1 % + date (quadrant N, the first half of the dates,
+ time) and a night time range crossing midnight (22:00 to a fitted end in the morning).
Routes: auto, hnsw (its own ef_search rule), hnsw at ef 40/100/400 (`--ef`), exact.

Metrics, per index type, filter and route: recall@10 against the exact answer (numpy, float32;
a hit counts when its score is at least the exact 10th best score - 1e-5, so any of several exact
duplicates tied at the boundary counts), its mean, minimum and 5th percentile and the worst
queries; for event queries, also k = 3 x the label's events passing the filter (at most 1000):
recall@k against exact and the label's event recall (the share of the label's other events
with a returned window in them) of the route and of exact; p50/p95 latency. The `nodup` variant
(`--variants`) loads the same set without exact duplicate vectors (the first of each kept).
Results: bench/results/realaudio-<model>-<n>-<time>.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, ScratchDatabase, machine, write_result  # noqa: E402

AUDIO = ROOT.parent / "shared" / "audio"
CACHE = Path(os.environ.get("SOUNDSCAPE_REALAUDIO_CACHE", "/work/cache"))
RATE = 48000
WINDOW_S = 3.0
HOP_S = 2.0
FILE_S = 1800.0
DAY0 = date(2024, 5, 1)
#: name, site, quadrant, timezone; a set uses the first --sensors of them
SENSORS = (
    ("ra-north", "Marsh", "N", "Europe/Berlin"),
    ("ra-east", "Marsh", "E", "Europe/Berlin"),
    ("ra-south", "Forest", "S", "UTC"),
    ("ra-west", "Forest", "W", "America/New_York"),
    ("ra-north2", "Forest", "N", "UTC"),
    ("ra-south2", "Marsh", "S", "Europe/Berlin"),
)
#: background kinds and their weights
BACKGROUNDS = {"loop": 4, "loop_exact": 3, "varied": 1.5, "silence": 1, "rain": 1, "wind": 1}
#: local start times of files (h, min): night, dawn, day, evening; 23:40 crosses midnight
STARTS = ((0, 10), (2, 0), (4, 30), (5, 15), (7, 0), (10, 0), (14, 30), (18, 0), (21, 0), (23, 40))
#: labels that get 60 % of the events (a dozen or more each), the issue's kind of question
FOCUS = (
    "cuckoo", "dog", "owl", "crow", "firetruck", "saw", "fireworks", "frog", "bee",
    "cow", "lightningbolt", "violin", "rooster", "blackbird", "mosquito",
)  # fmt: skip
FOREST = "soundscapes/xc563936.mp3"


# ------------------------------------------------------------------------------- the plan
@dataclass
class Rec:
    """One recording: sensor index, UTC start, length, background; or a stored copy of another
    recording's audio from ``copy_from_s`` on."""

    sensor: int
    start_utc: datetime
    duration_s: float
    background: str
    copy_of: int | None = None
    copy_from_s: float = 0.0


@dataclass
class Event:
    rec: int
    start_s: float
    end_s: float
    label: str
    category: str
    clip: str
    snr_db: float


def clips() -> list[dict]:
    """The manifest's clips (not speech, not the soundscape): path, label, category."""
    with open(AUDIO / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["path"].startswith("clips/")]
    return sorted(rows, key=lambda r: r["path"])


def plan(hours: float, n_sensors: int, events_per_hour: float, seed: int) -> tuple[list, list]:
    """The recordings and events of a set (no audio yet)."""
    rng = np.random.default_rng(seed)
    table = clips()
    focus = [c for c in table if c["label"] in FOCUS]
    n_files = max(1, math.ceil(hours * 3600 / FILE_S))
    kinds, weights = list(BACKGROUNDS), np.array(list(BACKGROUNDS.values()), float)
    recs: list[Rec] = []
    for i in range(n_files):
        s = i % n_sensors
        day = DAY0 + timedelta(days=i // n_sensors)
        h, m = STARTS[int(rng.integers(len(STARTS)))]
        local = datetime(day.year, day.month, day.day, h, m, tzinfo=ZoneInfo(SENSORS[s][3]))
        bg = kinds[i] if i < len(kinds) else str(rng.choice(kinds, p=weights / weights.sum()))
        recs.append(Rec(s, local.astimezone(timezone.utc), FILE_S, bg))
    events: list[Event] = []
    order = list(rng.permutation(len(table)))
    spread = 0
    for r, rec in enumerate(recs):
        n = int(rng.poisson(events_per_hour * rec.duration_s / 3600))
        at = np.sort(rng.uniform(5, rec.duration_s - 15, n))
        last_end = 0.0
        for t in at:
            if rng.random() < 0.6:
                c = focus[int(rng.integers(len(focus)))]
            else:
                c = table[order[spread % len(table)]]
                spread += 1
            dur = float(c["duration_s"])
            start = max(float(t), last_end + 4.0)
            if start + dur > rec.duration_s - 3:
                continue
            snr = rng.uniform(-6, 0) if rng.random() < 0.15 else rng.uniform(0, 10)
            events.append(
                Event(r, round(start, 3), round(start + dur, 3), c["label"], c["category"],
                      c["path"], round(float(snr), 2))
            )  # fmt: skip
            last_end = start + dur
    # stored near-duplicates: file 0 again under the next sensor; file 1's tail again, 601 s in
    if len(recs) >= 2:
        r0, r1 = recs[0], recs[1]
        recs.append(Rec((r0.sensor + 1) % n_sensors, r0.start_utc, r0.duration_s, r0.background, 0))
        tail = Rec(r1.sensor, r1.start_utc + timedelta(seconds=601), r1.duration_s - 601,
                   r1.background, 1, 601.0)  # fmt: skip
        recs.append(tail)
        for src, new, shift in ((0, len(recs) - 2, 0.0), (1, len(recs) - 1, 601.0)):
            for e in [e for e in events if e.rec == src and e.start_s >= shift]:
                events.append(
                    Event(new, e.start_s - shift, e.end_s - shift, e.label, e.category, e.clip,
                          e.snr_db)
                )  # fmt: skip
    return recs, events


# ------------------------------------------------------------------------------- audio
_LOADED: dict[str, np.ndarray] = {}


def load(relative: str) -> np.ndarray:
    """A file of shared/audio as mono float32 at 48 kHz (cached)."""
    if relative not in _LOADED:
        from common import load_mono

        _LOADED[relative] = load_mono(AUDIO / relative, RATE)
    return _LOADED[relative]


def _tile(x: np.ndarray, n: int, offset: int) -> np.ndarray:
    reps = (offset + n) // len(x) + 1
    return np.tile(x, reps)[offset : offset + n]


def background(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of a background kind at 48 kHz."""
    from scipy import signal

    forest = load(FOREST)
    hop = int(HOP_S * RATE)
    if kind == "loop":
        return _tile(forest, n, int(rng.integers(len(forest)))) * float(rng.uniform(0.3, 0.6))
    if kind == "loop_exact":
        period = math.ceil(len(forest) / hop) * hop  # 36 hops: 72.000 s
        exact = np.concatenate([forest, forest[: period - len(forest)]])
        return _tile(exact, n, 0) * 0.5
    if kind == "varied":
        parts, total = [], 0
        while total < n:
            piece = np.roll(forest, int(rng.integers(len(forest)))) * float(rng.uniform(0.2, 0.7))
            ratio = float(rng.uniform(0.94, 1.06))
            import soxr

            piece = soxr.resample(piece, RATE, int(RATE * ratio)).astype(np.float32)
            parts.append(piece)
            total += len(piece)
        return np.concatenate(parts)[:n]
    if kind == "silence":
        return (rng.standard_normal(n) * (1.5 / 32768)).astype(np.float32)
    t = np.arange(n, dtype=np.float32) / RATE
    if kind == "rain":
        b, a = signal.butter(2, 1000, "highpass", fs=RATE)
        hiss = signal.lfilter(b, a, rng.standard_normal(n, np.float32)).astype(np.float32)
        drops = np.zeros(n, np.float32)
        k = int(150 * n / RATE)
        drops[rng.integers(0, n, k)] = rng.uniform(-1, 1, k) * rng.exponential(0.05, k)
        click = (np.exp(-np.arange(96) / 20.0) * np.sin(np.arange(96) * 0.9)).astype(np.float32)
        drift = 1 + 0.4 * np.sin(2 * np.pi * t / float(rng.uniform(30, 120)))
        rain = hiss * 0.02 + signal.oaconvolve(drops, click, "same")
        return (rain * drift).astype(np.float32)
    if kind == "wind":
        b, a = signal.butter(2, 200, "lowpass", fs=RATE)
        # brown noise (a leaky integrator) low-passed: one filter
        low = signal.lfilter(b, np.convolve(a, [1.0, -0.999]), rng.standard_normal(n, np.float32))
        low /= np.abs(low).max() + 1e-9
        gust = sum(
            np.sin(2 * np.pi * t * float(rng.uniform(0.03, 0.3)) + float(rng.uniform(0, 6)))
            for _ in range(3)
        )
        return (low * 0.25 * (1.2 + 0.5 * gust / 3)).astype(np.float32)
    raise ValueError(f"unknown background {kind!r}")


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def synthesize(recs: list[Rec], events: list[Event], r: int, seed: int) -> np.ndarray:
    """Recording ``r`` as int16 at 48 kHz (a copy: the samples of the recording it copies)."""
    rec = recs[r]
    if rec.copy_of is not None:
        src = synthesize(recs, events, rec.copy_of, seed)
        return src[int(rec.copy_from_s * RATE) :]
    rng = np.random.default_rng([seed, r])
    n = int(rec.duration_s * RATE)
    audio = background(rec.background, n, rng)
    for e in (e for e in events if e.rec == r):
        clip = load(e.clip)
        i = int(e.start_s * RATE)
        m = min(len(clip), n - i)
        ref = max(rms(audio[i : i + m]), 0.01)  # -40 dBFS floor
        audio[i : i + m] += clip[:m] * (ref * 10 ** (e.snr_db / 20) / max(rms(clip), 1e-6))
    return (np.clip(audio, -1, 32767 / 32768) * 32768).astype(np.int16)


# ------------------------------------------------------------------------------- the set
def cache_path(model: str, hours: float, seed: int) -> Path:
    return CACHE / f"realaudio-{model}-{hours:g}h-s{seed}.npz"


def window_truth(starts: np.ndarray, evs: list[tuple[int, Event]]) -> np.ndarray:
    """Per window start, the index of the event it overlaps most (>= min(0.5 s, half of the
    event)), else -1."""
    out = np.full(len(starts), -1, np.int32)
    best = np.zeros(len(starts))
    for idx, e in evs:
        ov = np.minimum(e.end_s, starts + WINDOW_S) - np.maximum(e.start_s, starts)
        need = min(0.5, (e.end_s - e.start_s) / 2)
        take = (ov >= need) & (ov > best)
        out[take], best[take] = idx, ov[take]
    return out


def build(
    model_name: str,
    hours: float,
    seed: int = 0,
    n_sensors: int = 4,
    events_per_hour: float = 40.0,
    path: Path | None = None,
    quiet: bool = False,
) -> Path:
    """Synthesize, embed and cache a set (kept if the cache file exists)."""
    import soxr

    from soundscape.embedders import load_model

    path = path or cache_path(model_name, hours, seed)
    if path.exists():
        return path
    model = load_model(model_name)
    recs, events = plan(hours, n_sensors, events_per_hour, seed)
    memo: dict[bytes, np.ndarray] = {}
    cols: dict[str, list] = {k: [] for k in ("rec", "start_s", "event", "vec", "at", "day", "tod")}
    embedded = 0
    t0 = time.perf_counter()
    for r, rec in enumerate(recs):
        pcm = synthesize(recs, events, r, seed)
        x48 = pcm.astype(np.float32) / 32768
        x = x48 if model.sample_rate == RATE else soxr.resample(x48, RATE, model.sample_rate)
        x = np.ascontiguousarray(x, np.float32)
        win, hop = int(WINDOW_S * model.sample_rate), int(HOP_S * model.sample_rate)
        n = (len(x) - win) // hop + 1
        starts = np.arange(n) * HOP_S
        keys = [hashlib.blake2b(x[j * hop : j * hop + win].tobytes(), digest_size=16).digest()
                for j in range(n)]  # fmt: skip
        todo, seen = [], set(memo)
        for j, key in enumerate(keys):  # the first window of each distinct content
            if key not in seen:
                seen.add(key)
                todo.append(j)
        for b in range(0, len(todo), model.batch_size):
            idx = todo[b : b + model.batch_size]
            batch = np.stack([x[j * hop : j * hop + win] for j in idx])
            for j, v in zip(idx, model.embed_audio(batch)):
                memo[keys[j]] = v
            embedded += len(idx)
        tz = ZoneInfo(SENSORS[rec.sensor][3])
        for j in range(n):
            at = rec.start_utc + timedelta(seconds=float(starts[j]))
            local = at.astimezone(tz)
            cols["at"].append(at.timestamp())
            cols["day"].append((local.date() - date(1970, 1, 1)).days)
            cols["tod"].append(local.hour * 3600 + local.minute * 60 + local.second
                               + local.microsecond / 1e6)  # fmt: skip
        cols["vec"].extend(memo[k] for k in keys)
        cols["rec"].extend([r] * n)
        cols["start_s"].extend(starts.tolist())
        cols["event"].extend(
            window_truth(starts, [(i, e) for i, e in enumerate(events) if e.rec == r]).tolist()
        )
        if not quiet:
            print(
                f"{model_name}: file {r + 1}/{len(recs)} ({rec.background}), "
                f"{len(cols['vec'])} windows, {embedded} embedded, "
                f"{time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
            )
    meta = {
        "model": model_name,
        "hours": hours,
        "seed": seed,
        "sensors": [list(s) for s in SENSORS[:n_sensors]],
        "recordings": [{**asdict(r), "start_utc": r.start_utc.isoformat()} for r in recs],
        "events": [asdict(e) for e in events],
        "embedded_windows": embedded,
        "embed_s": round(time.perf_counter() - t0, 1),
    }
    rec_arr = np.array(cols["rec"], np.int32)
    ev = np.array(cols["event"], np.int32)
    labels = np.array([events[i].label if i >= 0 else "" for i in ev.tolist()])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        vectors=np.stack(cols["vec"]).astype(np.float32),
        rec=rec_arr,
        sensor=np.array([recs[r].sensor for r in rec_arr.tolist()], np.int32),
        start_s=np.array(cols["start_s"], np.float32),
        starts_at=np.array(cols["at"], np.float64),
        local_day=np.array(cols["day"], np.int32),
        local_tod=np.array(cols["tod"], np.float64),
        event=ev,
        label=labels,
        meta=np.array(json.dumps(meta)),
    )
    tmp.rename(path)
    return path


@dataclass
class Set:
    """Windows (real or tiled) with their metadata, as arrays of one length."""

    vectors: np.ndarray
    rec: np.ndarray  # recording index (tile-unique)
    sensor: np.ndarray  # sensor index (tile-unique)
    start_s: np.ndarray
    starts_at: np.ndarray  # epoch s
    local_day: np.ndarray  # days since 1970-01-01
    local_tod: np.ndarray  # s since local midnight
    event: np.ndarray  # event index (tile-unique), -1 background
    label: np.ndarray
    sensors: list[tuple[str, str, str, str]]
    n_recordings: int
    event_label: list[str]
    tile: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return len(self.vectors)


def load_set(path: Path) -> Set:
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    n = len(z["vectors"])
    return Set(
        z["vectors"], z["rec"], z["sensor"], z["start_s"], z["starts_at"], z["local_day"],
        z["local_tod"], z["event"], z["label"], [tuple(s) for s in meta["sensors"]],
        len(meta["recordings"]), [e["label"] for e in meta["events"]],
        np.zeros(n, np.int32), meta,
    )  # fmt: skip


def tiled(real: Set, n: int, eps: float = 0.1, exact_frac: float = 0.1, seed: int = 0) -> Set:
    """``n`` windows: the real set, then perturbed copies of it (see the module's doc)."""
    if n <= len(real):
        keep = np.arange(n)
        return Set(
            real.vectors[keep], real.rec[keep], real.sensor[keep], real.start_s[keep],
            real.starts_at[keep], real.local_day[keep], real.local_tod[keep], real.event[keep],
            real.label[keep], real.sensors, real.n_recordings, real.event_label,
            real.tile[keep], real.meta,
        )  # fmt: skip
    rng = np.random.default_rng(seed + 1000)
    m = len(real)
    tiles = math.ceil(n / m)
    span = int(real.local_day.max() - real.local_day.min()) + 1
    vec = np.empty((n, real.vectors.shape[1]), np.float32)
    parts: dict[str, list] = {k: [] for k in ("rec", "sensor", "day", "at", "event", "tile")}
    ns, nr, ne = len(real.sensors), real.n_recordings, len(real.event_label)
    for t in range(tiles):
        lo, hi = t * m, min(n, (t + 1) * m)
        k = hi - lo
        v = real.vectors[:k]
        if t:
            g = rng.standard_normal(v.shape).astype(np.float32)
            g *= (eps / np.linalg.norm(g, axis=1, keepdims=True)) * np.linalg.norm(
                v, axis=1, keepdims=True
            )
            g[rng.random(k) < exact_frac] = 0
            w = v + g
            v = w / np.linalg.norm(w, axis=1, keepdims=True)
        vec[lo:hi] = v
        parts["rec"].append(real.rec[:k] + t * nr)
        parts["sensor"].append(real.sensor[:k] + t * ns)
        parts["day"].append(real.local_day[:k] + t * span)
        parts["at"].append(real.starts_at[:k] + t * span * 86400.0)
        parts["event"].append(np.where(real.event[:k] >= 0, real.event[:k] + t * ne, -1))
        parts["tile"].append(np.full(k, t, np.int32))
    sensors = [
        (s if t == 0 else f"{s}-t{t}", site, q, tz)
        for t in range(tiles)
        for (s, site, q, tz) in real.sensors
    ]
    reps = (n + m - 1) // m
    return Set(
        vec, np.concatenate(parts["rec"]), np.concatenate(parts["sensor"]),
        np.tile(real.start_s, reps)[:n], np.concatenate(parts["at"]),
        np.concatenate(parts["day"]), np.tile(real.local_tod, reps)[:n],
        np.concatenate(parts["event"]), np.tile(real.label, reps)[:n], sensors, nr * tiles,
        real.event_label * tiles, np.concatenate(parts["tile"]),
        {**real.meta, "tiles": tiles, "eps": eps, "exact_frac": exact_frac},
    )  # fmt: skip


def without_exact_duplicates(s: Set) -> tuple[Set, np.ndarray]:
    """The set without exact duplicate vectors (the first of each kept), and the kept rows."""
    _, first = np.unique(row_keys(s.vectors), return_index=True)
    keep = np.sort(first)
    sub = Set(
        s.vectors[keep], s.rec[keep], s.sensor[keep], s.start_s[keep], s.starts_at[keep],
        s.local_day[keep], s.local_tod[keep], s.event[keep], s.label[keep], s.sensors,
        s.n_recordings, s.event_label, s.tile[keep], s.meta,
    )  # fmt: skip
    return sub, keep


# ------------------------------------------------------------------------------- filters
@dataclass
class Filter:
    name: str
    quadrants: list[str] | None = None
    sensors: list[str] | None = None
    time_from: float | None = None  # s since local midnight
    time_to: float | None = None
    date_from: int | None = None  # days since 1970-01-01, inclusive
    date_to: int | None = None

    def mask(self, s: Set) -> np.ndarray:
        m = np.ones(len(s), bool)
        if self.quadrants:
            q = np.array([x[2] for x in s.sensors])
            m &= np.isin(q[s.sensor], self.quadrants)
        if self.sensors:
            names = np.array([x[0] for x in s.sensors])
            m &= np.isin(names[s.sensor], self.sensors)
        if self.time_from is not None and self.time_to is not None:
            tod = s.local_tod
            if self.time_from <= self.time_to:
                m &= (tod >= self.time_from) & (tod < self.time_to)
            else:
                m &= (tod >= self.time_from) | (tod < self.time_to)
        if self.date_from is not None:
            m &= s.local_day >= self.date_from
        if self.date_to is not None:
            m &= s.local_day <= self.date_to
        return m

    def params(self) -> dict:
        def clock(sec: float | None):
            if sec is None:
                return None
            sec = int(sec) % 86400
            from datetime import time as dtime

            return dtime(sec // 3600, sec % 3600 // 60, sec % 60)

        def day(d: int | None):
            return None if d is None else date(1970, 1, 1) + timedelta(days=int(d))

        return {
            "p_quadrants": self.quadrants,
            "p_sensors": self.sensors,
            "p_time_from": clock(self.time_from),
            "p_time_to": clock(self.time_to),
            "p_date_from": day(self.date_from),
            "p_date_to": day(self.date_to),
        }

    def describe(self) -> str:
        p = self.params()
        return ", ".join(f"{k[2:]}={v}" for k, v in p.items() if v is not None) or "none"


def _fit_time(s: Set, base: np.ndarray, start: float, target: int) -> float:
    """The end of a time of day range from ``start`` (may cross midnight) that lets about
    ``target`` rows of ``base`` pass (whole seconds, the rows at the end included)."""
    shifted = np.sort((s.local_tod[base] - start) % 86400)
    if target >= len(shifted):
        return (start - 1) % 86400
    return (start + math.floor(shifted[max(target - 1, 0)]) + 1) % 86400


def fit_filters(s: Set) -> list[Filter]:
    """The filter families, fitted to the set's metadata (see the module's doc)."""
    n = len(s)
    names = [x[0] for x in s.sensors]
    out = [Filter("none"), Filter("50%", quadrants=["N", "E"])]
    qn = Filter("x", quadrants=["N"]).mask(s)
    out.append(Filter("10%", quadrants=["N"], time_from=4 * 3600,
                      time_to=_fit_time(s, qn, 4 * 3600, int(0.10 * n))))  # fmt: skip
    counts = np.bincount(s.sensor, minlength=len(names))
    by_size = np.argsort(-counts, kind="stable")
    for name, frac in (("1%", 0.01), ("0.1%", 0.001)):
        # the fewest sensors (largest first) holding twice the target, then a time range
        take = int(np.searchsorted(np.cumsum(counts[by_size]), 2 * frac * n)) + 1
        chosen = [names[int(i)] for i in by_size[:take]]
        so = Filter("x", sensors=chosen).mask(s)
        out.append(Filter(name, sensors=chosen, time_from=4 * 3600,
                          time_to=_fit_time(s, so, 4 * 3600, max(1, int(frac * n)))))  # fmt: skip
    days = np.unique(s.local_day[qn])
    half = int(days[len(days) // 2 - 1]) if len(days) > 1 else int(days[0])
    dm = qn & (s.local_day <= half)
    out.append(Filter("1%+date", quadrants=["N"], date_from=int(days[0]), date_to=half,
                      time_from=4 * 3600, time_to=_fit_time(s, dm, 4 * 3600, int(0.01 * n))))  # fmt: skip
    # night across midnight: 22:00 to a fitted hour
    night = np.ones(n, bool)
    out.append(Filter("night", time_from=22 * 3600,
                      time_to=min(_fit_time(s, night, 22 * 3600, int(0.2 * n)), 8 * 3600)))  # fmt: skip
    return out


# ------------------------------------------------------------------------------- queries
def clip_vector(model, relative: str) -> np.ndarray:
    """A clip as `soundscape search --audio CLIP` embeds it: its windows (3 s every 2 s, the
    last one zero-padded) averaged and renormalised."""
    from soundscape.audio import decode_span, window_array
    from soundscape.embedders.base import l2_normalize

    samples = decode_span(AUDIO / relative, model.sample_rate)
    batch = window_array(samples, model.sample_rate, WINDOW_S, HOP_S)
    return l2_normalize(model.embed_audio(batch.samples).mean(axis=0, keepdims=True))[0]


def pick_queries(
    s: Set, n_events: int, n_background: int, seed: int, model_name: str | None = None
) -> list[dict]:
    """Event windows (one per label, the labels with most events first), background windows
    from the real tile and, with ``model_name``, each of those labels' clip itself (as
    `search --audio` takes it); each: vec, row (-1 for a clip), kind, label, event."""
    rng = np.random.default_rng(seed + 7)
    real = s.tile == 0
    ev_rows: dict[int, list[int]] = {}
    for i in np.flatnonzero(real & (s.event >= 0)).tolist():
        ev_rows.setdefault(int(s.event[i]), []).append(i)
    by_label: dict[str, list[int]] = {}
    for e in ev_rows:
        by_label.setdefault(s.event_label[e], []).append(e)
    labels = sorted((lb for lb in by_label if len(by_label[lb]) >= 2),
                    key=lambda lb: (-len(by_label[lb]), lb))[:n_events]  # fmt: skip
    out: list[dict] = []
    for lb in labels:
        e = by_label[lb][int(rng.integers(len(by_label[lb])))]
        rows = ev_rows[e]
        # the window overlapping the event most: the one in the middle of its windows
        out.append({"row": rows[len(rows) // 2], "kind": "event", "label": lb, "event": e})
    bg = np.flatnonzero(real & (s.event < 0) & (s.label == ""))
    for i in rng.choice(bg, min(n_background, len(bg)), replace=False).tolist():
        out.append({"row": int(i), "kind": "background", "label": "", "event": -1})
    for qd in out:
        qd["vec"] = s.vectors[qd["row"]]
    if model_name:
        from soundscape.embedders import load_model

        model = load_model(model_name)
        clip_of = {e["label"]: e["clip"] for e in s.meta["events"]}
        for lb in labels:
            out.append({"row": -1, "kind": "clip", "label": lb, "event": -1,
                        "vec": clip_vector(model, clip_of[lb])})  # fmt: skip
    return out


def exact_topk(scores: np.ndarray, mask: np.ndarray, exclude: int, k: int):
    """Rows and scores of the exact top ``k`` among ``mask`` (without ``exclude``), from the
    query's scores against every row."""
    idx = np.flatnonzero(mask)
    idx = idx[idx != exclude]
    sc = scores[idx]
    k = min(k, len(idx))
    if k == 0:
        return idx[:0], sc[:0]
    top = np.argpartition(-sc, k - 1)[:k]
    order = top[np.argsort(-sc[top], kind="stable")]
    return idx[order], sc[order]


def row_keys(vectors: np.ndarray) -> np.ndarray:
    """A key per row that equal rows share and different rows almost surely do not (two random
    projections in float64): for counting and dropping exact duplicates quickly."""
    r = np.random.default_rng(5).standard_normal((vectors.shape[1], 2))
    p = np.concatenate(
        [vectors[i : i + 50000].astype(np.float64) @ r for i in range(0, len(vectors), 50000)]
    )
    return np.ascontiguousarray(p).view(np.dtype((np.void, 16))).ravel()


# ------------------------------------------------------------------------------- database
def load_db(db, s: Set, space_name: str, model_name: str) -> dict:
    """COPY the set into its own space (segment id = offset + row), sensors and recordings
    included; the HNSW index is left to `build_index`."""
    import sqlalchemy as sa

    from soundscape.db import register_vector
    from soundscape.embedders import get_model_class
    from soundscape.embedders.base import Embedder
    from soundscape.ingest import SEGMENT_COPY, SEGMENT_TYPES
    from soundscape.spaces import drop_hnsw_index, ensure_space

    cls = get_model_class(model_name)

    class Bench(Embedder):
        name = space_name
        version = "1"
        dimension = cls.dimension
        sample_rate = cls.sample_rate
        default_window_s = WINDOW_S
        default_hop_s = HOP_S

    engine = db.db.engine
    t = time.perf_counter()
    with engine.begin() as conn:
        space = ensure_space(conn, Bench, WINDOW_S, HOP_S)
        drop_hnsw_index(conn, space)
        have = {
            r[0]: r[1] for r in conn.execute(sa.text("SELECT name, id FROM sensors")).fetchall()
        }
        new = [x for x in s.sensors if x[0] not in have]
        if new:
            conn.execute(
                sa.text("INSERT INTO sensors (name, site, quadrant, timezone) "
                        "VALUES (:n, :s, :q, :tz)"),
                [{"n": a, "s": b, "q": c, "tz": d} for a, b, c, d in new],
            )  # fmt: skip
            have = {
                r[0]: r[1] for r in conn.execute(sa.text("SELECT name, id FROM sensors")).fetchall()
            }
        sensor_ids = np.array([have[x[0]] for x in s.sensors])
        # one recording per (set recording): its sensor is the sensor of its first window
        first = np.unique(s.rec, return_index=True)
        rec_sensor = dict(zip(first[0].tolist(), s.sensor[first[1]].tolist()))
        rows = [
            {"s": int(sensor_ids[rec_sensor[r]]), "p": f"/realaudio/{space_name}/{r}.wav",
             "h": hashlib.sha256(f"{space_name}/{r}".encode()).hexdigest()}
            for r in rec_sensor
        ]  # fmt: skip
        conn.execute(
            sa.text("INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                    "sample_rate, channels, duration_s) VALUES (:s, :p, :h, 0, 'wav', 48000, 1, "
                    f"{FILE_S})"),
            rows,
        )  # fmt: skip
        rec_ids = {
            int(p.rsplit("/", 1)[1][:-4]): i
            for p, i in conn.execute(
                sa.text("SELECT path, id FROM recordings WHERE path LIKE :p"),
                {"p": f"/realaudio/{space_name}/%"},
            )
        }
    offset = space.id * 10**9
    epoch = date(1970, 1, 1)
    with engine.begin() as conn:
        register_vector(conn)
        raw = conn.connection.driver_connection
        with raw.cursor().copy(SEGMENT_COPY) as copy:
            copy.set_types(SEGMENT_TYPES)
            for i in range(len(s)):
                at = datetime.fromtimestamp(float(s.starts_at[i]), timezone.utc)
                tod = float(s.local_tod[i])
                sec = int(tod)
                from datetime import time as dtime

                clock = dtime(sec // 3600, sec % 3600 // 60, sec % 60, int((tod - sec) * 1e6))
                copy.write_row((
                    offset + i, space.id, rec_ids[int(s.rec[i])],
                    int(sensor_ids[s.sensor[i]]), float(s.start_s[i]),
                    float(s.start_s[i]) + WINDOW_S, at,
                    epoch + timedelta(days=int(s.local_day[i])), clock, s.vectors[i],
                ))  # fmt: skip
    copy_s = time.perf_counter() - t
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"VACUUM ANALYZE {space.partition}"))
    return {"space": space, "offset": offset, "rows": len(s), "copy_s": round(copy_s, 1)}


def build_index(db, space, index_type: str, check: bool = False, work_mem: str = "2GB"):
    """Build the space's index as ``index_type``; with ``check``, then measure its recall as
    `soundscape spaces index` does (soundscape.recall: the guard auto follows afterwards)."""
    import sqlalchemy as sa

    from soundscape.recall import check_space
    from soundscape.spaces import set_index_type

    with db.db.engine.begin() as conn:
        conn.execute(sa.text(f"SET maintenance_work_mem = '{work_mem}'"))
        conn.execute(sa.text("SET max_parallel_maintenance_workers = 1"))
        space, build_s = set_index_type(conn, space, index_type)
        size = conn.execute(sa.text(f"SELECT pg_relation_size('{space.partition}_hnsw')")).scalar()
    out = {"index_type": index_type, "build_s": round(build_s, 1), "index_bytes": size}
    if check:
        with db.db.engine.begin() as conn:
            c = check_space(conn, space)
        out["check"] = {
            "recall": round(c.recall, 4), "worst_decile": round(c.recall_worst_decile, 4),
            "ef_search": c.ef_search, "guard": c.guard, "guard_ef": c.guard_ef,
            "guard_recall": c.guard_recall, "seconds": round(c.seconds, 1),
        }  # fmt: skip
    return space, out


SEARCH_SQL = (
    "SELECT segment_id, score, method FROM ranger.search_vector("
    "p_space => %(p_space)s::integer, p_query => %(p_query)s::vector, p_k => %(p_k)s::integer, "
    "p_sensors => %(p_sensors)s::text[], p_quadrants => %(p_quadrants)s::text[], "
    "p_time_from => %(p_time_from)s::time, p_time_to => %(p_time_to)s::time, "
    "p_date_from => %(p_date_from)s::date, p_date_to => %(p_date_to)s::date, "
    "p_exclude => %(p_exclude)s::bigint, p_strategy => %(p_strategy)s::text, "
    "p_ef_search => %(p_ef_search)s::integer)"
)


def search(conn, space_id: int, q: np.ndarray, k: int, f: Filter, exclude: int | None, strategy: str,
           ef: int | None) -> tuple[list, float]:  # fmt: skip
    """(rows (segment id, score, method), milliseconds) of one ranger.search_vector call."""
    params = {"p_space": space_id, "p_query": q, "p_k": k, "p_exclude": exclude,
              "p_strategy": strategy, "p_ef_search": ef, **f.params()}  # fmt: skip
    t = time.perf_counter()
    rows = conn.exec_driver_sql(SEARCH_SQL, params).all()
    return rows, (time.perf_counter() - t) * 1000


# ------------------------------------------------------------------------------- evaluation
def tie_recall(scores: list[float], exact_scores: np.ndarray, k: int) -> float:
    """Share of the exact top ``k`` a result matches, counting any hit scored at least the
    exact k-th score (- 1e-5) as correct (exact duplicates tie at the boundary)."""
    k = min(k, len(exact_scores))
    if k == 0:
        return 1.0
    kth = float(exact_scores[k - 1]) - 1e-5
    return min(k, sum(1 for x in scores if x >= kth)) / k


def evaluate(
    db, s: Set, space, offset: int, queries: list[dict], filters: list[Filter],
    routes: dict[str, tuple[str, int | None]], label_routes: tuple[str, ...],
    exact_max_rows: int = 20000,
) -> dict:  # fmt: skip
    """Per filter and route: recall@10, label recall, latency, worst queries. The exact route
    runs only on filters passing at most ``exact_max_rows`` (the truth is numpy's anyway)."""
    from soundscape.db import register_vector

    out: dict = {}
    all_scores = [s.vectors @ qd["vec"] for qd in queries]
    with db.db.engine.connect() as conn:
        register_vector(conn)
        for strategy, ef in routes.values():  # warm-up
            search(conn, space.id, queries[0]["vec"], 10, filters[0], None, strategy, ef)
        for f in filters:
            m = f.mask(s)
            lab_ev: dict[str, set[int]] = {}
            for e in np.unique(s.event[m & (s.event >= 0)]).tolist():
                lab_ev.setdefault(s.event_label[e], set()).add(e)
            here = {n: r for n, r in routes.items() if r[0] != "exact" or m.sum() <= exact_max_rows}
            per: dict[str, list[dict]] = {r: [] for r in here}
            for qd, scores in zip(queries, all_scores):
                row, q = qd["row"], qd["vec"]
                exclude = offset + row if row >= 0 else None
                ex_rows, ex_scores = exact_topk(scores, m, row, 10)
                others = lab_ev.get(qd["label"], set()) - {qd["event"]}
                kl = min(1000, max(10, 3 * (len(others) + (qd["kind"] == "event"))))
                labelled = qd["kind"] in ("event", "clip") and bool(others)
                if labelled:
                    big_rows, big_scores = exact_topk(scores, m, row, kl)
                    exact_found = others & set(s.event[big_rows].tolist())
                for name, (strategy, ef) in here.items():
                    rows, ms = search(conn, space.id, q, 10, f, exclude, strategy, ef)
                    rec = tie_recall([r[1] for r in rows], ex_scores, 10)
                    # how much worse the route's 10th score is than the exact 10th (0: as good)
                    gap = float(ex_scores[-1]) - (rows[-1][1] if rows else 0.0)
                    entry = {"q": row, "kind": qd["kind"], "label": qd["label"] or "(background)",
                             "recall": rec, "gap10": max(0.0, gap), "ms": ms,
                             "method": rows[0][2] if rows else None}  # fmt: skip
                    if labelled and name in label_routes:
                        rows_k, _ = search(conn, space.id, q, kl, f, exclude, strategy, ef)
                        got = [r[0] - offset for r in rows_k]
                        found = others & set(s.event[got].tolist()) if got else set()
                        entry.update({
                            "k": kl,
                            "recall_k": tie_recall([r[1] for r in rows_k], big_scores, kl),
                            "events": len(others),
                            "found": len(found),
                            "exact_found": len(exact_found),
                        })  # fmt: skip
                    per[name].append(entry)
            res: dict = {"filter": f.describe(), "rows": int(m.sum()),
                         "selectivity": round(float(m.mean()), 5), "routes": {}}  # fmt: skip
            for name, entries in per.items():
                recalls = np.array([e["recall"] for e in entries])
                lat = sorted(e["ms"] for e in entries)
                lab = [e for e in entries if "found" in e]
                worst = sorted(entries, key=lambda e: (e["recall"], -e["ms"]))[:5]
                r: dict = {
                    "recall_at_10": round(float(recalls.mean()), 4),
                    "min": round(float(recalls.min()), 2),
                    "p5": round(float(np.percentile(recalls, 5)), 2),
                    "below_0.8": int((recalls < 0.8).sum()),
                    "max_gap10": round(max(e["gap10"] for e in entries), 4),
                    "p50_ms": round(statistics.median(lat), 2),
                    "p95_ms": round(lat[int(0.95 * (len(lat) - 1))], 2),
                    "methods": sorted({str(e["method"]) for e in entries}),
                    "worst": [
                        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in e.items()}
                        for e in worst
                    ],  # fmt: skip
                }
                if lab:
                    found = sum(e["found"] for e in lab)
                    exact = sum(e["exact_found"] for e in lab)
                    r["label_recall_k"] = round(float(np.mean([e["recall_k"] for e in lab])), 4)
                    r["event_recall"] = round(found / max(1, sum(e["events"] for e in lab)), 4)
                    r["exact_event_recall"] = round(
                        exact / max(1, sum(e["events"] for e in lab)), 4
                    )
                    r["event_recall_vs_exact"] = round(found / max(1, exact), 4)
                    r["labels_missed"] = sorted(
                        f"{e['label']} {e['found']}/{e['exact_found']}"
                        for e in lab if e["found"] < e["exact_found"]
                    )  # fmt: skip
                res["routes"][name] = r
            out[f.name] = res
            print(f"  {f.name}: " + "  ".join(
                f"{n} {v['recall_at_10']:.3f}/{v['min']:.2f}" for n, v in res["routes"].items()),
                file=sys.stderr)  # fmt: skip
    return out


def table(result: dict) -> str:
    """A readable table of an eval result."""
    lines = []
    for variant, by_index in result["variants"].items():
        for index_type, entry in by_index.items():
            lines.append(f"\n== {result['model']} n={result['n']:,} {variant} index={index_type} "
                         f"(build {entry['index']['build_s']} s) ==")  # fmt: skip
            lines.append(f"{'filter':8} {'rows':>7} {'route':10} {'R@10':>6} {'min':>5} "
                         f"{'p5':>5} {'<0.8':>4} {'R@k':>6} {'ev':>6} {'ev/ex':>6} "
                         f"{'p50ms':>7} {'p95ms':>7}  method / labels missed")  # fmt: skip
            for fname, res in entry["filters"].items():
                for route, r in res["routes"].items():
                    lines.append(
                        f"{fname:8} {res['rows']:>7} {route:10} {r['recall_at_10']:6.3f} "
                        f"{r['min']:5.2f} {r['p5']:5.2f} {r['below_0.8']:>4} "
                        f"{r.get('label_recall_k', float('nan')):6.3f} "
                        f"{r.get('event_recall', float('nan')):6.3f} "
                        f"{r.get('event_recall_vs_exact', float('nan')):6.3f} "
                        f"{r['p50_ms']:7.1f} {r['p95_ms']:7.1f}  {','.join(r['methods'])} "
                        f"{' '.join(r.get('labels_missed', [])[:6])}"
                    )
    return "\n".join(lines)


def run_eval(args) -> Path:
    real = load_set(build(args.model, args.hours, args.seed, args.sensors, args.events_per_hour))
    full = tiled(real, args.n, args.eps, args.exact_frac, args.seed)
    routes: dict[str, tuple[str, int | None]] = {"auto": ("auto", None), "hnsw": ("hnsw", None)}
    for ef in args.ef:
        routes[f"hnsw_ef{ef}"] = ("hnsw", ef)
    routes["exact"] = ("exact", None)
    result: dict = {
        "machine": machine(), "model": args.model, "hours": args.hours, "seed": args.seed,
        "n": len(full), "real_windows": len(real), "tiles": full.meta.get("tiles", 1),
        "eps": args.eps, "exact_frac": args.exact_frac,
        "embedded_windows": real.meta["embedded_windows"], "variants": {},
    }  # fmt: skip
    db = ScratchDatabase(Path(args.home) if args.home else None)
    try:
        for variant in args.variants:
            s = full
            if variant == "nodup":
                s, _ = without_exact_duplicates(full)
            queries = pick_queries(s, args.queries, args.background_queries, args.seed,
                                   args.model if args.clip_queries else None)  # fmt: skip
            filters = fit_filters(s)
            name = f"ra_{args.model}_{len(full)}_{variant}"
            info = load_db(db, s, name, args.model)
            space = info.pop("space")
            uniq = len(np.unique(row_keys(s.vectors)))
            print(f"{name}: {json.dumps(info)}, {uniq} distinct vectors", file=sys.stderr)
            result["variants"][variant] = {}
            for index_type in args.index:
                if args.check:
                    # users have searched: every other clip query is in the space's recent
                    # queries (soundscape.recall.log_query) when the check runs
                    from soundscape.recall import log_query

                    clips = [qd for qd in queries if qd["row"] < 0]
                    for qd in clips[::2]:
                        log_query(db.db.engine, space, qd["vec"])
                space, built = build_index(
                    db, space, index_type, args.check, args.maintenance_work_mem
                )
                print(f"{name} {index_type}: {json.dumps(built)}", file=sys.stderr)
                filt = evaluate(db, s, space, info["offset"], queries, filters, routes,
                                tuple(args.label_routes), args.exact_max_rows)  # fmt: skip
                result["variants"][variant][index_type] = {
                    "load": {**info, "rows": len(s), "distinct_vectors": uniq},
                    "index": built, "queries": len(queries), "filters": filt,
                }  # fmt: skip
                write_result(f"realaudio-{args.model}-{len(full)}-partial", result)
    finally:
        db.close()
    out = write_result(f"realaudio-{args.model}-{len(full)}", result)
    print(table(result))
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("command", choices=["build", "eval"])
    p.add_argument("--model", default="birdnet", help="birdnet or spectral")
    p.add_argument("--hours", type=float, default=5.6, help="hours of audio in the real set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sensors", type=int, default=4, help=f"sensors (1-{len(SENSORS)})")
    p.add_argument("--events-per-hour", type=float, default=40.0)
    p.add_argument("--n", type=int, default=0, help="windows (0: the real set; more: tiled)")
    p.add_argument("--eps", type=float, default=0.1, help="tiles: relative noise norm")
    p.add_argument("--exact-frac", type=float, default=0.1, help="tiles: rows copied exactly")
    csv_ = lambda v: [x for x in v.split(",") if x]  # noqa: E731
    p.add_argument("--index", type=csv_, default=["halfvec", "vector", "pca", "bit"])
    p.add_argument("--variants", type=csv_, default=["dups"], help="dups,nodup")
    p.add_argument("--ef", type=lambda v: [int(x) for x in csv_(v)], default=[40, 100, 400])
    p.add_argument("--queries", type=int, default=40, help="event queries (one per label)")
    p.add_argument("--background-queries", type=int, default=15)
    p.add_argument("--no-clip-queries", dest="clip_queries", action="store_false",
                   help="leave out the queries by each label's clip (search --audio CLIP)")  # fmt: skip
    p.add_argument("--exact-max-rows", type=int, default=20000,
                   help="run the exact route on filters passing at most this many windows")  # fmt: skip
    p.add_argument("--label-routes", type=csv_, default=["auto", "hnsw"],
                   help="routes that also run at k = 3 x the label's events")  # fmt: skip
    p.add_argument("--home", default=None, help="keep the scratch database in this folder")
    p.add_argument("--maintenance-work-mem", default="2GB",
                   help="for the index build: the graph must fit (1M halfvec windows: 4GB)")  # fmt: skip
    p.add_argument("--check", action="store_true",
                   help="measure each index's recall after its build (`spaces check`), so "
                   "that auto follows the recall guard as it does after `spaces index`; every "
                   "other clip query is first kept as a recent query, as users' searches are")  # fmt: skip
    args = p.parse_args()
    if not 1 <= args.sensors <= len(SENSORS):
        p.error(f"--sensors must be 1-{len(SENSORS)}")
    if args.command == "build":
        path = build(args.model, args.hours, args.seed, args.sensors, args.events_per_hour)
        s = load_set(path)
        print(f"{path}: {len(s)} windows, {s.meta['embedded_windows']} embedded, "
              f"{len(s.meta['events'])} events, {s.meta['embed_s']} s")  # fmt: skip
        return
    if args.n == 0:
        args.n = len(load_set(build(args.model, args.hours, args.seed, args.sensors,
                                    args.events_per_hour)))  # fmt: skip
    run_eval(args)


if __name__ == "__main__":
    main()
