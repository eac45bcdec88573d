"""Speakers: who says it. Enrol named voices from examples, search windows by a voice or an
enrolled speaker, and tell who speaks when in a recording from its stored voice windows.

Everything here works in a space of the ``voice`` model (``soundscape.embedders.voice``):
256-d voice prints of the windows of speech (windows without speech are not stored).

- **Enrolment** (``enrol``): each example file (or the same ``start_s``-``end_s`` span of every
  file) is decoded and windowed like ingest, its speech windows are embedded, and the speaker
  gets the L2-normalised mean of all its examples' window vectors (the *centroid*); each
  example's mean vector is stored with it (``speaker_examples``). Enrolling more examples under
  the same name adds them (the centroid is recomputed), ``replace`` starts over.
- **Search** (``voice_query``, ``speaker_query``): a query vector in the voice space, the mean
  voice print of an example's speech windows or a speaker's centroid, ranked through the same
  ``ranger.search_vector`` (HNSW) as every other space, so filters and events work alike.
- **Who speaks when** (``who``): the recording's speech is cut into regions by the VAD (its
  file re-decoded at 16 kHz, ~500x real time; the stored windows' spans when the file is gone).
  Within each region every voice window is scored by cosine against the enrolled centroids of
  its space; a Viterbi pass picks per window an enrolled speaker or "unknown" (worth the
  ``threshold``), paying ``switch_penalty`` for each change of speaker inside a region, so a
  run of windows does not flicker between two similar voices while a real change of speaker
  (a difference of more than the penalty, summed over the windows after it) still wins. The
  windows no enrolled speaker claims are clustered (average linkage on cosine distance, joined
  while the clusters' mean similarity is at least ``cluster_threshold``) into ``unknown-1``,
  ``unknown-2``, ... in order of first appearance. Each window speaks for the time around its
  centre (up to the midpoints with its neighbours, clipped to its region); consecutive windows
  of one speaker make a turn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape import vad
from soundscape.audio import decode_span, probe, window_array
from soundscape.db import register_vector
from soundscape.embedders import Embedder, get_model_class, load_model, model_facts, model_names
from soundscape.embedders.base import l2_normalize
from soundscape.errors import AudioError, SoundscapeError, StoredFileChanged
from soundscape.media_files import StoredFile, open_stored, sha256_file, stored_file
from soundscape.queries import Query
from soundscape.spaces import Space, ensure_space, get_space, list_spaces

#: cosine to a speaker's centroid above which a window may be that speaker (``who``). On the
#: test podcast, windows of an enrolled voice scored 0.75-0.91 (mean 0.85) against its
#: centroid, windows of another voice (a woman's against men's enrolments) 0.49-0.71.
DEFAULT_THRESHOLD = 0.8
#: unknown voices: clusters are joined while their windows' mean cosine is at least this
DEFAULT_CLUSTER_THRESHOLD = 0.75
#: what a change of speaker inside one region of speech costs (in cosine, ``who``)
DEFAULT_SWITCH_PENALTY = 0.1
#: ``who`` re-runs the VAD over the file in pieces of this many seconds (bounded memory)
VAD_PIECE_S = 300.0


# ------------------------------------------------------------------------------- spaces
def voice_model() -> str:
    """The model whose spaces hold voice prints: the registered model that declares
    ``voice_prints`` (the built-in ``voice``)."""
    for name in model_names():
        try:
            if get_model_class(name).voice_prints:
                return name
        except (SoundscapeError, ImportError):
            continue  # a plugin that cannot be imported here declares nothing
    raise SoundscapeError("no installed model makes voice prints; reinstall soundscape")


def voice_spaces(conn: Connection) -> list[Space]:
    """The spaces of models that make voice prints, oldest first."""
    return [s for s in list_spaces(conn) if model_facts(s.model).voice_prints]


def voice_space(conn: Connection, name: str | None = None, *, create: bool = False) -> Space:
    """The voice space named, else the one holding voice windows (the first created), else
    (``create``) the default voice space, created with the model's window and hop."""
    if name:
        space = get_space(conn, name)
        if not model_facts(space.model).voice_prints:
            raise SoundscapeError(
                f"space {name!r} holds {space.model} vectors, not voice prints; name a space "
                f"of the voice model ({', '.join(s.name for s in voice_spaces(conn)) or 'none yet'})"
            )
        return space
    spaces = voice_spaces(conn)
    filled = set(conn.execute(sa.text("SELECT DISTINCT space_id FROM recording_spaces")).scalars())
    for space in spaces:
        if space.id in filled:
            return space
    if spaces:
        return spaces[0]
    if not create:
        raise SoundscapeError(
            "no voice windows yet: ingest speech with the voice model first "
            "(soundscape ingest FILE --sensor S --model voice, or backfill --model voice)"
        )
    cls = get_model_class(voice_model())
    return ensure_space(conn, cls, float(cls.default_window_s), float(cls.default_hop_s))


