"""What is said: transcribe the speech in recordings, store it, search it, print transcripts.

- **Transcribe** (``SpeechStream``, ``TranscriptTarget``): a recording is decoded as a stream
  (16 kHz mono, ``audio.WindowStream`` blocks of 30 s, so a 2-hour file never sits in memory),
  voice activity detection (``soundscape.vad``, Silero) finds the speech in buffers of about
  two minutes, and only the speech is transcribed: regions are cut at quiet points into pieces
  of at most the transcriber's chunk length (Whisper: 30 s) and packed, with a short pause
  between them, into chunks of at most that length. Word times are mapped back to the
  recording. A forest soundscape costs one VAD pass and yields nothing.
- **Store**: one ``transcripts`` row per recording and transcriber version and an
  ``utterances`` row per utterance (times, absolute and local time like windows, text, words
  with times as JSON), inside the ingest transaction of the recording (``soundscape.ingest``).
- **Search** (``search_speech``): ``ranger.search_speech`` (sql/speech.sql) does it in SQL:
  full text, then a fuzzy (trigram) fallback, then words Whisper doubted that sound like the
  query (Double Metaphone; the vocabulary marks them: ``add_vocabulary``); hits at word
  precision with a marked snippet, how they matched and who said them (``SpeechRequest.speaker``
  keeps one speaker's).
- **Transcripts** (``get_transcript``, ``to_srt``, ``to_vtt``, ``to_text``), with the speaker
  of each utterance (``utterances.speaker``, set by ``soundscape.speakers.label_utterances``);
  ``recording_of`` finds a recording by id or path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.audio import Opened, Source, WindowStream
from soundscape.db import raw_connection
from soundscape.errors import BadOption, SoundscapeError
from soundscape.ingest_targets import Progress, Recording, Stored
from soundscape.media_files import sha256_file
from soundscape.queries import FILTER_ARGS, Filters, check_filter_names
from soundscape.results import Hit, merge_events
from soundscape.transcribers import Transcriber, Utterance, Word
from soundscape.vad import speech_regions

#: audio decoded per step, and VAD run on buffers of at least this much (seconds)
BLOCK_S = 30.0
BUFFER_S = 120.0
#: a speech region ending this close to the end of the buffer may go on in the next block
OPEN_MARGIN_S = 1.0
#: a region carried over longer than this is cut at a quiet point (bounded memory)
MAX_CARRY_S = 60.0
#: silence put between the speech pieces packed into one chunk
PIECE_GAP_S = 0.3
#: an utterance whose consecutive words are further apart than this is split there
SPLIT_GAP_S = 2.0
#: search: hits of one recording closer than this are one event (--events)
EVENT_GAP_S = 1.0


# ------------------------------------------------------------------------- chunking
@dataclass
class Chunk:
    """Speech packed for one transcriber call, and where each piece sits in the recording."""

    samples: np.ndarray
    #: (offset in the chunk, start in the recording, length), seconds, in order
    pieces: list[tuple[float, float, float]]

    @property
    def speech_s(self) -> float:
        return sum(p[2] for p in self.pieces)

    def to_recording(self, t: float, end: bool = False) -> float:
        """A time in the chunk as a time in the recording. A time in the pause between two
        pieces goes to the end of the earlier piece (``end``) or the start of the next."""
        for i, (off, start, length) in enumerate(self.pieces):
            nxt = self.pieces[i + 1][0] if i + 1 < len(self.pieces) else None
            if nxt is not None and t >= nxt:
                continue
            if t <= off:
                return start
            if t <= off + length or nxt is None:
                return start + min(t - off, length)
            return start + length if end else self.pieces[i + 1][1]
        return self.pieces[-1][1] + self.pieces[-1][2]


def quiet_point(x: np.ndarray, sr: int, lo: float, hi: float, frame_s: float = 0.05) -> float:
    """The quietest ``frame_s`` moment of ``x`` between ``lo`` and ``hi`` seconds (its centre):
    where to cut speech that runs on too long."""
    f = max(1, round(frame_s * sr))
    a, b = max(0, round(lo * sr)), min(len(x), round(hi * sr))
    n = (b - a) // f
    if n < 1:
        return (lo + hi) / 2
    energy = np.square(x[a : a + n * f].reshape(n, f)).mean(axis=1)
    return (a + (int(np.argmin(energy)) + 0.5) * f) / sr


def split_region(
    x: np.ndarray, sr: int, start: float, end: float, max_s: float
) -> list[tuple[float, float]]:
    """Cut a region longer than ``max_s`` at quiet points into pieces of at most ``max_s``."""
    out = []
    while end - start > max_s:
        cut = quiet_point(x, sr, start + max_s * 0.6, start + max_s - 0.1)
        out.append((start, cut))
        start = cut
    out.append((start, end))
    return out


def pack(
    x: np.ndarray, sr: int, offset_s: float, regions: list[tuple[float, float]], max_s: float
) -> Iterator[Chunk]:
    """Pack speech regions of the buffer ``x`` (starting at ``offset_s`` in the recording) into
    chunks of at most ``max_s`` seconds, each region a piece (long ones split first)."""
    gap = np.zeros(round(PIECE_GAP_S * sr), dtype=np.float32)
    parts: list[np.ndarray] = []
    pieces: list[tuple[float, float, float]] = []
    length = 0.0
    for start, end in regions:
        for a, b in split_region(x, sr, start, end, max_s):
            seg = x[round(a * sr) : round(b * sr)]
            if seg.size == 0:
                continue
            need = seg.size / sr + (PIECE_GAP_S if parts else 0.0)
            if parts and length + need > max_s:
                yield Chunk(np.concatenate(parts), pieces)
                parts, pieces, length = [], [], 0.0
            if parts:
                parts.append(gap)
                length += PIECE_GAP_S
            pieces.append((length, offset_s + a, seg.size / sr))
            parts.append(seg)
            length += seg.size / sr
    if parts:
        yield Chunk(np.concatenate(parts), pieces)


class SpeechStream:
    """Iterate the speech chunks of a file with bounded memory; afterwards ``duration_s``,
    ``truncated`` (as ``WindowStream``) and ``speech_s`` (seconds of speech found) are set.

    ``on_progress`` gets the seconds of audio finished (VAD done and their speech handed on)
    as the stream advances."""

    def __init__(
        self,
        path: Source,
        *,
        sample_rate: int = 16000,
        max_chunk_s: float = 30.0,
        allow_truncated: bool = False,
        on_progress: Callable[[float], None] | None = None,
    ) -> None:
        # a stored recording comes opened and checked (media_files.open_stored)
        self.source: Path | Opened = path if isinstance(path, Opened) else Path(path)
        self.path = path.path if isinstance(path, Opened) else Path(path)
        self.sample_rate = sample_rate
        self.max_chunk_s = max_chunk_s
        self.allow_truncated = allow_truncated
        self.on_progress = on_progress
        self.duration_s: float | None = None
        self.truncated: str | None = None
        self.speech_s = 0.0
        #: the most audio held at once (samples), for the memory benchmark
        self.peak_buffer = 0

    def _blocks(self, stream: WindowStream) -> Iterator[np.ndarray]:
        for batch in stream:
            valid = round((float(batch.end_s[0]) - float(batch.start_s[0])) * self.sample_rate)
            yield batch.samples[0, : max(0, valid)]

    def __iter__(self) -> Iterator[Chunk]:
        sr = self.sample_rate
        stream = WindowStream(
            self.source, sr, BLOCK_S, BLOCK_S, batch_size=1, allow_truncated=self.allow_truncated
        )
        buf = np.zeros(0, dtype=np.float32)
        buf0 = 0  # the buffer's first sample in the recording
        blocks = self._blocks(stream)
        done = False
        while not done:
            parts = [buf]
            size = buf.size
            for block in blocks:
                parts.append(block.copy())
                size += block.size
                if size >= BUFFER_S * sr:
                    break
            else:
                done = True
            buf = np.concatenate(parts)
            self.peak_buffer = max(self.peak_buffer, buf.size)
            regions = speech_regions(buf, sr) if buf.size else []
            length = buf.size / sr
            if done:
                closed, cut = regions, buf.size
            else:
                closed = [r for r in regions if r[1] < length - OPEN_MARGIN_S]
                rest = regions[len(closed) :]
                cut_s = rest[0][0] if rest else length - OPEN_MARGIN_S
                if length - cut_s > MAX_CARRY_S:  # one region runs on: cut it where it is quiet
                    cut_s = quiet_point(buf, sr, length - MAX_CARRY_S / 2, length - 5.0)
                    closed.append((rest[0][0], cut_s))
                cut = round(cut_s * sr)
            self.speech_s += sum(e - s for s, e in closed)
            yield from pack(buf, sr, buf0 / sr, closed, self.max_chunk_s)
            if self.on_progress is not None:
                self.on_progress(cut / sr)
            buf = buf[cut:].copy()
            buf0 += cut
        self.duration_s = stream.duration_s
        self.truncated = stream.truncated


def place(utterances: list[Utterance], chunk: Chunk) -> list[Utterance]:
    """Utterances of a chunk with their words' times in the recording, split where words lie
    more than ``SPLIT_GAP_S`` apart (speech from pieces far apart packed into one chunk)."""
    out: list[Utterance] = []
    for u in utterances:
        words = [
            Word(w.word, chunk.to_recording(w.start_s), chunk.to_recording(w.end_s, end=True),
                 w.probability)
            for w in u.words
        ]  # fmt: skip
        for w in words:
            w.end_s = max(w.end_s, w.start_s)
        groups: list[list[Word]] = []
        for w in words:
            if groups and w.start_s - groups[-1][-1].end_s <= SPLIT_GAP_S:
                groups[-1].append(w)
            else:
                groups.append([w])
        for g in groups:
            text = u.text if len(groups) == 1 else " ".join(w.word for w in g)
            out.append(Utterance(g[0].start_s, g[-1].end_s, text, g, u.language))
    return out


# ------------------------------------------------------------------------- storing
_INSERT = (
    "INSERT INTO utterances (transcript_id, recording_id, sensor_id, start_s, end_s, "
    "starts_at, local_date, local_time, text, words, language) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)"
)


@dataclass
class TranscriptTarget:
    """A transcriber as an ingest target (``ingest_targets.Target``): a recording's
    transcript by this model version and its utterances."""

    transcriber: Transcriber

    @property
    def name(self) -> str:
        return self.transcriber.name

    @property
    def key(self) -> tuple[str, str]:
        """(model, version), as ``transcripts`` keys a transcript."""
        return (self.transcriber.name, self.transcriber.version)

    def has(self, conn: Connection, recording_id: int) -> bool:
        return self.key in transcribed(conn, recording_id)

    def clear(self, conn: Connection, recording_id: int) -> None:
        clear_transcripts(conn, recording_id, [self.key])

    def begin(
        self, conn: Connection, recording: Recording, on_progress: Progress | None
    ) -> UtteranceWriter:
        return UtteranceWriter(conn, self.transcriber, recording, on_progress)


class UtteranceWriter:
    """Transcribe a recording's speech chunk by chunk and store its transcript and utterances
    in the ingest transaction (the caller removed an older transcript by the same version)."""

    def __init__(
        self,
        conn: Connection,
        transcriber: Transcriber,
        recording: Recording,
        on_progress: Progress | None,
    ) -> None:
        self.conn, self.transcriber, self.recording = conn, transcriber, recording
        self.transcript_id = conn.execute(
            sa.text(
                "INSERT INTO transcripts (recording_id, model, model_version, params) "
                "VALUES (:r, :m, :v, CAST(:p AS jsonb)) RETURNING id"
            ),
            {
                "r": recording.id,
                "m": transcriber.name,
                "v": transcriber.version,
                "p": json.dumps(transcriber.params, sort_keys=True),
            },
        ).scalar_one()
        self.stream = SpeechStream(
            recording.source,
            sample_rate=transcriber.sample_rate,
            max_chunk_s=transcriber.max_chunk_s,
            allow_truncated=recording.allow_truncated,
            on_progress=on_progress,
        )
        self.n = 0

    def batches(self) -> Generator[Chunk, None, None]:
        yield from self.stream

    def feed(self, chunk: Chunk) -> None:
        utterances = place(self.transcriber.transcribe(chunk.samples), chunk)
        if not utterances:
            return
        rec = self.recording
        times = rec.times([u.start_s for u in utterances])
        with raw_connection(self.conn).cursor() as cur:
            cur.executemany(
                _INSERT,
                [
                    (
                        self.transcript_id, rec.id, rec.sensor_id, u.start_s, u.end_s, *times[i],
                        u.text, json.dumps([w.as_json() for w in u.words]), u.language,
                    )
                    for i, u in enumerate(utterances)
                ],
            )  # fmt: skip
        self.n += len(utterances)
        add_vocabulary(self.conn, (w for u in utterances for w in u.words))

    def finish(self) -> Stored:
        stream = self.stream
        assert stream.duration_s is not None
        self.conn.execute(
            sa.text("UPDATE transcripts SET n_utterances = :n, speech_s = :s WHERE id = :t"),
            {"n": self.n, "s": stream.speech_s, "t": self.transcript_id},
        )
        return Stored(self.n, stream.duration_s, stream.truncated)


def vocabulary_word(word: str) -> str:
    """A word as the vocabulary of the fuzzy search keeps it: lower case, letters and digits."""
    return "".join(ch for ch in word.lower() if ch.isalnum())


def add_vocabulary(conn: Connection, words: Iterable[Word]) -> None:
    """Add the words not yet in ``speech_words``, in the caller's transaction: every word once,
    and a word Whisper doubted (``ranger._speech_doubtful`` of its probability) once more with
    ``doubtful`` (the phonetic route looks those up by their sound). The table has no unique
    key on purpose: an insert never waits for another ingest's uncommitted words (two workers
    may both add a new word; the search reads it DISTINCT)."""
    seen: dict[str, float | None] = {}
    for w in words:
        v = vocabulary_word(w.word)
        if v:
            p = w.probability
            old = seen.get(v, 1.0)
            seen[v] = p if p is not None and (old is None or p < old) else old
    if not seen:
        return
    new = sorted(seen)
    conn.execute(
        sa.text(
            "INSERT INTO speech_words (word, doubtful) "
            "SELECT x.w, d.doubtful FROM unnest(CAST(:w AS text[]), CAST(:p AS real[])) x(w, p) "
            "CROSS JOIN LATERAL (VALUES (false), (ranger._speech_doubtful(x.p))) d(doubtful) "
            "WHERE NOT EXISTS ("
            "SELECT 1 FROM speech_words s WHERE s.word = x.w AND s.doubtful = d.doubtful) "
            "GROUP BY x.w, d.doubtful"
        ),
        {"w": new, "p": [seen[v] for v in new]},
    )


def transcribed(conn: Connection, recording_id: int) -> set[tuple[str, str]]:
    """(model, version) of the transcripts a recording has."""
    rows = conn.execute(
        sa.text("SELECT model, model_version FROM transcripts WHERE recording_id = :r"),
        {"r": recording_id},
    )
    return {(r.model, r.model_version) for r in rows}


def clear_transcripts(conn: Connection, recording_id: int, models: list[tuple[str, str]]) -> None:
    """Remove a recording's transcripts (and utterances) by these (model, version)s."""
    for model, version in models:
        conn.execute(
            sa.text(
                "DELETE FROM transcripts WHERE recording_id = :r AND model = :m "
                "AND model_version = :v"
            ),
            {"r": recording_id, "m": model, "v": version},
        )


