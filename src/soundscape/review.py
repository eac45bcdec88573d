"""Review batches: a folder to listen to and judge in Raven (or any player), read back as
annotations.

A batch is a WAV clip + spectrogram PNG per window (``soundscape.export.export_clips``) and
one Raven selection table, ``review.txt`` (``formats.raven.REVIEW_COLUMNS``), with a row per
window: ``Begin Path`` and ``File Offset (s)`` name the recording and place, ``Label`` the label under review and an
empty ``Verdict`` column to fill with yes / no / unsure. ``soundscape annotate import
DIR/review.txt`` then stores the filled rows as annotations (rows left empty are skipped), and
the next ``soundscape train`` learns from them.

The web page judges the same windows one at a time (``/review``, the review queue): the
queue is :func:`queue_hits` (the same strategies), each card's label is :func:`card_label`
(the class, concept or classifier label a hit came from; a typed word only as a fallback,
matched to the labels already in use by :func:`pick_label`), the verdicts already given on
a hit are :func:`verdicts_on`, and :func:`unreviewed_search` is a search that leaves out hits
already judged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from rapidfuzz import fuzz, process, utils
from sqlalchemy.engine import Connection

from soundscape.classifiers import (
    DEFAULT_C,
    DEFAULT_TARGET_PRECISION,
    STRATEGIES,
    Classifier,
    get_classifier,
    pick_for_review,
    train,
)
from soundscape.concepts import concept_query
from soundscape.errors import InvalidRequest, SoundscapeError
from soundscape.export import export_clips
from soundscape.formats.raven import write_review_table
from soundscape.media_files import StoredFile
from soundscape.queries import Filters
from soundscape.results import Hit
from soundscape.search import MAX_LIMIT, SearchRequest, SearchResult, run, search

REVIEW_TABLE = "review.txt"


@dataclass
class ReviewBatch:
    folder: Path
    table: Path
    hits: list[Hit]
    label: str
    strategy: str
    written: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _overlaps_annotation(conn: Connection, hit: Hit, label: str) -> bool:
    return bool(
        conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM annotations WHERE recording_id = :r AND label = :l "
                "AND start_s < :e AND end_s > :s)"
            ),
            {"r": hit.recording_id, "l": label, "s": hit.start_s, "e": hit.end_s},
        ).scalar()
    )


def classifier_batch_hits(
    conn: Connection,
    clf: Classifier,
    label: str,
    strategy: str,
    n: int,
    filters: Filters | None = None,
    seed: int = 0,
) -> list[Hit]:
    """The windows a classifier review batch holds (see ``classifiers.pick_for_review``)."""
    return pick_for_review(conn, clf, label, strategy, n, filters=filters, seed=seed)


def concept_batch_hits(
    conn: Connection, concept: str, n: int, filters: Filters | None = None
) -> list[Hit]:
    """A concept's best windows that overlap no annotation labelled with the concept's name."""
    filters = filters or Filters()
    query = concept_query(conn, concept)
    if query.min_score is not None and filters.min_score is None:
        filters.min_score = query.min_score
    fetch = n
    while True:
        hits = run(conn, query, filters, limit=fetch)
        fresh = [h for h in hits if not _overlaps_annotation(conn, h, concept)]
        if len(fresh) >= n or len(hits) < fetch or fetch >= 10000:
            break
        fetch = min(10000, fetch * 4)
    for h in fresh:
        h.label, h.method = concept, "top"
    return fresh[:n]


def write_batch(
    hits: list[Hit],
    folder: Path,
    label: str,
    strategy: str,
    stored: Mapping[int, StoredFile],
    context: Mapping[int, Mapping[str, object]] | None = None,
) -> ReviewBatch:
    """Write clips, spectrograms and ``review.txt`` (empty Verdict column) into ``folder``;
    ``stored``: the hits' recordings' stored files (``media_files.stored_files``), by which
    the clips are read (``export_clips``); ``context``: their clips' GUANO position and
    recorder (``formats.guano.clip_context``)."""
    folder = Path(folder)
    table = folder / REVIEW_TABLE
    if table.exists():
        raise SoundscapeError(
            f"{table} exists (a batch not yet imported?); choose another --out folder"
        )
    clips = export_clips(hits, folder, stored, context=context)
    batch = ReviewBatch(folder, table, hits, label, strategy, list(clips.written), clips.errors)
    highs: dict[str, float] = {}
    for hit in hits:
        if hit.path not in highs:  # the stored sample rate: no file is opened for it
            known = stored.get(hit.recording_id)
            rate = known.sample_rate if known is not None else None
            highs[hit.path] = (rate or 48000) / 2
    folder.mkdir(parents=True, exist_ok=True)
    batch.written.append(write_review_table(table, hits, label, strategy, highs))
    return batch


# ------------------------------------------------------------------------------- web review
#: What a review queue can follow: a classifier label (its strategies), a concept (its best
#: windows) or a search (its ranking).
QUEUE_KINDS = ("classifier", "concept", "search")
#: Most clips one queue holds (a page of the queue; the next one is fetched when it is done).
MAX_QUEUE = 200
#: How similar (rapidfuzz ratio, 0-100: the whole strings, so "saw" is not "chainsaw") a known
#: label must be to a typed word to be taken.
LABEL_MATCH = 85


@dataclass(frozen=True)
class Verdict:
    """An annotation overlapping a hit, as a card shows it."""

    id: int
    label: str
    verdict: str
    author: str | None
    source: str
    created_at: datetime
    start_s: float
    end_s: float

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "label": self.label, "verdict": self.verdict, "author": self.author,
            "source": self.source, "start_s": self.start_s, "end_s": self.end_s,
            "created_at": self.created_at.isoformat(sep=" ", timespec="seconds"),
        }  # fmt: skip


def known_labels(conn: Connection) -> list[str]:
    """The labels in use: annotations', classifiers' and concepts' (by name, sorted)."""
    return list(
        conn.execute(
            sa.text(
                "SELECT label FROM annotations UNION SELECT label FROM classifier_labels "
                "UNION SELECT name FROM concepts ORDER BY 1"
            )
        ).scalars()
    )


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.casefold()))


