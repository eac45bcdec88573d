"""Zero-shot classification: which of a few labels best describes each window.

- A space whose model has a text encoder (CLAP): each label becomes a text (through a template
  such as "the sound of {}"), and each window gets a softmax over the labels of its cosine
  similarities scaled by the model's logit scale (what CLAP zero-shot classification does).
- A classifier space (BirdNET): the labels are matched to its own classes (as search does) and
  each window's score for a label is its best stored class score among the matched classes.

Every classified window's top label and score is stored (``classifications``), so
``ranger.window_labels`` can say what each window is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.db import raw_connection, register_vector
from soundscape.embedders import get_model_class, load_model
from soundscape.embedders.base import l2_normalize
from soundscape.errors import BadOption, SoundscapeError
from soundscape.queries import FILTER_ARGS, Filters
from soundscape.search import match_labels
from soundscape.spaces import Space

BATCH = 5000
DEFAULT_TEMPLATE = "the sound of {}"

_FILTERED = f"ranger.filtered_windows(:space, {FILTER_ARGS})"


def parse_labels(text: str) -> list[str]:
    """``--labels``: comma-separated, at least two, all different, none empty (``a,,b`` is a
    typo, and dropping the empty item silently classified against other labels)."""
    items = [x.strip() for x in text.split(",")]
    if len(items) > 1 and not items[-1]:
        items.pop()  # a trailing comma
    empty = [i for i, x in enumerate(items, start=1) if not x]
    if empty and len(items) > 1:
        raise BadOption(
            f"label {empty[0]} of {text!r} is empty; separate labels by single commas, "
            'e.g. "speech, music, rain"',
            "--labels",
        )
    labels = [x for x in items if x]
    if len(labels) < 2:
        raise SoundscapeError("give at least two labels, separated by commas")
    if len(set(labels)) != len(labels):
        raise SoundscapeError("labels must be different from each other")
    return labels


@dataclass
class Classified:
    """One window's result (or, aggregated, one recording's)."""

    segment_id: int | None
    recording_id: int
    path: str
    sensor: str
    start_s: float
    end_s: float
    local: str | None
    label: str
    score: float
    windows: int = 1

    def as_row(self) -> dict[str, Any]:
        return {
            "segment_id": self.segment_id,
            "recording_id": self.recording_id,
            "sensor": self.sensor,
            "local": self.local,
            "start_s": float(self.start_s),
            "end_s": float(self.end_s),
            "path": self.path,
            "label": self.label,
            "score": float(self.score),
            "windows": self.windows,
        }


@dataclass
class Run:
    run_id: int
    space: Space
    labels: list[str]
    windows: list[Classified] = field(default_factory=list)
    recordings: list[Classified] = field(default_factory=list)


def _label_vectors(space: Space, labels: list[str], template: str) -> tuple[np.ndarray, float]:
    model = load_model(space.model, **space.params)
    texts = [
        template.format(label) if "{}" in template else f"{template} {label}" for label in labels
    ]
    vecs = l2_normalize(model.embed_text(texts))
    return vecs, model.logit_scale


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def classify(
    conn: Connection,
    space: Space,
    labels: list[str],
    filters: Filters,
    *,
    template: str | None = None,
) -> Run:
    """Classify every window of ``space`` that passes ``filters``; store and return results.

    ``template`` (default ``DEFAULT_TEMPLATE``) puts each label into a sentence for a text
    encoder; a space that classifies by its class labels (BirdNET) refuses one.
    """
    register_vector(conn)
    scorer = _scorer(conn, space, labels, template)
    run = Run(_start_run(conn, space, labels, scorer.template, filters), space, labels)
    tally = _Tally(run)
    params = {**filters.params(), "space": space.id}
    for rows, probs in scorer.batches(conn, space, params):
        tally.add(rows, probs)
    _store_windows(conn, run)
    run.recordings = tally.recordings()
    return run


# ------------------------------------------------------------------ how windows are scored
#: a space's filtered windows in recording and time order; ``{emb}`` adds the embedding
_WINDOWS = (
    "SELECT g.id, g.recording_id, g.start_s, g.end_s, g.local_date, g.local_time, r.path, "
    "s.name AS sensor{emb} FROM {filtered} f "
    "JOIN segments g ON g.space_id = :space AND g.id = f.segment_id "
    "JOIN recordings r ON r.id = g.recording_id JOIN sensors s ON s.id = g.sensor_id "
    "ORDER BY g.recording_id, g.start_s"
)


def _windows(conn: Connection, params: dict[str, Any], *, embedding: bool) -> Iterator[Any]:
    """The filtered windows, streamed in parts of ``BATCH`` rows."""
    sql = _WINDOWS.format(emb=", g.embedding" if embedding else "", filtered=_FILTERED)
    result = conn.execute(
        sa.text(sql).execution_options(stream_results=True, yield_per=BATCH), params
    )
    yield from result.partitions(BATCH)


@dataclass
class _TextScorer:
    """A text encoder's space: a softmax over the labels' texts of the scaled cosine
    similarities (CLAP zero-shot classification)."""

    text_vecs: np.ndarray
    scale: float
    template: str

    def batches(
        self, conn: Connection, space: Space, params: dict[str, Any]
    ) -> Iterator[tuple[Sequence[Any], np.ndarray]]:
        for part in _windows(conn, params, embedding=True):
            emb = np.stack([np.asarray(r.embedding.to_numpy(), np.float32) for r in part])
            yield part, _softmax(self.scale * (l2_normalize(emb) @ self.text_vecs.T))


@dataclass
class _ClassScorer:
    """A classifier's space: per label, the window's best stored score among the classes the
    label matched (``label_ids[j]`` for label j); windows with none of them are left out."""

    label_ids: list[list[int]]
    template: None = None

    def batches(
        self, conn: Connection, space: Space, params: dict[str, Any]
    ) -> Iterator[tuple[Sequence[Any], np.ndarray]]:
        all_ids = sorted({i for ids in self.label_ids for i in ids})
        owner = {i: j for j, ids in enumerate(self.label_ids) for i in ids}
        for part in _windows(conn, params, embedding=False):
            ids = [r.id for r in part]
            scores = np.zeros((len(part), len(self.label_ids)), np.float32)
            pos = {sid: n for n, sid in enumerate(ids)}
            for sid, lid, sc in conn.execute(
                sa.text(
                    "SELECT segment_id, label_id, score FROM segment_scores WHERE space_id = :s "
                    "AND segment_id = ANY(:ids) AND label_id = ANY(:labels)"
                ),
                {"s": space.id, "ids": ids, "labels": all_ids},
            ):
                row, col = pos[sid], owner[lid]
                scores[row, col] = max(scores[row, col], sc)
            keep = scores.max(axis=1) > 0  # windows where BirdNET saw none of the labels: skip
            yield [r for r, k in zip(part, keep) if k], scores[keep]


def _scorer(
    conn: Connection, space: Space, labels: list[str], template: str | None
) -> _TextScorer | _ClassScorer:
    """How ``space`` scores the labels: its text encoder where it has one that runs here, else
    its class labels; a template only for a text encoder."""
    cls = get_model_class(space.model)
    if cls.supports_text and cls.unavailable_reason() is None:
        template = template or DEFAULT_TEMPLATE
        return _TextScorer(*_label_vectors(space, labels, template), template)
    if conn.execute(
        sa.text("SELECT EXISTS (SELECT 1 FROM space_labels WHERE space_id = :s)"), {"s": space.id}
    ).scalar():
        if template is not None:
            raise SoundscapeError(
                f"space {space.name!r} has no text encoder here, so a template is not used: it "
                "classifies by matching the labels to its class names. Leave --template out, or "
                "classify a CLAP space (--space)"
            )
        return _ClassScorer([match_labels(conn, space, label)[0] for label in labels])
    raise SoundscapeError(
        f"space {space.name!r} has neither a text encoder nor class labels; classify with a "
        "CLAP or BirdNET space (--space)"
    )


# ------------------------------------------------------------------------ what is stored
def _start_run(
    conn: Connection, space: Space, labels: list[str], template: str | None, filters: Filters
) -> int:
    """A new ``classify_runs`` row (the labels, template and filters given); its id."""
    filt = filters.given()
    run_id = conn.execute(
        sa.text(
            "INSERT INTO classify_runs (space_id, labels, template, filters) "
            "VALUES (:s, :l, :t, CAST(:f AS jsonb)) RETURNING id"
        ),
        {"s": space.id, "l": labels, "t": template, "f": json.dumps(filt, default=str)},
    ).scalar()
    assert run_id is not None  # INSERT ... RETURNING always gives a row
    return int(run_id)


class _Tally:
    """Each window's top label and score (into ``run.windows``), and per recording the sum of
    its windows' label probabilities (``recordings`` gives their means' top labels)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        # recording -> [prob sum per label, count, path, sensor, start, end, local]
        self.sums: dict[int, list[Any]] = {}

    def add(self, rows: Sequence[Any], probs: np.ndarray) -> None:
        labels = self.run.labels
        for r, p, t in zip(rows, probs, probs.argmax(axis=1)):
            local = (
                f"{r.local_date} {r.local_time.isoformat(timespec='seconds')}"
                if r.local_date is not None
                else None
            )
            self.run.windows.append(
                Classified(
                    r.id,
                    r.recording_id,
                    r.path,
                    r.sensor,
                    r.start_s,
                    r.end_s,
                    local,
                    labels[t],
                    float(p[t]),
                )  # fmt: skip
            )
            acc = self.sums.setdefault(
                r.recording_id,
                [np.zeros(len(labels)), 0, r.path, r.sensor, r.start_s, r.end_s, local],
            )
            acc[0] += p
            acc[1] += 1
            acc[4] = min(acc[4], r.start_s)
            acc[5] = max(acc[5], r.end_s)

    def recordings(self) -> list[Classified]:
        out = []
        labels = self.run.labels
        for rec_id, (total, n, path, sensor, start, end, local) in self.sums.items():
            mean = total / n
            t = int(mean.argmax())
            out.append(
                Classified(
                    None, rec_id, path, sensor, start, end, local, labels[t], float(mean[t]), n
                )
            )
        return out


def _store_windows(conn: Connection, run: Run) -> None:
    """Store each classified window's top label and score (``classifications``)."""
    raw = raw_connection(conn)
    with raw.cursor().copy(
        "COPY classifications (run_id, space_id, segment_id, label, score) FROM STDIN"
    ) as copy:
        for w in run.windows:
            copy.write_row((run.run_id, run.space.id, w.segment_id, w.label, w.score))
    conn.execute(
        sa.text("UPDATE classify_runs SET n_windows = :n WHERE id = :r"),
        {"n": len(run.windows), "r": run.run_id},
    )