def follow_recording(conn: Connection, recording_id: int, sensor_id: int, tz: str,
                     started_at: datetime | None) -> None:  # fmt: skip
    """Utterances of a recording follow its (new) sensor and start time (``--replace``)."""
    conn.execute(
        sa.text(
            "UPDATE utterances SET sensor_id = :sensor, "
            "starts_at = CAST(:start AS timestamptz) + start_s * interval '1 second', "
            "local_date = ((CAST(:start AS timestamptz) + start_s * interval '1 second') "
            "AT TIME ZONE :tz)::date, "
            "local_time = ((CAST(:start AS timestamptz) + start_s * interval '1 second') "
            "AT TIME ZONE :tz)::time WHERE recording_id = :r"
        ),
        {"sensor": sensor_id, "start": started_at, "tz": tz, "r": recording_id},
    )


# ------------------------------------------------------------------------- search
@dataclass
class SpeechHit(Hit):
    """A search hit in what was said: the matching words' span (``start_s``/``end_s``), the
    utterance's ``text``, a ``snippet`` with the match marked ``**like this**``; ``segment_id``
    is the utterance's id, ``method`` the route that found it (``fulltext``, ``fuzzy`` or
    ``phonetic``), ``match`` how (``exact``, ``stem``, ``trigram``, ``phonetic``), ``matched``
    the words as said, ``speaker`` who said them (None until the recording has voice windows)."""

    snippet: str = ""
    text: str = ""
    language: str | None = None
    model: str = ""
    match: str = ""
    matched: str | None = None
    speaker: str | None = None

    def as_row(self) -> dict[str, Any]:
        row = super().as_row()
        row["utterance_id"] = row.pop("segment_id")
        return row