def pick_label(text: str, known: Sequence[str]) -> str:
    """The label a typed word stands for: a known label equal to it (ignoring case), else the
    one known label holding all its words ("junco" -> "Dark-eyed Junco"), else the most
    similar one (at least ``LABEL_MATCH``), else the typed text itself."""
    typed = text.strip()
    if not typed or not known:
        return typed
    for k in known:
        if k.casefold() == typed.casefold():
            return k
    words = _words(typed)
    holding = [k for k in known if words and words <= _words(k)]
    if len(holding) == 1:
        return holding[0]
    best = process.extractOne(
        typed, list(holding or known), scorer=fuzz.ratio, processor=utils.default_process,
        score_cutoff=LABEL_MATCH,
    )  # fmt: skip
    return str(best[0]) if best else typed


def card_label(hit: Hit, request: SearchRequest, fallback: str = "") -> tuple[str, bool]:
    """The label a verdict on ``hit`` gets and whether it is the hit's own (True) or the
    ``fallback`` (a typed word matched to the known labels, which the reviewer may change):
    a classifier search's label, a concept's name, else the class the hit came from."""
    if request.classifier and request.label:
        return request.label, True
    if request.concept:
        return request.concept, True
    if hit.label:
        return hit.label, True
    return fallback, False


def fallback_label(conn: Connection, request: SearchRequest) -> str:
    """The label of hits that carry none (a text, audio or "more like" search): the typed
    words as a known label (:func:`pick_label`), else the words themselves."""
    typed = request.text or request.said or ""
    return pick_label(typed, known_labels(conn)) if typed else ""


def verdicts_on(conn: Connection, hits: Sequence[Hit]) -> list[list[Verdict]]:
    """Per hit, the annotations overlapping its span (any label, any author), newest first."""
    out: list[list[Verdict]] = [[] for _ in hits]
    if not hits:
        return out
    rows = conn.execute(
        sa.text(
            "SELECT h.i, a.id, a.label, a.verdict, a.author, a.source, a.created_at, a.start_s, "
            "a.end_s FROM unnest(CAST(:i AS integer[]), CAST(:r AS bigint[]), "
            "CAST(:s AS float8[]), CAST(:e AS float8[])) h(i, rec, s, e) "
            "JOIN annotations a ON a.recording_id = h.rec AND a.start_s < h.e AND a.end_s > h.s "
            "ORDER BY h.i, a.created_at DESC, a.id DESC"
        ),
        {
            "i": list(range(len(hits))),
            "r": [h.recording_id for h in hits],
            "s": [float(h.start_s) for h in hits],
            "e": [float(h.end_s) for h in hits],
        },
    )
    for r in rows:
        out[int(r.i)].append(
            Verdict(
                int(r.id),
                r.label,
                r.verdict,
                r.author,
                r.source,
                r.created_at,
                float(r.start_s),
                float(r.end_s),
            )  # fmt: skip
        )
    return out


