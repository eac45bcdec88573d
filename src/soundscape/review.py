"""Review batches: a folder to listen to and judge in Raven (or any player), read back as
annotations.

A batch is a WAV clip + spectrogram PNG per window (``soundscape.export.export_clips``) and
one Raven selection table, ``review.txt``, with a row per window: ``Begin Path`` and
``File Offset (s)`` name the recording and place, ``Label`` the label under review and an
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
from soundscape.export import export_clips, table_cell
from soundscape.media_files import StoredFile
from soundscape.queries import Filters
from soundscape.results import Hit
from soundscape.search import run

REVIEW_TABLE = "review.txt"
REVIEW_COLUMNS = [
    "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
    "High Freq (Hz)", "Begin Path", "File Offset (s)", "Label", "Verdict", "Score",
    "Strategy", "Rank", "Window ID", "Sensor", "Local Time", "Clip",
]  # fmt: skip


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
    hits: list[Hit], folder: Path, label: str, strategy: str, stored: Mapping[int, StoredFile]
) -> ReviewBatch:
    """Write clips, spectrograms and ``review.txt`` (empty Verdict column) into ``folder``;
    ``stored``: the hits' recordings' stored files (``media_files.stored_files``), by which
    the clips are read (``export_clips``)."""
    folder = Path(folder)
    table = folder / REVIEW_TABLE
    if table.exists():
        raise SoundscapeError(
            f"{table} exists (a batch not yet imported?); choose another --out folder"
        )
    clips = export_clips(hits, folder, stored)
    batch = ReviewBatch(folder, table, hits, label, strategy, list(clips.written), clips.errors)
    highs: dict[str, float] = {}
    lines = ["\t".join(REVIEW_COLUMNS)]
    for rank, hit in enumerate(hits, start=1):
        if hit.path not in highs:  # the stored sample rate: no file is opened for it
            known = stored.get(hit.recording_id)
            rate = known.sample_rate if known is not None else None
            highs[hit.path] = (rate or 48000) / 2
        cells = [
            rank, "Spectrogram 1", 1, f"{hit.start_s:.3f}", f"{hit.end_s:.3f}", 0,
            f"{highs[hit.path]:g}", hit.path, f"{hit.start_s:.3f}", label, "",
            f"{hit.score:.4f}", strategy, rank, hit.segment_id, hit.sensor,
            hit.local.isoformat(sep=" ", timespec="seconds") if hit.local else "",
            Path(hit.clip).name if hit.clip else "",
        ]  # fmt: skip
        lines.append("\t".join(table_cell(c) for c in cells))
    folder.mkdir(parents=True, exist_ok=True)
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    batch.written.append(table)
    return batch