def _model(space: Space) -> Embedder:
    return load_model(space.model, **space.params)


# ------------------------------------------------------------------------------- examples
@dataclass
class Example:
    """The speech windows of an example (a file or a span of it) in a voice space."""

    path: Path
    start_s: float
    end_s: float
    vectors: np.ndarray  # float32 [n_windows, dimension]
    speech_s: float

    @property
    def n_windows(self) -> int:
        return len(self.vectors)

    @property
    def mean(self) -> np.ndarray:
        return l2_normalize(self.vectors.mean(axis=0, keepdims=True))[0]


def embed_example(
    path: Path | str,
    space: Space,
    start_s: float | None = None,
    end_s: float | None = None,
    model: Embedder | None = None,
) -> Example:
    """Decode ``path`` (or its span), window it like ingest and embed its speech windows.
    An example without speech is an error that says so."""
    path = Path(path)
    info = probe(path)
    start = float(start_s or 0.0)
    end = float(end_s) if end_s is not None else info.duration_s
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise SoundscapeError(f"--start/--end must satisfy 0 <= start < end (got {start}, {end})")
    if start >= info.duration_s:
        raise SoundscapeError(
            f"--start {start:g} s is past the end of {path} ({info.duration_s:.1f} s)"
        )
    end = min(end, info.duration_s)
    samples = decode_span(path, space.sample_rate, start, end)
    model = model or _model(space)
    batch = window_array(samples, space.sample_rate, space.window_s, space.hop_s)
    kept = batch.subset(model.select_windows(batch.samples, batch.start_s))
    span = f" ({start:g}-{end:g} s)" if (start_s is not None or end_s is not None) else ""
    if not len(kept):
        raise SoundscapeError(
            f"{path}{span}: no speech found (the voice model needs windows of at least "
            f"{space.window_s:g} s with speech in half of them); give a recording, or a span "
            "of it, where the voice speaks"
        )
    vectors = [
        model.embed_audio(kept.samples[i : i + model.batch_size])
        for i in range(0, len(kept), model.batch_size)
    ]
    speech = sum(e - s for s, e in _speech(samples, space.sample_rate))
    return Example(path, start, end, np.concatenate(vectors).astype(np.float32), speech)


