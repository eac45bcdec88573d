"""Search: turn a request (text, audio, a stored window, a concept, a classifier label, or
what was said) into ranked windows, utterances or events.

``search(conn, SearchRequest(...))`` is what the CLI and notebooks call: it checks the
request, picks the space, resolves the query, ranks and merges events. The ranking itself is
one SQL statement inside ``ranger.search_vector`` / ``ranger.search_labels`` /
``ranger.search_classifier`` (sql/search.sql, sql/classifiers.sql), so the CLI, stored
concepts and BI tools share one implementation; a search in what was said runs
``ranger.search_speech`` (sql/speech.sql, through ``soundscape.speech``). Result types live in
``soundscape.results``, exports in ``soundscape.export``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from rapidfuzz import fuzz, process, utils
from sqlalchemy.engine import Connection

from soundscape.audio import decode_span, probe, window_array
from soundscape.classifiers import classifier_query, get_classifier
from soundscape.concepts import concept_query
from soundscape.db import register_vector
from soundscape.embedders import load_model, model_facts
from soundscape.embedders.base import l2_normalize
from soundscape.errors import BadOption, InvalidRequest, NoLabelMatch, SoundscapeError
from soundscape.queries import FILTER_TYPES, Filters, Query, check_filter_names
from soundscape.recall import guard_note, log_query
from soundscape.results import Hit, merge_events
from soundscape.spaces import Space, has_labels, list_spaces, pick_space, supports_text
from soundscape.speakers import speaker_query, voice_query
from soundscape.speech import SpeechRequest, search_speech
from soundscape.sun import parse_sun

__all__ = [
    "Filters", "Hit", "Query", "SearchRequest", "SearchResult", "check_filter_names",
    "merge_events", "search",
]  # fmt: skip

STRATEGIES = ("auto", "hnsw", "exact")
#: SQLSTATE of the ranger functions' input checks (a bad k, ef_search or query vector)
INVALID_PARAMETER_VALUE = "22023"
#: Most windows one search returns (and fetches to merge into events).
MAX_LIMIT = 10000

# ------------------------------------------------------------------------------- filters
_CLOCK = re.compile(r"^\s*(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?\s*$")


def parse_clock(text: str) -> time:
    m = _CLOCK.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a time of day; use HH:MM (24-hour)")
    h, mi, s = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
    if h == 24 and mi == 0 and s == 0:
        return time(23, 59, 59, 999999)
    if not (0 <= h < 24 and 0 <= mi < 60 and 0 <= s < 60):
        raise ValueError(f"{text!r} is not a valid time of day")
    return time(h, mi, s)


def parse_time_range(text: str) -> tuple[time, time]:
    """``"02:00-04:00"`` -> (02:00, 04:00); ``"22:00-04:00"`` crosses midnight.

    The range is half-open: a window is in it when its local start time t satisfies
    from <= t < to (or, across midnight, t >= from or t < to).
    """
    parts = text.split("-")
    if len(parts) != 2:
        raise ValueError(f"{text!r} is not a time range; use HH:MM-HH:MM, e.g. 22:00-04:00")
    start, end = parse_clock(parts[0]), parse_clock(parts[1])
    if start == end:
        raise ValueError(f"{text!r} is an empty time range")
    return start, end


def parse_when(text: str, *, today: date | None = None) -> date | datetime:
    """A ``--from``/``--to`` value: a local date (``2024-05-01``, ``today``, ``yesterday``,
    ``7d`` = seven days ago) or an ISO timestamp with an offset (``2024-05-01T03:00:00+02:00``)."""
    today = today or date.today()
    t = text.strip().lower()
    if t == "today":
        return today
    if t == "yesterday":
        return today - timedelta(days=1)
    m = re.fullmatch(r"(\d+)\s*(d(?:ays?)?|w(?:eeks?)?)", t)
    if m:
        days = int(m.group(1)) * (7 if m.group(2).startswith("w") else 1)
        if days > (today - date.min).days:
            raise ValueError(f"{text!r} reaches back before year 1; give fewer days or a date")
        return today - timedelta(days=days)
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        pass
    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is neither a date (YYYY-MM-DD, today, yesterday, 7d) nor an ISO "
            "timestamp with an offset (2024-05-01T03:00:00+02:00)"
        ) from exc
    if ts.tzinfo is None:
        raise ValueError(
            f"{text!r} has no UTC offset; add one (e.g. +02:00 or Z), or give a local date"
        )
    return ts


def date_bounds(
    start: date | datetime | None, end: date | datetime | None
) -> tuple[date | None, date | None, datetime | None, datetime | None]:
    """Split --from/--to into (local date from, local date to inclusive, instant from, instant to)."""
    d_from = start if isinstance(start, date) and not isinstance(start, datetime) else None
    d_to = end if isinstance(end, date) and not isinstance(end, datetime) else None
    a_from = start if isinstance(start, datetime) else None
    a_to = end if isinstance(end, datetime) else None
    return d_from, d_to, a_from, a_to


def parse_filters(
    sensors: Sequence[str] | None = None,
    sites: Sequence[str] | None = None,
    quadrants: Sequence[str] | None = None,
    time_range: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    min_score: float | None = None,
    sun: str | None = None,
) -> Filters:
    """``Filters`` from what people type (the CLI's options, the web page's fields): a time of
    day range (``parse_time_range``), ``--from``/``--to`` (``parse_when``: local dates or
    instants), a finite ``min_score``, a sun filter (``sun.parse_sun``, kept in its canonical
    form). A bad value raises ``BadOption`` naming the option."""

    try:
        sun_range = str(parse_sun(sun)) if sun else None
    except SoundscapeError as exc:
        raise BadOption(str(exc), "--sun") from exc
    try:
        t_from, t_to = parse_time_range(time_range) if time_range else (None, None)
    except ValueError as exc:
        raise BadOption(str(exc), "--time") from exc
    try:
        start = parse_when(date_from) if date_from else None
    except ValueError as exc:
        raise BadOption(str(exc), "--from") from exc
    try:
        end = parse_when(date_to) if date_to else None
    except ValueError as exc:
        raise BadOption(str(exc), "--to") from exc
    if min_score is not None and not math.isfinite(min_score):
        raise BadOption(f"{min_score} is not a finite number", "--min-score")
    if start is not None and end is not None:
        # a local date vs an instant: compare the instant's date (good to a day, enough here)
        a = start.date() if isinstance(start, datetime) and not isinstance(end, datetime) else start
        b = end.date() if isinstance(end, datetime) and not isinstance(start, datetime) else end
        if a > b:
            raise BadOption(f"--from {date_from} is later than --to {date_to}", "--from/--to")
    d_from, d_to, a_from, a_to = date_bounds(start, end)
    return Filters(
        sensors=list(sensors or []) or None,
        sites=list(sites or []) or None,
        quadrants=list(quadrants or []) or None,
        time_from=t_from,
        time_to=t_to,
        date_from=d_from,
        date_to=d_to,
        at_from=a_from,
        at_to=a_to,
        sun=sun_range,
        min_score=min_score,
    )


# ------------------------------------------------------------------------------- queries
def _check_text(text: str, space: Space) -> None:
    """A text without a letter or digit ("*", "%") names nothing: it must not match every
    class (an empty word list matches all of them) nor be embedded as a query."""
    if not text.strip():
        raise SoundscapeError("empty search text")
    if not re.search(r"[^\W_]", text):
        raise SoundscapeError(
            f"no {space.name} label matches {text!r}: a search text needs letters or digits "
            "(wildcards are not supported; labels: `soundscape labels top`)"
        )


def text_query(conn: Connection, text: str, space: Space) -> Query:
    """A text as a query: the text encoder's vector (CLAP), else the class labels it names
    (BirdNET; see ``match_labels``)."""
    _check_text(text, space)
    if supports_text(space):
        model = load_model(space.model)
        vec = l2_normalize(model.embed_text([text]))[0]
        return Query(space, f"text {text!r}", vector=vec, kind="text")
    if has_labels(conn, space):
        ids, names = match_labels(conn, space, text)
        if len(names) > 20:  # a field word such as "birdsong": every bird class
            shown = f"{text!r} ({len(names)} classes)"
        else:
            shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        return Query(space, f"labels {shown}", label_ids=ids, kind="labels")
    raise SoundscapeError(
        f"space {space.name!r} has no text encoder and no class labels; "
        "use --audio FILE or --like ID"
    )


def _labels(conn: Connection, space: Space) -> list[tuple[int, str, str | None, str | None]]:
    rows = conn.execute(
        sa.text(
            "SELECT label_id, name, scientific, common FROM space_labels "
            "WHERE space_id = :s ORDER BY label_id"
        ),
        {"s": space.id},
    )
    return [tuple(r) for r in rows]


def match_labels(conn: Connection, space: Space, text: str) -> tuple[list[int], list[str]]:
    """Label ids (and display names) for a text: field words, exact names, then word-prefix
    matches on common and scientific names (case-insensitive)."""
    _check_text(text, space)
    labels = _labels(conn, space)
    q = " ".join(text.lower().split())

    def shown(common: str | None, name: str) -> str:
        return common or name

    model = model_facts(space.model)  # its field words and non-species classes
    targets = model.field_words.get(q)
    if targets:
        if "*birds*" in targets:  # species classes: those with a scientific name
            hits = [
                lab
                for lab in labels
                if lab[2] and shown(lab[3], lab[1]) not in model.non_species_classes
            ]
        else:
            hits = [lab for lab in labels if shown(lab[3], lab[1]) in targets]
        if hits:
            return [h[0] for h in hits], [shown(h[3], h[1]) for h in hits]

    exact = [
        lab
        for lab in labels
        if q in {(lab[3] or "").lower(), (lab[2] or "").lower(), lab[1].lower()}
    ]
    if exact:
        return [h[0] for h in exact], [shown(h[3], h[1]) for h in exact]

    # Prefix matching takes words: a pattern ("[a-z]+") or a one-letter word ("a" of "a,,b")
    # prefix-matched dozens of classes by its letters.
    odd = sorted(set(re.sub(r"[\w\s'.\-]", "", q)))
    tokens = re.findall(r"[\w']+", q)
    short = [t for t in tokens if len(t) < 2]  # no prefix matching: "a" starts half the labels

    def words(s: str | None) -> list[str]:
        return re.findall(r"[\w']+", (s or "").lower())

    def matches(lab: tuple) -> bool:
        for field_ in (lab[3], lab[2]):
            w = words(field_)
            if w and all(any(x.startswith(t) for x in w) for t in tokens):
                return True
        return False

    hits = [] if odd or short else [lab for lab in labels if matches(lab)]
    pattern = [c for c in odd if c not in PHRASE_PUNCTUATION]  # "(junco|owl)", "j.*"
    if not hits and not pattern:  # a phrase: "a dog barking", "people talking"
        hits = phrase_labels(labels, q, model.field_words, model.non_species_classes)
    if hits:
        return [h[0] for h in hits], [shown(h[3], h[1]) for h in hits]
    if odd:
        raise SoundscapeError(
            f"no {space.name} label is named {text!r}, and label queries are words, not "
            f"patterns ({''.join(odd)!r} is not matched); give a name or the start of its words, "
            "e.g. 'junco' or 'dark-eyed'"
        )
    if short and not content_words(q):
        raise SoundscapeError(
            f"no {space.name} label is named {text!r}, and {short[0]!r} is too short to match "
            "the start of label words; give at least two letters of each word"
        )

    close = suggest_labels(labels, q)
    for word in dict.fromkeys(content_words(q)):  # each word of a phrase, too
        close += [(name, score - 1) for name, score in suggest_labels(labels, word, 2)]
    for target in (q, *content_words(q)):
        close += [
            (word, score)
            for word, score, _ in process.extract(
                target, list(model.field_words), scorer=fuzz.ratio, limit=2,
                score_cutoff=SUGGEST_MIN_SCORE,
            )
        ]  # fmt: skip
    close.sort(key=lambda c: -c[1])  # stable: labels before field words of the same score
    names = list(dict.fromkeys(name for name, _ in close))[:5]
    raise NoLabelMatch(space.name, text, names, sorted(model.field_words))


#: Punctuation a phrase may hold ("a dog, barking!"); any other sign makes it a pattern, which
#: label search refuses
PHRASE_PUNCTUATION = frozenset(',!?;:"')

#: Words of a phrase that name no sound ("a dog barking": "a"); dropped before its words are
#: matched to labels one by one (``phrase_labels``).
_STOP_TEXT = """a an the of some any and or with without in on at near by from to for into over under
    is are was were be been being it its this that these those there here i me my we our you
    your he she they them their his her what which who whom where when how hear heard hearing
    listen listening sound sounds sounding something someone somebody anything like just very
    lots lot many much few one two three more most all only also again maybe please find show
    me search looking look recording recordings clip clips audio"""
STOP_WORDS = frozenset(_STOP_TEXT.split())


def content_words(text: str) -> list[str]:
    """A phrase's words without stop words and one-letter words, lower-case, in order."""
    return [w for w in re.findall(r"[^\W_]+", text.lower()) if len(w) > 1 and w not in STOP_WORDS]