@dataclass
class SpeechRequest:
    """A search in what was said: ``query`` in websearch syntax (words, "phrases",
    -exclusions, or), ``fuzzy`` fallback (trigram similarity >= ``min_similarity``) while
    fewer than ``limit`` full-text hits are found; ``events`` merges hits of one recording
    less than ``EVENT_GAP_S`` apart."""

    query: str
    filters: Filters = field(default_factory=Filters)
    limit: int = 10
    fuzzy: bool = True
    min_similarity: float = 0.6
    events: bool = False
    #: only what this speaker said (an enrolled name, or unknown-N; ``utterances.speaker``)
    speaker: str | None = None


_SEARCH = (
    f"SELECT * FROM ranger.search_speech(p_query => :q, p_k => :k, {FILTER_ARGS}, "
    "p_fuzzy => :fuzzy, p_min_similarity => CAST(:min_sim AS real), "
    "p_speaker => CAST(:speaker AS text))"
)


#: the longest ``--said`` text (characters); ranger.search_speech refuses longer ones too (a
#: megabyte query parsed for 30 s into "stack depth limit exceeded")
MAX_QUERY = 1000


def search_speech(conn: Connection, request: SpeechRequest) -> list[SpeechHit]:
    """Run ``ranger.search_speech``: hits best first (full-text hits before fuzzy ones)."""
    if not request.query.strip():
        raise SoundscapeError("empty search text: say what was said, e.g. --said bitcoin")
    if len(request.query) > MAX_QUERY:
        raise BadOption(
            f"{len(request.query)} characters of search text; at most {MAX_QUERY} (a few words "
            'or "a phrase")',
            "--said",
        )
    if not 1 <= request.limit <= 10000:
        raise SoundscapeError(f"the limit must be between 1 and 10000, not {request.limit}")
    if not 0 < request.min_similarity <= 1:
        raise SoundscapeError("the minimum similarity must be in (0, 1]")
    check_filter_names(conn, request.filters)
    params = request.filters.params()
    params.pop("min_score")
    fetch = min(10000, request.limit * 10) if request.events else request.limit
    rows = conn.execute(
        sa.text(_SEARCH),
        {
            **params,
            "q": request.query,
            "k": fetch,
            "fuzzy": request.fuzzy,
            "min_sim": request.min_similarity,
            "speaker": request.speaker,
        },
    ).mappings()
    hits = [
        SpeechHit(
            segment_id=r["utterance_id"], score=r["score"], recording_id=r["recording_id"],
            path=r["path"], sensor=r["sensor"], site=r["site"], quadrant=r["quadrant"],
            start_s=r["start_s"], end_s=r["end_s"], starts_at=r["starts_at"],
            local_date=r["local_date"], local_time=r["local_time"], label=request.query,
            method=r["method"], snippet=r["snippet"], text=r["text"], language=r["language"],
            model=r["model"], match=r["match"], matched=r["matched"], speaker=r["speaker"],
        )
        for r in rows
    ]  # fmt: skip
    if request.events:
        merged = merge_events(list(hits), gap_s=EVENT_GAP_S)
        return [h for h in merged if isinstance(h, SpeechHit)][: request.limit]
    return hits


