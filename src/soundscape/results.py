"""Search results: a ranked window (``Hit``) and the merging of hits into events.

Search, anomalies, classifiers and review batches all hand back hits; exports
(``soundscape.export``) and the CLI render them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, time
from typing import Any


@dataclass
class Hit:
    """A window (or, after ``merge_events``, an event of windows) with its score."""

    segment_id: int
    score: float
    recording_id: int
    path: str
    sensor: str
    site: str | None
    quadrant: str | None
    start_s: float
    end_s: float
    starts_at: datetime | None
    local_date: date | None
    local_time: time | None
    label: str | None = None
    method: str = ""
    n_windows: int = 1
    clip: str | None = None

    @property
    def local(self) -> datetime | None:
        if self.local_date is None or self.local_time is None:
            return None
        return datetime.combine(self.local_date, self.local_time)

    def as_row(self) -> dict[str, Any]:
        d = asdict(self)
        d["local"] = self.local.isoformat(sep=" ", timespec="seconds") if self.local else None
        # Full precision: --json/--csv carry the stored values; only the table rounds.
        d["score"] = float(self.score)
        d["start_s"] = float(self.start_s)
        d["end_s"] = float(self.end_s)
        return d


#: Columns of a hit as ``soundscape search`` shows them; see ``hit_rows``.
HIT_COLUMNS = [
    "rank", "score", "sensor", "site", "quadrant", "local", "start_s", "end_s", "path",
    "segment_id",
]  # fmt: skip
#: What JSON and CSV add to the table's columns.
EXTRA_COLUMNS = ["recording_id", "starts_at", "method", "label", "n_windows"]


def hit_rows(
    hits: list[Hit], *, labels: bool, events: bool, clips: bool = False, full: bool = True
) -> tuple[list[dict[str, Any]], list[str]]:
    """Ranked rows of hits and the columns to show: ``label`` for a label query, ``n_windows``
    for events, ``clip`` after an export; ``full`` (JSON, CSV, the web page's JSON) adds
    ``EXTRA_COLUMNS``. The CLI and the web page render hits through this."""
    rows = [{"rank": rank, **hit.as_row()} for rank, hit in enumerate(hits, start=1)]
    columns = list(HIT_COLUMNS)
    if labels:
        columns.insert(2, "label")
    if events:
        columns.insert(columns.index("path"), "n_windows")
    if clips:
        columns.append("clip")
    if full:
        columns += [c for c in EXTRA_COLUMNS if c not in columns]
    return rows, columns


def merge_events(hits: list[Hit], gap_s: float = 0.0) -> list[Hit]:
    """Merge hits of the same recording and label whose windows overlap or touch (next start
    <= end + gap) into events: the span of the windows, the best score, and how many windows.

    Hits of different labels (a "birdsong" query ranks every bird class) stay apart: a Robin
    and a Wren singing over each other are two events, not one. An event's ``segment_id`` is
    its best window's.
    """
    groups: dict[tuple[int, str | None], list[Hit]] = {}
    for h in hits:
        groups.setdefault((h.recording_id, h.label), []).append(h)
    events: list[Hit] = []
    for group in groups.values():
        group.sort(key=lambda h: h.start_s)
        current: Hit | None = None
        for h in group:
            if current is not None and h.start_s <= current.end_s + gap_s + 1e-6:
                current.end_s = max(current.end_s, h.end_s)
                current.n_windows += 1
                if h.score > current.score:
                    current.score, current.segment_id = h.score, h.segment_id
                continue
            if current is not None:
                events.append(current)
            current = replace(h, n_windows=1)
        if current is not None:
            events.append(current)
    events.sort(key=lambda e: (-e.score, e.recording_id, e.start_s, e.label or ""))
    return events