def _singular(word: str) -> str:
    """A plain English singular: owls -> owl, finches -> finch, geese stays."""
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def phrase_labels(
    labels: list[tuple[int, str, str | None, str | None]],
    text: str,
    field_words: Mapping[str, tuple[str, ...]],
    non_species: frozenset[str] | set[str] | tuple[str, ...] = (),
) -> list[tuple[int, str, str | None, str | None]]:
    """The labels a phrase names ("a dog barking" -> Dog, "people talking" -> Human vocal,
    "a little owl hooting" -> Little Owl): stop words dropped, then its word groups (longest
    first) that are a field word or a label's whole name; when none is, the labels that share
    the most whole words with the phrase (a word or its singular, on common and scientific
    names; the common name's last word, its kind, counts a half more: "a junco singing" is
    Dark-eyed Junco, not Singing Quail). Words that name no sound are dropped (``STOP_WORDS``:
    "a", "the", "singing", "at night", "in the forest"). Empty when no word names a label."""
    content = content_words(text)
    if not content:
        return []

    def key(s: str | None) -> str:
        return " ".join(re.findall(r"[^\W_]+", (s or "").lower()))

    def shown(lab: tuple) -> str:
        return str(lab[3] or lab[1])

    def named(gram: str) -> list[tuple]:
        targets = field_words.get(gram) or field_words.get(_singular(gram))
        if targets:
            if "*birds*" in targets:
                return [lab for lab in labels if lab[2] and shown(lab) not in non_species]
            return [lab for lab in labels if shown(lab) in targets]
        return [lab for lab in labels if gram in {key(lab[3]), key(lab[2]), key(lab[1])}]

    found: list[tuple] = []
    used: set[int] = set()
    for n in range(len(content), 0, -1):
        for i in range(len(content) - n + 1):
            if used & set(range(i, i + n)):
                continue
            hits = named(" ".join(content[i : i + n]))
            if hits:
                found += hits
                used |= set(range(i, i + n))
    # words left beside a name ("dogs barking at night": "night") are its context
    left = set() if found else {w for w in content if len(w) > 2}
    if left:
        forms = left | {_singular(w) for w in left}
        overlap: dict[int, float] = {}
        for k, lab in enumerate(labels):
            common = key(lab[3]).split()
            vocabulary = set(common) | set(key(lab[2]).split())
            n_shared = len({w for w in left if w in vocabulary or _singular(w) in vocabulary})
            if n_shared:  # the name's last word (its kind: Junco, Owl) counts a half more
                overlap[k] = n_shared + (0.5 if common and common[-1] in forms else 0.0)
        if overlap:
            best = max(overlap.values())
            found += [labels[k] for k, n in overlap.items() if n == best]
    return list({lab[0]: lab for lab in found}.values())