def said_miss(conn: Connection, query: str | None) -> str:
    """What to tell a user whose search in what was said found nothing: transcribe first when
    nothing is transcribed, else that the words were not heard (and what else to try)."""
    n = conn.execute(sa.text("SELECT count(DISTINCT recording_id) FROM transcripts")).scalar()
    if not n:
        return "nothing is transcribed yet: transcribe recordings with `ingest --model whisper`"
    return (
        f"nothing said matches {query!r} in {n} transcribed recording(s) (with these filters); "
        "try other words, a shorter phrase, or widen the filters"
    )


#: the columns of a table of hits in what was said (``said_rows``)
SAID_COLUMNS = [
    "rank", "score", "sensor", "site", "quadrant", "local", "start_s", "end_s", "speaker",
    "snippet", "path", "utterance_id",
]  # fmt: skip
#: the columns ``full`` adds (JSON, CSV)
SAID_EXTRA_COLUMNS = [
    "recording_id", "starts_at", "method", "match", "matched", "text", "language", "model",
]  # fmt: skip


def said_rows(
    hits: Sequence[Hit], *, events: bool, clips: bool = False, full: bool = True
) -> tuple[list[dict[str, Any]], list[str]]:
    """Ranked rows of hits in what was said and the columns to show (as ``results.hit_rows``
    for windows): ``n_windows`` for events, ``clip`` after an export, ``full`` adds
    ``SAID_EXTRA_COLUMNS``."""
    rows = [{"rank": rank, **hit.as_row()} for rank, hit in enumerate(hits, start=1)]
    columns = list(SAID_COLUMNS)
    if events:
        columns.insert(columns.index("snippet"), "n_windows")
    if clips:
        columns.append("clip")
    if full:
        columns += SAID_EXTRA_COLUMNS
    return rows, columns


