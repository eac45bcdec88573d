"""Review batches: a folder to listen to and judge in Raven (or any player), read back as
annotations.

A batch is a WAV clip + spectrogram PNG per window (``soundscape.export.export_clips``) and
one Raven selection table, ``review.txt`` (``formats.raven.REVIEW_COLUMNS``), with a row per
window: ``Begin Path`` and ``File Offset (s)`` name the recording and place, ``Label`` the label under review and an
empty ``Verdict`` column to fill with yes / no / unsure. ``soundscape annotate import
DIR/review.txt`` then stores the filled rows as annotations (rows left empty are skipped), and
the next ``soundscape train`` learns from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.classifiers import Classifier, pick_for_review
from soundscape.concepts import concept_query
from soundscape.errors import SoundscapeError
from soundscape.export import export_clips
from soundscape.formats.raven import write_review_table
from soundscape.media_files import StoredFile
from soundscape.queries import Filters
from soundscape.results import Hit
from soundscape.search import run

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