def _judged(verdicts: Sequence[Verdict], label: str) -> bool:
    return any(v.label == label for v in verdicts)


def unreviewed_search(
    conn: Connection, request: SearchRequest, fallback: str | None = None
) -> SearchResult:
    """``search`` without the hits that overlap an annotation of their card label
    (:func:`card_label`, ``fallback`` by default :func:`fallback_label`): fetches four times
    more until ``request.limit`` unjudged hits are found or the search runs dry."""
    if fallback is None:
        fallback = fallback_label(conn, request)
    fetch = request.limit
    while True:
        result = search(conn, replace(request, limit=fetch))
        judged = verdicts_on(conn, result.hits)
        fresh = [
            h for h, v in zip(result.hits, judged)
            if not _judged(v, card_label(h, request, fallback)[0])
        ]  # fmt: skip
        if len(fresh) >= request.limit or len(result.hits) < fetch or fetch >= MAX_LIMIT:
            break
        fetch = min(MAX_LIMIT, fetch * 4)
    result.hits = fresh[: request.limit]
    return result


def queue_hits(
    conn: Connection,
    kind: str,
    name: str,
    *,
    label: str | None = None,
    strategy: str = "margin",
    n: int = 40,
    filters: Filters | None = None,
    seed: int = 0,
) -> tuple[list[Hit], str]:
    """The clips of a review queue and the label their verdicts get. ``kind`` ``classifier``:
    classifier ``name``'s ``label`` by ``strategy`` (``classifiers.pick_for_review``: top,
    margin, random); ``concept``: the concept's best unjudged windows (what ``soundscape review
    --concept`` picks); ``search``: a text search's best unjudged hits, labelled as
    :func:`card_label` says. Only windows no annotation of that label overlaps are queued."""
    if kind not in QUEUE_KINDS:
        raise InvalidRequest(f"a review queue follows one of: {', '.join(QUEUE_KINDS)}")
    if not 1 <= n <= MAX_QUEUE:
        raise InvalidRequest(f"a queue holds 1 to {MAX_QUEUE} clips, not {n}")
    if not name.strip():
        raise InvalidRequest(f"name the {kind} to review")
    filters = filters or Filters()
    if kind == "classifier":
        if strategy not in STRATEGIES:
            raise InvalidRequest(f"strategy: one of {', '.join(STRATEGIES)}")
        clf = get_classifier(conn, name)
        if not label:
            label = clf.labels[0].label
        clf.label(label)  # an unknown label: its message lists the known ones
        return classifier_batch_hits(conn, clf, label, strategy, n, filters, seed), label
    if kind == "concept":
        return concept_batch_hits(conn, name, n, filters), name
    request = SearchRequest(text=name, filters=filters, limit=n)
    fallback = fallback_label(conn, request)
    result = unreviewed_search(conn, request, fallback)
    hits = result.hits
    for h in hits:
        h.label = card_label(h, request, fallback)[0]
    return hits, fallback


def retrain(conn: Connection, name: str) -> Classifier:
    """Train classifier ``name`` again on today's annotations (its next version): the same
    space, labels and training parameters as its latest version (``classifiers.train``)."""
    clf = get_classifier(conn, name)
    p = clf.params
    return train(
        conn,
        name,
        clf.space,
        [m.label for m in clf.labels],
        seed=int(p.get("seed") or 0),
        weak_negatives=p.get("weak_negatives"),
        other_labels=bool(p.get("other_labels_negative", True)),
        target_precision=float(p.get("target_precision") or DEFAULT_TARGET_PRECISION),
        C=float(p.get("C") or DEFAULT_C),
    )