#: How similar (rapidfuzz ratio, 0-100) a label, one of its words or a field word must be to a
#: text that matched nothing to be suggested.
SUGGEST_MIN_SCORE = 70.0


def suggest_labels(
    labels: list[tuple[int, str, str | None, str | None]], text: str, n: int = 5
) -> list[tuple[str, float]]:
    """The labels closest to a text that matched none, best first, with their similarity
    (0-100): each label's common and scientific names and their words are compared with the
    text (rapidfuzz's normalised Indel similarity, case-insensitive), so "junko" finds
    "Dark-eyed Junco" by its word "Junco", not "Gun"."""
    choices: list[str] = []
    owner: list[int] = []
    for i, (_, name, scientific, common) in enumerate(labels):
        for whole in {common or name, scientific or ""} - {""}:
            for choice in [whole, *(w for w in re.findall(r"[^\W_]+", whole) if len(w) > 2)]:
                choices.append(choice)
                owner.append(i)
    best: dict[int, float] = {}
    for _, score, k in process.extract(
        text,
        choices,
        scorer=fuzz.ratio,
        processor=utils.default_process,
        limit=None,
        score_cutoff=SUGGEST_MIN_SCORE,
    ):
        i = owner[k]
        best[i] = max(best.get(i, 0.0), score)
    ranked = sorted(best, key=lambda i: (-best[i], i))[:n]
    return [(labels[i][3] or labels[i][1], best[i]) for i in ranked]