def _speech(samples: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
    """The VAD's speech regions of in-memory audio (resampled to 16 kHz when it is not)."""
    if sample_rate != vad.SAMPLE_RATE:
        samples = soxr.resample(samples, sample_rate, vad.SAMPLE_RATE)
    return vad.speech_regions(samples, vad.SAMPLE_RATE)


# ------------------------------------------------------------------------------- speakers
@dataclass
class Speaker:
    name: str
    space: str
    space_id: int
    centroid: np.ndarray = field(repr=False)
    n_windows: int
    speech_s: float
    n_examples: int
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def as_row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "space": self.space,
            "examples": self.n_examples,
            "windows": self.n_windows,
            "speech_s": self.speech_s,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


_SPEAKER_SQL = (
    "SELECT name, space, space_id, centroid, n_windows, speech_s, n_examples, created_at, "
    "updated_at FROM ranger.speakers"
)


def _speaker(row: Any) -> Speaker:
    m = dict(row._mapping)
    m["centroid"] = np.asarray(m["centroid"].to_numpy(), dtype=np.float32)
    m["speech_s"] = float(m["speech_s"])
    m["n_examples"] = int(m["n_examples"])
    return Speaker(**m)


def list_speakers(conn: Connection, space: Space | None = None) -> list[Speaker]:
    """Enrolled speakers by name (only those of ``space`` if given)."""
    register_vector(conn)
    rows = conn.execute(
        sa.text(f"{_SPEAKER_SQL} WHERE CAST(:s AS integer) IS NULL OR space_id = :s ORDER BY name"),
        {"s": None if space is None else space.id},
    )
    return [_speaker(r) for r in rows]


def get_speaker(conn: Connection, name: str) -> Speaker:
    register_vector(conn)
    row = conn.execute(sa.text(f"{_SPEAKER_SQL} WHERE name = :n"), {"n": name}).fetchone()
    if row is None:
        known = conn.execute(sa.text("SELECT name FROM speakers ORDER BY name")).scalars().all()
        raise SoundscapeError(
            f"no speaker named {name!r}; enrolled: {', '.join(known) or 'none'} "
            "(soundscape speakers enrol NAME FILE...)"
        )
    return _speaker(row)


@dataclass
class Enrolment:
    """What ``enrol`` did: the speaker as stored, the examples added and those already there."""

    speaker: Speaker
    added: list[Example]
    already: list[Path]


def enrol(
    conn: Connection,
    name: str,
    files: Sequence[Path | str],
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    space: str | None = None,
    replace: bool = False,
) -> Enrolment:
    """Enrol (or add examples to) speaker ``name`` from the speech in ``files`` (each file's
    ``start_s``-``end_s`` span if given). Every file is embedded before anything is stored;
    an example without speech fails the whole enrolment. A speaker stays in the space it was
    enrolled in (``space`` must then name it, or be left out)."""
    name = name.strip()
    if not name:
        raise SoundscapeError("a speaker needs a name")
    if not files:
        raise SoundscapeError("give at least one example FILE in which the speaker speaks")
    register_vector(conn)
    existing = conn.execute(
        sa.text("SELECT id, space_id FROM speakers WHERE name = :n"), {"n": name}
    ).fetchone()
    if existing is not None and replace:
        conn.execute(sa.text("DELETE FROM speakers WHERE id = :i"), {"i": existing.id})
        existing = None
    if existing is not None:
        target = next(s for s in list_spaces(conn) if s.id == existing.space_id)
        if space and space != target.name:
            raise SoundscapeError(
                f"speaker {name!r} is enrolled in space {target.name!r}, not {space!r}; "
                "use --replace to enrol it again in another space"
            )
    else:
        target = voice_space(conn, space, create=True)
    model = _model(target)
    examples: list[tuple[Example, str]] = []
    for f in files:
        example = embed_example(f, target, start_s, end_s, model=model)
        examples.append((example, sha256_file(Path(f))))
    if existing is None:
        speaker_id = conn.execute(
            sa.text(
                "INSERT INTO speakers (name, space_id, centroid, n_windows, speech_s) "
                "VALUES (:n, :s, :c, :w, :sp) RETURNING id"
            ),
            {
                "n": name,
                "s": target.id,
                "c": examples[0][0].mean,
                "w": examples[0][0].n_windows,
                "sp": examples[0][0].speech_s,
            },
        ).scalar_one()
    else:
        speaker_id = existing.id
    added: list[Example] = []
    already: list[Example] = []
    for example, digest in examples:
        inserted = conn.execute(
            sa.text(
                "INSERT INTO speaker_examples (speaker_id, path, sha256, start_s, end_s, "
                "n_windows, speech_s, embedding) VALUES (:k, :p, :h, :a, :b, :w, :sp, :e) "
                "ON CONFLICT (speaker_id, sha256, start_s, end_s) DO NOTHING RETURNING id"
            ),
            {
                "k": speaker_id,
                "p": str(example.path.resolve()),
                "h": digest,
                "a": example.start_s,
                "b": example.end_s,
                "w": example.n_windows,
                "sp": example.speech_s,
                "e": example.mean,
            },
        ).scalar()
        (added if inserted is not None else already).append(example)
    _recompute(conn, speaker_id)
    label_utterances(conn)  # who said what follows the enrolments
    return Enrolment(get_speaker(conn, name), added, [e.path for e in already])


def _recompute(conn: Connection, speaker_id: int) -> None:
    """The centroid from the stored examples: their means weighted by their window counts (the
    mean of all their windows' vectors), L2-normalised."""
    rows = conn.execute(
        sa.text(
            "SELECT embedding, n_windows, speech_s FROM speaker_examples WHERE speaker_id = :k"
        ),
        {"k": speaker_id},
    ).all()
    vectors = np.stack([np.asarray(r.embedding.to_numpy(), np.float32) for r in rows])
    weights = np.array([r.n_windows for r in rows], dtype=np.float64)
    centroid = l2_normalize((vectors * weights[:, None]).sum(axis=0, keepdims=True))[0]
    conn.execute(
        sa.text(
            "UPDATE speakers SET centroid = :c, n_windows = :w, speech_s = :sp, "
            "updated_at = now() WHERE id = :k"
        ),
        {
            "c": centroid,
            "w": int(weights.sum()),
            "sp": float(sum(r.speech_s for r in rows)),
            "k": speaker_id,
        },
    )


def remove_speakers(conn: Connection, names: Iterable[str]) -> int:
    """Remove speakers (and their examples); an unknown name is an error, nothing removed."""
    names = list(dict.fromkeys(names))
    known = set(
        conn.execute(
            sa.text("SELECT name FROM speakers WHERE name = ANY(:n)"), {"n": names}
        ).scalars()
    )
    missing = [n for n in names if n not in known]
    if missing:
        everyone = conn.execute(sa.text("SELECT name FROM speakers ORDER BY name")).scalars().all()
        raise SoundscapeError(
            f"no speaker named {', '.join(map(repr, missing))}; enrolled: "
            f"{', '.join(everyone) or 'none'}; nothing was removed"
        )
    result = conn.execute(sa.text("DELETE FROM speakers WHERE name = ANY(:n)"), {"n": names})
    label_utterances(conn)  # their utterances go to other speakers or unknown-N
    return int(result.rowcount or 0)


# ------------------------------------------------------------------------------- queries
def voice_query(
    conn: Connection,
    path: Path | str,
    space_name: str | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
) -> Query:
    """An example's voice as a query: the mean voice print of its speech windows."""
    space = voice_space(conn, space_name)
    example = embed_example(path, space, start_s, end_s)
    span = f" {example.start_s:g}-{example.end_s:g} s" if (start_s or end_s) else ""
    return Query(
        space,
        f"voice of {Path(path).name}{span} ({example.n_windows} speech windows)",
        vector=example.mean,
        kind="voice",
    )


def speaker_query(conn: Connection, name: str, space_name: str | None = None) -> Query:
    """An enrolled speaker as a query: its centroid, in the space it was enrolled in."""
    speaker = get_speaker(conn, name)
    if space_name and space_name != speaker.space:
        raise SoundscapeError(
            f"speaker {name!r} is enrolled in space {speaker.space!r}, not {space_name!r}"
        )
    space = get_space(conn, speaker.space)
    return Query(
        space,
        f"speaker {name!r} ({speaker.n_windows} enrolled windows)",
        vector=speaker.centroid,
        kind="speaker",
    )


# ------------------------------------------------------------------------------- who
@dataclass
class Turn:
    """A stretch of one speaker's speech."""

    speaker: str
    start_s: float
    end_s: float
    n_windows: int
    #: mean cosine of the turn's windows to the speaker's centroid (an unknown's: its cluster's)
    similarity: float
    enrolled: bool

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def as_row(self) -> dict[str, Any]:
        return {
            "speaker": self.speaker,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "duration_s": round(self.duration_s, 3),
            "windows": self.n_windows,
            "similarity": self.similarity,
            "enrolled": self.enrolled,
        }


@dataclass
class Diarization:
    recording_id: int
    path: str
    space: Space
    turns: list[Turn]
    #: "vad" (regions from the re-decoded file) or "windows" (the file is gone)
    regions_from: str
    speech_s: float
    speakers: list[str]


def who(
    conn: Connection,
    recording_id: int,
    *,
    space_name: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    cluster_threshold: float = DEFAULT_CLUSTER_THRESHOLD,
    switch_penalty: float = DEFAULT_SWITCH_PENALTY,
) -> Diarization:
    """Who speaks when in a stored recording (see the module docstring)."""
    for value, what in (
        (threshold, "threshold"),
        (cluster_threshold, "cluster threshold"),
    ):
        if not (math.isfinite(value) and -1 <= value <= 1):
            raise SoundscapeError(f"the {what} is a cosine similarity in [-1, 1], not {value}")
    if not (math.isfinite(switch_penalty) and switch_penalty >= 0):
        raise SoundscapeError(f"the switch penalty must be >= 0, not {switch_penalty}")
    rec = conn.execute(
        sa.text("SELECT id, path, duration_s FROM recordings WHERE id = :r"), {"r": recording_id}
    ).fetchone()
    if rec is None:
        raise SoundscapeError(
            f"no recording with id {recording_id} (see `soundscape recordings list`)"
        )
    space = _recording_voice_space(conn, recording_id, space_name)
    register_vector(conn)
    rows = conn.execute(
        sa.text(
            "SELECT start_s, end_s, embedding FROM segments WHERE recording_id = :r "
            "AND space_id = :s ORDER BY start_s"
        ),
        {"r": recording_id, "s": space.id},
    ).all()
    speakers = list_speakers(conn, space)
    if not rows:
        return Diarization(recording_id, rec.path, space, [], "windows", 0.0, [])
    starts = np.array([r.start_s for r in rows], dtype=np.float64)
    ends = np.array([r.end_s for r in rows], dtype=np.float64)
    vectors = np.stack([np.asarray(r.embedding.to_numpy(), np.float32) for r in rows])
    regions, source = _regions(stored_file(conn, recording_id), starts, ends)
    turns = diarize(
        starts,
        ends,
        vectors,
        regions,
        [s.name for s in speakers],
        np.stack([s.centroid for s in speakers]) if speakers else np.zeros((0, space.dimension)),
        threshold=threshold,
        cluster_threshold=cluster_threshold,
        switch_penalty=switch_penalty,
    )
    speech = float(sum(e - s for s, e in regions))
    return Diarization(
        recording_id, rec.path, space, turns, source, speech, [s.name for s in speakers]
    )


# ------------------------------------------------------------------------------- who said what
def label_utterances(conn: Connection, recording_ids: Iterable[int] | None = None) -> int:
    """Store who said each utterance (``utterances.speaker``) of these recordings (default:
    every recording with utterances and voice windows): the recording's voice windows are
    diarised (``diarize``) with its utterances as the regions of speech, so the turns never
    cross an utterance's edges, and each utterance gets the speaker of the turn that covers
    most of it: an enrolled name, else ``unknown-N``. Runs in the caller's transaction after
    ingest and whenever enrolments change (``enrol``, ``remove_speakers``); no audio is read.
    Returns the number of utterances labelled."""
    ids = None if recording_ids is None else sorted(set(recording_ids))
    spaces = voice_spaces(conn)
    if not spaces or ids == []:
        return 0
    register_vector(conn)
    # per recording, the oldest voice space it has windows in (as `speakers who` picks it)
    rows = conn.execute(
        sa.text(
            "SELECT rs.recording_id, min(rs.space_id) AS space_id FROM recording_spaces rs "
            "WHERE rs.space_id = ANY(:spaces) "
            "AND (CAST(:ids AS bigint[]) IS NULL OR rs.recording_id = ANY(:ids)) "
            "AND EXISTS (SELECT 1 FROM utterances u WHERE u.recording_id = rs.recording_id) "
            "GROUP BY rs.recording_id"
        ),
        {"spaces": [sp.id for sp in spaces], "ids": ids},
    ).all()
    by_id = {sp.id: sp for sp in spaces}
    n = 0
    for rec_id, space_id in rows:
        space = by_id[space_id]
        windows = conn.execute(
            sa.text(
                "SELECT start_s, end_s, embedding FROM segments WHERE recording_id = :r "
                "AND space_id = :s ORDER BY start_s"
            ),
            {"r": rec_id, "s": space_id},
        ).all()
        utterances = conn.execute(
            sa.text("SELECT id, start_s, end_s FROM utterances WHERE recording_id = :r"),
            {"r": rec_id},
        ).all()
        labels: dict[int, str | None] = {u.id: None for u in utterances}
        if windows:
            starts = np.array([w.start_s for w in windows], dtype=np.float64)
            ends = np.array([w.end_s for w in windows], dtype=np.float64)
            vectors = np.stack([np.asarray(w.embedding.to_numpy(), np.float32) for w in windows])
            speakers = list_speakers(conn, space)
            centroids = (
                np.stack([k.centroid for k in speakers])
                if speakers
                else np.zeros((0, space.dimension), np.float32)
            )
            regions = _join([(float(u.start_s), float(u.end_s)) for u in utterances], 0.0)
            turns = diarize(starts, ends, vectors, regions, [k.name for k in speakers], centroids)
            for u in utterances:
                cover: dict[str, float] = {}
                for t in turns:
                    overlap = min(t.end_s, u.end_s) - max(t.start_s, u.start_s)
                    if overlap > 0:
                        cover[t.speaker] = cover.get(t.speaker, 0.0) + overlap
                labels[u.id] = max(cover, key=lambda k: cover[k]) if cover else None
        conn.execute(
            sa.text(
                "UPDATE utterances u SET speaker = x.speaker FROM unnest(CAST(:ids AS bigint[]), "
                "CAST(:names AS text[])) x(id, speaker) WHERE u.id = x.id "
                "AND u.speaker IS DISTINCT FROM x.speaker"
            ),
            {"ids": list(labels), "names": list(labels.values())},
        )
        n += sum(1 for v in labels.values() if v is not None)
    return n


def _recording_voice_space(conn: Connection, recording_id: int, name: str | None) -> Space:
    done = set(
        conn.execute(
            sa.text("SELECT space_id FROM recording_spaces WHERE recording_id = :r"),
            {"r": recording_id},
        ).scalars()
    )
    if name:
        space = voice_space(conn, name)
        if space.id not in done:
            raise SoundscapeError(
                f"recording {recording_id} has no windows in space {name!r}; "
                f"run `soundscape backfill --model {space.name}` first"
            )
        return space
    for space in voice_spaces(conn):
        if space.id in done:
            return space
    raise SoundscapeError(
        f"recording {recording_id} has no voice windows; add them with "
        "`soundscape backfill --model voice` (or ingest it with --model voice)"
    )


def _regions(
    stored: StoredFile, starts: np.ndarray, ends: np.ndarray
) -> tuple[list[tuple[float, float]], str]:
    """Speech regions of the recording: the VAD over its file (decoded in pieces, read by
    its stored identity: ``media_files.open_stored``), else the union of the windows' spans
    when the file cannot be read or is not the one ingested."""
    try:
        with open_stored(stored) as path:
            duration = probe(path).duration_s
            regions: list[tuple[float, float]] = []
            at = 0.0
            while at < duration:
                piece = decode_span(path, vad.SAMPLE_RATE, at, min(duration, at + VAD_PIECE_S))
                regions += [(at + s, at + e) for s, e in vad.speech_regions(piece, vad.SAMPLE_RATE)]
                at += VAD_PIECE_S
        return _join(regions, 0.0), "vad"
    except (AudioError, StoredFileChanged, OSError, ValueError):
        return _join(list(zip(starts.tolist(), ends.tolist())), 0.0), "windows"


def _join(spans: list[tuple[float, float]], gap: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1] + gap:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def diarize(
    starts: np.ndarray,
    ends: np.ndarray,
    vectors: np.ndarray,
    regions: list[tuple[float, float]],
    names: list[str],
    centroids: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    cluster_threshold: float = DEFAULT_CLUSTER_THRESHOLD,
    switch_penalty: float = DEFAULT_SWITCH_PENALTY,
) -> list[Turn]:
    """Turns from voice windows (ordered by start), speech regions and enrolled centroids."""
    n = len(starts)
    k = len(names)
    scores = vectors @ centroids.T if k else np.zeros((n, 0), np.float32)
    # each window belongs to the region it overlaps most (windows outside every region: none)
    region_of = np.full(n, -1)
    for i in range(n):
        overlaps = [min(ends[i], e) - max(starts[i], s) for s, e in regions]
        if overlaps and max(overlaps) > 0:
            region_of[i] = int(np.argmax(overlaps))
    state = np.full(n, k)  # k = unknown
    for r in range(len(regions)):
        idx = np.flatnonzero(region_of == r)
        if len(idx):
            emissions = np.concatenate(
                [scores[idx], np.full((len(idx), 1), threshold, np.float32)], axis=1
            )
            state[idx] = _viterbi(emissions, switch_penalty)
    labels = [names[s] if s < k else "" for s in state]
    unknown = np.flatnonzero(state == k)
    cluster_vectors: dict[str, np.ndarray] = {}
    if len(unknown):
        if len(unknown) == 1:
            clusters = np.array([1])
        else:
            # scipy.cluster only here: `soundscape search` imports this module (--voice) and
            # scipy's import was a quarter of its start-up
            from scipy.cluster.hierarchy import fcluster, linkage

            tree = linkage(vectors[unknown], method="average", metric="cosine")
            clusters = fcluster(tree, t=1 - cluster_threshold, criterion="distance")
        order = list(dict.fromkeys(clusters.tolist()))  # first appearance in time
        for i, c in zip(unknown, clusters):
            labels[i] = f"unknown-{order.index(c) + 1}"
        # a run of unknown windows in one region is one voice: its most frequent cluster
        for r in range(len(regions)):
            here = [int(i) for i in np.flatnonzero(region_of == r) if state[i] == k]
            for run in _runs(here):
                names_in = [labels[i] for i in run]
                top = max(dict.fromkeys(names_in), key=names_in.count)
                for i in run:
                    labels[i] = top
        for label in set(labels[i] for i in unknown):
            members = [i for i in unknown if labels[i] == label]
            cluster_vectors[label] = l2_normalize(vectors[members].mean(axis=0, keepdims=True))[0]
    turns: list[Turn] = []
    centres = (starts + ends) / 2
    for r, (rs, re_) in enumerate(regions):
        idx = np.flatnonzero(region_of == r)
        if not len(idx):
            continue
        bounds = [rs, *((centres[idx][:-1] + centres[idx][1:]) / 2).tolist(), re_]
        for j, i in enumerate(idx):
            label = labels[i]
            target = centroids[names.index(label)] if label in names else cluster_vectors[label]
            sim = float(vectors[i] @ target)
            last = turns[-1] if turns else None
            if last is not None and last.speaker == label and last.end_s >= bounds[j] - 1e-9:
                total = last.similarity * last.n_windows + sim
                last.n_windows += 1
                last.end_s = bounds[j + 1]
                last.similarity = total / last.n_windows
            else:
                turns.append(Turn(label, bounds[j], bounds[j + 1], 1, sim, label in names))
    return turns


def _runs(indices: list[int]) -> list[list[int]]:
    """Consecutive integers grouped: [1, 2, 4] -> [[1, 2], [4]]."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _viterbi(emissions: np.ndarray, penalty: float) -> np.ndarray:
    """The state sequence maximising the summed emissions minus ``penalty`` per change."""
    n, m = emissions.shape
    best = emissions[0].astype(np.float64).copy()
    back = np.zeros((n, m), dtype=np.int64)
    for t in range(1, n):
        stay = best
        switch = best.max() - penalty
        from_state = int(np.argmax(best))
        back[t] = np.where(stay >= switch, np.arange(m), from_state)
        best = np.maximum(stay, switch) + emissions[t]
    path = np.zeros(n, dtype=np.int64)
    path[-1] = int(np.argmax(best))
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def rttm(diarization: Diarization) -> list[str]:
    """The turns as RTTM lines (NIST: ``SPEAKER file 1 start duration <NA> <NA> name <NA>
    <NA>``); the file id is the recording's file name without extension."""
    file_id = (
        Path(diarization.path).stem.replace(" ", "_") or f"recording-{diarization.recording_id}"
    )
    return [
        f"SPEAKER {file_id} 1 {t.start_s:.3f} {t.duration_s:.3f} <NA> <NA> "
        f"{t.speaker.replace(' ', '_')} <NA> <NA>"
        for t in diarization.turns
    ]