# ------------------------------------------------------------------------- transcripts
@dataclass
class TranscriptLine:
    utterance_id: int
    start_s: float
    end_s: float
    text: str
    words: list[dict[str, Any]]
    starts_at: datetime | None
    local_date: Any
    local_time: Any
    language: str | None
    #: who said it (an enrolled speaker or unknown-N); None before voices are known
    speaker: str | None = None

    @property
    def said(self) -> str:
        """The text with its speaker: ``guest: ...`` (just the text when unknown)."""
        return f"{self.speaker}: {self.text}" if self.speaker else self.text

    def as_row(self) -> dict[str, Any]:
        return {
            "utterance_id": self.utterance_id,
            "speaker": self.speaker,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "text": self.text,
            "words": self.words,
            "starts_at": self.starts_at,
            "local_date": self.local_date,
            "local_time": self.local_time,
            "language": self.language,
        }


@dataclass
class Transcript:
    recording_id: int
    path: str
    model: str
    model_version: str
    speech_s: float
    lines: list[TranscriptLine]


class NoTranscript(SoundscapeError):
    """The recording has no transcript (by that model): it was not transcribed."""


def recording_of(conn: Connection, ref: str | int | Path) -> int:
    """The id of a stored recording named by its id or by a path: the path as stored (absolute),
    else the file's content (SHA-256, so a moved or renamed copy is found), else a unique
    file name. An unknown one is an error that says how to find it."""
    text = str(ref).strip()
    if text.isdigit():
        return int(text)
    path = Path(text).expanduser()
    row = conn.execute(
        sa.text("SELECT id FROM recordings WHERE path = ANY(:p) ORDER BY id LIMIT 1"),
        {"p": [text, str(path.resolve())]},
    ).scalar()
    if row is None and path.is_file():
        row = conn.execute(
            sa.text("SELECT id FROM recordings WHERE sha256 = :h"), {"h": sha256_file(path)}
        ).scalar()
    if row is None:
        ids = (
            conn.execute(
                sa.text("SELECT id FROM recordings WHERE path LIKE :n ESCAPE '\\' ORDER BY id"),
                {"n": "%/" + path.name.replace("%", "\\%").replace("_", "\\_")},
            )
            .scalars()
            .all()
        )
        if len(ids) == 1:
            row = ids[0]
        elif ids:
            raise SoundscapeError(
                f"{len(ids)} stored recordings are named {path.name} (ids "
                f"{', '.join(map(str, ids))}); give the id or the full path"
            )
    if row is None:
        raise SoundscapeError(
            f"no stored recording is {text}: ingest it first, or give its id "
            "(see `soundscape recordings list`)"
        )
    return int(row)