def audio_query(
    conn: Connection,
    path: Path,
    space: Space,
    start_s: float | None = None,
    end_s: float | None = None,
) -> Query:
    """Embed an audio file (or a span of it) with the space's model.

    The span is windowed like ingest; the windows' unit vectors are averaged into one query
    vector (then re-normalised). Averaging finds places that sound like the example as a
    whole; for a long example, pick the part you mean with --start/--end.
    """
    info = probe(path)
    start = float(start_s or 0.0)
    end = float(end_s) if end_s is not None else info.duration_s
    if start < 0 or end <= start:
        raise SoundscapeError(f"--start/--end must satisfy 0 <= start < end (got {start}, {end})")
    if start >= info.duration_s:
        raise SoundscapeError(
            f"--start {start:g} s is past the end of {path} ({info.duration_s:.1f} s)"
        )
    samples = decode_span(path, space.sample_rate, start, min(end, info.duration_s))
    batch = window_array(samples, space.sample_rate, space.window_s, space.hop_s)
    model = load_model(space.model, **space.params)
    batch = batch.subset(model.select_windows(batch.samples, batch.start_s))
    if not len(batch):  # e.g. the voice model keeps windows of speech only
        raise SoundscapeError(
            f"{path}: model {space.model} embeds none of its windows (the voice model embeds "
            "windows of speech only); pick another example or span"
        )
    vectors = []
    for i in range(0, len(batch.samples), model.batch_size):
        vectors.append(model.embed_audio(batch.samples[i : i + model.batch_size]))
    vec = l2_normalize(np.concatenate(vectors).mean(axis=0, keepdims=True))[0]
    span = f" {start:g}-{min(end, info.duration_s):g} s" if (start_s or end_s) else ""
    return Query(
        space, f"audio {path.name}{span} ({len(batch.samples)} windows)", vector=vec, kind="audio"
    )


def window_query(conn: Connection, segment_id: int, space_name: str | None) -> Query:
    register_vector(conn)
    row = conn.execute(
        sa.text("SELECT space_id, embedding FROM segments WHERE id = :i"), {"i": segment_id}
    ).fetchone()
    if row is None:
        raise SoundscapeError(f"no window with id {segment_id}")
    space = next(s for s in list_spaces(conn) if s.id == row.space_id)
    if space_name and space_name != space.name:
        raise SoundscapeError(
            f"window {segment_id} belongs to space {space.name!r}, not {space_name!r}"
        )
    vec = np.asarray(row.embedding.to_numpy(), dtype=np.float32)
    return Query(space, f"window {segment_id}", vector=vec, exclude=segment_id, kind="window")


# ------------------------------------------------------------------------------- running
#: SQL type of each argument of the ranger search functions (sql/search.sql,
#: sql/classifiers.sql); they are called with named arguments, and only with those given.
ARG_TYPES = {
    "p_space": "integer", "p_query": "vector", "p_labels": "integer[]", "p_k": "integer",
    **{f"p_{k}": t for k, t in FILTER_TYPES.items()}, "p_min_score": "real",
    "p_exclude": "bigint", "p_strategy": "text", "p_ef_search": "integer",
    "p_classifier": "text", "p_label": "text", "p_version": "integer",
    "p_all_species": "boolean",
}  # fmt: skip