def get_transcript(conn: Connection, recording_id: int, model: str | None = None) -> Transcript:
    """A recording's transcript (the newest, or the newest by ``model``), lines in order;
    NoTranscript when it has none."""
    rec = conn.execute(
        sa.text("SELECT id, path FROM recordings WHERE id = :r"), {"r": recording_id}
    ).fetchone()
    if rec is None:
        raise SoundscapeError(
            f"no recording with id {recording_id} (see `soundscape recordings list`)"
        )
    t = conn.execute(
        sa.text(
            "SELECT id, model, model_version, speech_s FROM transcripts WHERE recording_id = :r "
            "AND (CAST(:m AS text) IS NULL OR model = :m) ORDER BY transcribed_at DESC, id DESC "
            "LIMIT 1"
        ),
        {"r": recording_id, "m": model},
    ).fetchone()
    if t is None:
        by = f" by {model}" if model else ""
        raise NoTranscript(
            f"recording {recording_id} has no transcript{by}; transcribe it with "
            f"`soundscape ingest {rec.path} --sensor SENSOR --model whisper` "
            "(or `soundscape backfill --model whisper`)"
        )
    rows = conn.execute(
        sa.text(
            "SELECT id, start_s, end_s, text, words, starts_at, local_date, local_time, language, "
            "speaker FROM utterances WHERE transcript_id = :t ORDER BY start_s, id"
        ),
        {"t": t.id},
    )
    lines = [TranscriptLine(*r) for r in rows]
    return Transcript(rec.id, rec.path, t.model, t.model_version, float(t.speech_s), lines)


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(transcript: Transcript) -> str:
    """SubRip subtitles: numbered cues ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, the speaker's name
    before the text (``guest: ...``) when known."""
    cues = [
        f"{i}\n{_clock(line.start_s, ',')} --> {_clock(line.end_s, ',')}\n{line.said}\n"
        for i, line in enumerate(transcript.lines, start=1)
    ]
    return "\n".join(cues)


def to_vtt(transcript: Transcript) -> str:
    """WebVTT subtitles (``HH:MM:SS.mmm``), the speaker as a voice span (``<v guest>``)."""
    cues = [
        f"{_clock(line.start_s, '.')} --> {_clock(line.end_s, '.')}\n"
        f"{f'<v {line.speaker}>' if line.speaker else ''}{line.text}\n"
        for line in transcript.lines
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_text(transcript: Transcript) -> str:
    """Plain text, one utterance per line (``guest: ...`` when the speaker is known)."""
    return "".join(f"{line.said}\n" for line in transcript.lines)