def _call(function: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``SELECT * FROM ranger.<function>(p_x => %(p_x)s::type, ...)`` for the arguments that
    are not None (the others keep the function's defaults) and its parameters, in psycopg's
    own placeholder style: run with ``conn.exec_driver_sql`` (SQLAlchemy's ``text()`` costs
    about 0.5 ms more per call with a vector parameter, a tenth of a fast search)."""
    given = {k: v for k, v in args.items() if v is not None}
    named = ", ".join(f"{k} => %({k})s::{ARG_TYPES[k]}" for k in given)
    return f"SELECT * FROM ranger.{function}({named})", given


def run(
    conn: Connection,
    query: Query,
    filters: Filters,
    limit: int = 10,
    strategy: str = "auto",
    ef_search: int | None = None,
    all_species: bool = False,
) -> list[Hit]:
    """Rank windows (one SQL statement inside the ranger search functions). ``ef_search``
    overrides the HNSW candidate list size the function would choose; ``all_species`` keeps
    label-search classes that BirdNET's occurrence model finds unlikely at the sensor and week."""
    if strategy not in STRATEGIES:
        raise SoundscapeError(f"strategy must be one of {', '.join(STRATEGIES)}")
    f = filters.params()
    args: dict[str, Any] = {"p_k": int(limit)}
    args.update({f"p_{k}": v for k, v in f.items()})
    if query.classifier is not None:  # exact ranking by w . x + b (sql/classifiers.sql)
        name, version, label = query.classifier
        sql, params = _call(
            "search_classifier",
            {"p_classifier": name, "p_label": label, **args, "p_version": version},
        )
    elif query.is_labels:
        sql, params = _call(
            "search_labels",
            {
                "p_space": query.space.id,
                "p_labels": query.label_ids,
                **args,
                "p_all_species": all_species,
            },
        )
    else:
        register_vector(conn)
        sql, params = _call(
            "search_vector",
            {
                "p_space": query.space.id,
                "p_query": np.asarray(query.vector, np.float32),
                **args,
                "p_exclude": query.exclude,
                "p_strategy": strategy,
                "p_ef_search": ef_search,
            },
        )
    try:
        rows = conn.exec_driver_sql(sql, params).all()
    except sa.exc.DBAPIError as exc:
        # the ranger functions' input checks (k, ef_search, a zero query vector: sql/README.md)
        if getattr(exc.orig, "sqlstate", None) == INVALID_PARAMETER_VALUE:
            diag = getattr(exc.orig, "diag", None)
            raise SoundscapeError(getattr(diag, "message_primary", None) or str(exc.orig)) from exc
        raise
    return [Hit(**dict(r._mapping)) for r in rows]


# ------------------------------------------------------------------------------- requests
@dataclass
class SearchRequest:
    """One search, as the CLI or a notebook asks for it.

    Give exactly one query form: ``text``; ``audio`` (a file, optionally the span
    ``start_s``-``end_s``); ``like`` (a stored window's id); ``concept`` (a stored concept's
    name); or ``classifier`` with ``label`` (and ``version``, default the latest). ``space``
    names the space (default: the best that can answer, ``spaces.pick_space``). With
    ``events``, overlapping or touching windows of one recording and label are merged and
    ``limit`` counts events. A label search leaves out classes BirdNET's occurrence model finds
    unlikely at the window's sensor and week unless ``all_species`` (soundscape.occurrence).
    ``said`` searches what was said (transcribed speech, ``soundscape.speech``): websearch
    syntax, filled up with similar spellings while ``fuzzy``; hits are utterances.
    """

    text: str | None = None
    audio: Path | str | None = None
    start_s: float | None = None
    end_s: float | None = None
    like: int | None = None
    concept: str | None = None
    classifier: str | None = None
    label: str | None = None
    version: int | None = None
    space: str | None = None
    filters: Filters = field(default_factory=Filters)
    limit: int = 10
    events: bool = False
    strategy: str = "auto"
    ef_search: int | None = None
    all_species: bool = False
    #: who says it: a voice example (``start_s``/``end_s`` select its span) or an enrolled
    #: speaker, ranked in a space of the voice model (soundscape.speakers)
    voice: Path | str | None = None
    speaker: str | None = None
    #: what was said (a query form of its own; no space, no score floor)
    said: str | None = None
    fuzzy: bool = True

    def check(self) -> None:
        """Raise ``InvalidRequest`` for a request that cannot be run whatever the database
        holds (no or several query forms, options of another form, a bad limit)."""
        forms = [
            name
            for name, value in (
                ("TEXT", self.text),
                ("--audio", self.audio),
                ("--like", self.like),
                ("--concept", self.concept),
                ("--classifier", self.classifier),
                ("--voice", self.voice),
                # --said --speaker NAME: what that speaker said (one query, not two)
                ("--speaker", None if self.said is not None else self.speaker),
                ("--said", self.said),
            )
            if value is not None
        ]
        if len(forms) != 1:
            raise InvalidRequest(
                "give exactly one query: TEXT, --audio FILE, --like WINDOW_ID, --concept NAME or "
                "--classifier NAME --label L, --voice FILE, --speaker NAME or --said TEXT"
                + (f" (got {', '.join(forms)})" if forms else "")
            )
        if self.said is not None:
            others = [o for o, v in (("--space", self.space),
                                     ("--min-score", self.filters.min_score)) if v is not None]  # fmt: skip
            if others:
                raise InvalidRequest(f"--said is a query of its own; leave out {', '.join(others)}")
        if (self.label is not None or self.version is not None) and self.classifier is None:
            raise InvalidRequest("--label/--version go with --classifier NAME")
        spans = self.start_s is not None or self.end_s is not None
        if spans and self.audio is None and self.voice is None:
            raise InvalidRequest("--start/--end select a span of --audio FILE or --voice FILE")
        if not 1 <= int(self.limit) <= MAX_LIMIT:
            raise InvalidRequest(f"the limit must be between 1 and {MAX_LIMIT}, not {self.limit}")
        if self.strategy.lower() not in STRATEGIES:
            raise InvalidRequest(f"strategy must be one of {', '.join(STRATEGIES)}")


@dataclass
class SearchResult:
    """Hits (windows, or events with ``n_windows``; utterances for a search in what was said)
    best first, the query that ranked them and the filters applied (with a concept's threshold
    as ``min_score``)."""

    hits: list[Hit]
    filters: Filters
    #: the query that ranked windows; None for a search in what was said (``said``)
    ranked_by: Query | None = None
    events: bool = False
    #: what the space's recall guard made auto do (``soundscape.recall.guard_note``), to tell
    #: the user once; None when the index measured well or was not used
    guard: str | None = None
    #: the text searched for in what was said (the hits are ``speech.SpeechHit``)
    said: str | None = None

    @property
    def is_speech(self) -> bool:
        return self.ranked_by is None

    @property
    def query(self) -> Query:
        """The query that ranked windows (a search in what was said has none)."""
        if self.ranked_by is None:
            raise InvalidRequest(
                "a search in what was said ranks utterances, not windows of a space: "
                "read its description and hits"
            )
        return self.ranked_by

    @property
    def space(self) -> Space:
        return self.query.space

    @property
    def space_name(self) -> str | None:
        """The space searched; None for a search in what was said."""
        return None if self.ranked_by is None else self.ranked_by.space.name

    @property
    def description(self) -> str:
        """What was searched for, in words."""
        if self.ranked_by is None:
            return f"what was said: {self.said!r}"
        return self.ranked_by.description

    @property
    def is_labels(self) -> bool:
        """True if hits carry a class label (label queries): their label column is shown."""
        return self.ranked_by is not None and self.ranked_by.is_labels


def resolve_query(conn: Connection, request: SearchRequest) -> Query:
    """The request's query form as a ``Query`` in its space."""
    request.check()
    if request.classifier is not None:
        if request.label is None:
            labels = [
                m.label for m in get_classifier(conn, request.classifier, request.version).labels
            ]
            raise InvalidRequest(f"--classifier needs --label (one of: {', '.join(labels)})")
        query = classifier_query(conn, request.classifier, request.label, request.version)
        if request.space and request.space != query.space.name:
            raise SoundscapeError(
                f"classifier {request.classifier!r} was trained on space "
                f"{query.space.name!r}, not {request.space!r}"
            )
        return query
    if request.text is not None:
        space = pick_space(conn, request.space, purpose="text")
        if request.space is None and not supports_text(space):
            return _labelled_text_query(conn, request.text, space)
        return text_query(conn, request.text, space)
    if request.audio is not None:
        space = pick_space(conn, request.space, purpose="audio")
        return audio_query(conn, Path(request.audio), space, request.start_s, request.end_s)
    if request.voice is not None:
        return voice_query(conn, request.voice, request.space, request.start_s, request.end_s)
    if request.speaker is not None:
        return speaker_query(conn, request.speaker, request.space)
    if request.like is not None:
        return window_query(conn, request.like, request.space)
    assert request.concept is not None  # check() saw exactly one form
    query = concept_query(conn, request.concept)
    if request.space and request.space != query.space.name:
        raise SoundscapeError(
            f"concept {request.concept!r} lives in space {query.space.name!r}, "
            f"not {request.space!r}"
        )
    return query


def _labelled_text_query(conn: Connection, text: str, first: Space) -> Query:
    """No space named and none with a text encoder: the labels of ``first`` (the preferred
    labelled space) if they match ``text``, else those of the first other labelled space that
    does ("drums" finds MusiCNN's tag when BirdNET is preferred); else ``first``'s error."""
    try:
        return text_query(conn, text, first)
    except SoundscapeError as exc:
        for other in list_spaces(conn):
            if other.id == first.id or supports_text(other) or not has_labels(conn, other):
                continue
            try:
                return text_query(conn, text, other)
            except SoundscapeError:
                continue
        raise exc


def search(conn: Connection, request: SearchRequest) -> SearchResult:
    """Run a search: check the request and the filter names, resolve the query, rank (one
    SQL statement), and with ``request.events`` merge windows into events per recording and
    label (ranking ten times ``limit`` windows to find ``limit`` events). ``request.said``
    searches utterances instead (``speech.search_speech``)."""
    request.check()
    if request.said is not None:
        return _search_said(conn, request)
    check_filter_names(conn, request.filters)
    query = resolve_query(conn, request)
    filters = request.filters
    if query.min_score is not None and filters.min_score is None:
        filters = replace(filters, min_score=query.min_score)
    fetch = min(MAX_LIMIT, request.limit * 10) if request.events else request.limit
    hits = run(
        conn,
        query,
        filters,
        limit=fetch,
        strategy=request.strategy.lower(),
        ef_search=request.ef_search,
        all_species=request.all_species,
    )
    if request.events:
        hits = merge_events(hits)[: request.limit]
    guard = None
    if query.vector is not None and request.strategy.lower() == "auto":
        guard = guard_note(conn, query.space)
        if query.kind != "window":  # a stored window is in the checks' sample anyway
            log_query(conn.engine, query.space, query.vector)
    return SearchResult(
        hits=hits, filters=filters, ranked_by=query, events=request.events, guard=guard
    )


def _search_said(conn: Connection, request: SearchRequest) -> SearchResult:
    """A search in what was said: ``speech.search_speech`` (it checks the text, the limit and
    the filter names)."""
    assert request.said is not None
    said = SpeechRequest(
        request.said,
        filters=request.filters,
        limit=request.limit,
        fuzzy=request.fuzzy,
        events=request.events,
        speaker=request.speaker,
    )
    hits: list[Hit] = list(search_speech(conn, said))
    return SearchResult(hits=hits, filters=request.filters, events=request.events, said=said.query)
