"""Few-shot classifiers: train a linear model per label on a space's embeddings of annotated
windows, store it with its metrics, score windows into detections, evaluate it on annotations
it never saw, and pick windows for review (active learning).

The model of a label is one-vs-rest logistic regression (scikit-learn, lbfgs, L2 penalty C) on
standardised embeddings; the standardisation is folded into the stored weights, so a label is
just ``w`` and ``b``: logit = w . x + b on the raw float32 embedding, score = sigmoid(logit).
That is what SQL computes with pgvector's inner product (``sql/classifiers.sql``), and every
score shown (search, detections, review) is that probability.

Training data of a label L (windows of the space, labelled by overlap with annotations of the
same recording, see :func:`soundscape.annotations.windows_labelled`):

- positives: windows overlapping a ``yes`` annotation of L by at least half of the shorter of
  the two spans (:data:`MIN_OVERLAP`);
- negatives: windows overlapping a ``no`` annotation of L that way, and (``other_labels``, on
  by default) windows overlapping a ``yes`` annotation of another label of this classifier:
  a saw is not fireworks. A window that is both a positive and a negative is left out;
- weak negatives: a seeded sample of windows that overlap no annotation at all, taken to be
  background (they may hide a few unlabelled positives: that is the usual trade of agile
  modeling). By default :data:`DEFAULT_WEAK_NEGATIVES` (1,000) but at most a quarter of the
  unannotated windows (:data:`WEAK_FRACTION`), so that in a small database the unlabelled
  events are not all taught as negatives; an explicit number is taken as asked. ``unsure`` annotations and windows
  that only touch an annotation are used for nothing.

Cross-validation (per label, folds grouped by annotation so that the windows of one event
never sit on both sides) gives out-of-fold scores, from which precision, recall, average
precision and ROC-AUC are computed and a threshold is chosen: the lowest score whose
out-of-fold precision reaches the target (default 0.9); when no threshold reaches it, the one
with the best F1, and the metrics say so. With fewer than two positive events (or two
negatives) there is no cross-validation: the metrics say "too few" and the threshold is 0.5.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.annotations import windows_labelled
from soundscape.db import raw_connection, register_vector
from soundscape.errors import SoundscapeError
from soundscape.queries import FILTER_ARGS, Filters, Query
from soundscape.results import Hit
from soundscape.spaces import Space, get_space, list_spaces

#: Fraction of the shorter span (window or annotation) a window must share with an annotation
#: to be a training example of it.
MIN_OVERLAP = 0.5
DEFAULT_WEAK_NEGATIVES = 1000
WEAK_FRACTION = 0.25
DEFAULT_TARGET_PRECISION = 0.9
DEFAULT_C = 1.0
MAX_FOLDS = 5
#: Windows per scoring statement of ``classify`` (bounded work and memory per statement).
SCORE_BATCH = 50_000
STRATEGIES = ("top", "margin", "random")


class ClassifierError(SoundscapeError):
    """A classifier cannot be trained, found or used as asked; the message says why."""


# ------------------------------------------------------------------------------- records
@dataclass
class LabelModel:
    label: str
    weights: np.ndarray
    bias: float
    threshold: float
    n_pos: int
    n_neg: int
    metrics: dict[str, Any] = field(default_factory=dict)

    def logit(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32) @ self.weights.astype(np.float32) + self.bias

    def score(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(self.logit(x))


@dataclass
class Classifier:
    id: int
    name: str
    version: int
    space: Space
    labels: list[LabelModel]
    params: dict[str, Any]
    annotation_ids: list[int]
    created_at: datetime | None = None

    def label(self, name: str) -> LabelModel:
        for m in self.labels:
            if m.label == name:
                return m
        raise ClassifierError(
            f"classifier {self.name!r} v{self.version} has no label {name!r}; its labels: "
            f"{', '.join(m.label for m in self.labels)}"
        )

    def rows(self) -> list[dict[str, Any]]:
        """One row per label: what `train` and `classifiers list` print."""
        out = []
        for m in self.labels:
            mt = m.metrics
            out.append(
                {
                    "name": self.name,
                    "version": self.version,
                    "space": self.space.name,
                    "label": m.label,
                    "n_pos": m.n_pos,
                    "n_neg": m.n_neg,
                    "threshold": round(m.threshold, 4),
                    "precision": _round(mt.get("precision")),
                    "recall": _round(mt.get("recall")),
                    "average_precision": _round(mt.get("average_precision")),
                    "roc_auc": _round(mt.get("roc_auc")),
                    "folds": mt.get("folds"),
                    "note": mt.get("note"),
                    "created_at": self.created_at.isoformat(timespec="seconds")
                    if self.created_at
                    else None,
                }
            )
        return out


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def logit_of(p: float) -> float:
    return math.log(p / (1 - p))


# ------------------------------------------------------------------------------- training data
@dataclass
class TrainingSet:
    """Embeddings and per-label targets of the windows a classifier is trained on."""

    space: Space
    labels: list[str]
    segment_ids: np.ndarray  # int64 [n]
    X: np.ndarray  # float32 [n, dim]
    #: per label: +1 positive, 0 negative, -1 not used; [n]
    targets: dict[str, np.ndarray]
    #: per window: the annotation id that makes it an example (group for cross-validation),
    #: or -(segment id) for weak negatives (each its own group)
    groups: np.ndarray
    annotation_ids: list[int]
    n_weak: int


def _embeddings(conn: Connection, space: Space, ids: Sequence[int]) -> np.ndarray:
    """float32 embeddings of windows, in the order of ``ids``. Read through a binary psycopg
    cursor: pgvector's binary format is a memory copy, its text format a float parse per
    component (about 50x slower for 1024-d vectors)."""
    register_vector(conn)
    out = np.zeros((len(ids), space.dimension), np.float32)
    if not len(ids):
        return out
    where = {int(i): k for k, i in enumerate(ids)}
    raw = raw_connection(conn)
    for start in range(0, len(ids), 5000):
        chunk = [int(i) for i in ids[start : start + 5000]]
        with raw.cursor(binary=True) as cur:
            cur.execute(
                "SELECT id, embedding FROM segments WHERE space_id = %s AND id = ANY(%s)",
                (space.id, chunk),
            )
            for sid, vec in cur:
                out[where[int(sid)]] = vec.to_numpy()
    return out


def training_set(
    conn: Connection,
    space: Space,
    labels: Sequence[str] | None = None,
    *,
    weak_negatives: int | None = None,
    other_labels: bool = True,
    seed: int = 0,
) -> TrainingSet:
    """Collect the training windows of ``labels`` (default: every label with a ``yes``
    annotation on windows of this space)."""
    pairs = windows_labelled(conn, space.id, min_overlap=MIN_OVERLAP)
    touched = {p.segment_id for p in windows_labelled(conn, space.id, min_overlap=0.0)}
    yes_labels = sorted({p.label for p in pairs if p.verdict == "yes"})
    labels = _check_labels(space, labels, yes_labels)
    ex = _examples(pairs, labels, other_labels)
    weak: list[int] = []
    if weak_negatives is None or weak_negatives > 0:
        weak = _weak_negatives(conn, space, touched, weak_negatives, seed)

    example_ids = sorted({s for lab in labels for s in (*ex.pos[lab], *ex.neg[lab])} | set(weak))
    targets, groups = _targets(labels, ex, weak, example_ids)
    X = _embeddings(conn, space, example_ids)
    return TrainingSet(
        space=space,
        labels=labels,
        segment_ids=np.array(example_ids, np.int64),
        X=X,
        targets=targets,
        groups=groups,
        annotation_ids=sorted(ex.used_annotations),
        n_weak=len(weak),
    )


def _check_labels(space: Space, labels: Sequence[str] | None, yes_labels: list[str]) -> list[str]:
    """The labels to train (default: every label with a ``yes``), each with positives here."""
    if labels is None:
        labels = yes_labels
        if not labels:
            raise ClassifierError(
                f"no 'yes' annotations overlap windows of space {space.name!r}: annotate a few "
                "examples first (soundscape annotate add / hit / import)"
            )
    labels = list(dict.fromkeys(labels))
    missing = [lab for lab in labels if lab not in yes_labels]
    if missing:
        known = ", ".join(yes_labels) or "none"
        raise ClassifierError(
            f"no 'yes' annotation of {', '.join(map(repr, missing))} overlaps a window of space "
            f"{space.name!r} (labels with positives there: {known})"
        )
    return labels


@dataclass
class _Examples:
    """Per label, the windows that are positives and negatives, each with the annotation that
    makes it one (segment id -> annotation id), and every annotation so used."""

    pos: dict[str, dict[int, int]]
    neg: dict[str, dict[int, int]]
    used_annotations: set[int]


def _examples(pairs: Sequence[Any], labels: list[str], other_labels: bool) -> _Examples:
    """Sort the (window, annotation) pairs into each label's positives and negatives."""
    pos: dict[str, dict[int, int]] = {lab: {} for lab in labels}  # segment -> annotation
    neg: dict[str, dict[int, int]] = {lab: {} for lab in labels}
    used_annotations: set[int] = set()
    for p in pairs:
        if p.verdict == "unsure":
            continue
        for lab in labels:
            if p.label == lab and p.verdict == "yes":
                pos[lab].setdefault(p.segment_id, p.annotation_id)
            elif (p.label == lab and p.verdict == "no") or (
                other_labels and p.label != lab and p.label in labels and p.verdict == "yes"
            ):
                neg[lab].setdefault(p.segment_id, p.annotation_id)
            else:
                continue
            used_annotations.add(p.annotation_id)
    for lab in labels:  # a window both yes and no for a label teaches nothing
        for sid in set(pos[lab]) & set(neg[lab]):
            del pos[lab][sid], neg[lab][sid]
    return _Examples(pos, neg, used_annotations)


def _weak_negatives(
    conn: Connection, space: Space, touched: set[int], weak_negatives: int | None, seed: int
) -> list[int]:
    """A seeded sample of the windows that touch no annotation (see the module doc)."""
    # One array instead of a row per window: 3.5x faster at 1M windows.
    all_ids = np.array(
        conn.execute(
            sa.text(
                "SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM segments WHERE space_id = :s"
            ),
            {"s": space.id},
        ).scalar(),
        dtype=np.int64,
    )
    free = all_ids[~np.isin(all_ids, np.fromiter(touched, np.int64, len(touched)))]
    rng = np.random.default_rng(seed)
    if weak_negatives is None:
        take = min(DEFAULT_WEAK_NEGATIVES, int(WEAK_FRACTION * len(free)))
    else:
        take = min(weak_negatives, len(free))
    return sorted(int(i) for i in rng.choice(free, size=take, replace=False)) if take else []


def _targets(
    labels: list[str], ex: _Examples, weak: list[int], example_ids: list[int]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per label the target of each example window (+1, 0, -1 unused), and each window's
    cross-validation group (its annotation, or -(segment id) for a weak negative)."""
    index = {s: k for k, s in enumerate(example_ids)}
    n = len(example_ids)
    targets = {}
    groups = np.array([-s for s in example_ids], dtype=np.int64)
    for lab in labels:
        t = np.full(n, -1, np.int8)
        for s in weak:
            t[index[s]] = 0
        for s, a in ex.neg[lab].items():
            t[index[s]] = 0
            groups[index[s]] = a
        for s, a in ex.pos[lab].items():
            t[index[s]] = 1
            groups[index[s]] = a
        targets[lab] = t
    return targets, groups


# ------------------------------------------------------------------------------- fitting
def _fit(X: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    """Logistic regression on standardised features, folded back into raw-feature w and b."""
    X = np.asarray(X, np.float32)
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    sd[sd < 1e-6] = 1.0
    Z = (X - mu) / sd
    # scikit-learn (with scipy and pandas: ~3 s of CPU to import) only where it fits or scores:
    # `soundscape search` imports this module for --classifier and must not pay for it
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, class_weight="balanced", max_iter=5000)
    model.fit(Z, y)
    coef = model.coef_[0] / sd
    bias = float(model.intercept_[0] - np.dot(coef, mu))
    return coef.astype(np.float32), bias


def _choose_threshold(
    y: np.ndarray, scores: np.ndarray, target_precision: float
) -> tuple[float, bool]:
    """The lowest score threshold whose precision reaches the target (True), else the best-F1
    threshold (False). Thresholds are probabilities in (0, 1)."""
    from sklearn.metrics import precision_recall_curve  # lazily: see _fit

    precision, recall, thresholds = precision_recall_curve(y, scores)
    # precision[i], recall[i] belong to thresholds[i] (the last point has no threshold)
    ok = np.nonzero(precision[:-1] >= target_precision)[0]
    if len(ok):
        t = float(thresholds[ok[0]])
        met = True
    else:
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        t = float(thresholds[int(np.argmax(f1))])
        met = False
    return min(max(t, 1e-6), 1 - 1e-6), met


def _grouped_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold of each example: the groups (annotations; each weak negative its own) of each
    class are shuffled with the seed and dealt round robin, so folds are stratified and the
    windows of one annotation stay together. (scikit-learn's StratifiedGroupKFold does the
    same but took 6 s per label for 10,000 groups.)"""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), np.int64)
    for cls in (1, 0):
        members = np.nonzero(y == cls)[0]
        uniq, inverse = np.unique(groups[members], return_inverse=True)
        order = rng.permutation(len(uniq))
        fold_of_group = np.empty(len(uniq), np.int64)
        fold_of_group[order] = np.arange(len(uniq)) % k
        fold[members] = fold_of_group[inverse]
    return fold


def _cross_validate(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    C: float,
    seed: int,
    target_precision: float,
) -> tuple[dict[str, Any], float]:
    from sklearn.metrics import average_precision_score, roc_auc_score  # lazily: see _fit

    n_pos_groups = len(set(groups[y == 1].tolist()))
    n_neg = int((y == 0).sum())
    k = min(MAX_FOLDS, n_pos_groups, n_neg)
    if k < 2:
        return (
            {
                "folds": 0,
                "note": f"too few examples for cross-validation ({n_pos_groups} positive "
                f"event(s), {n_neg} negative window(s); need 2 of each): no metrics, threshold 0.5",
            },
            0.5,
        )
    oof = np.zeros(len(y), np.float64)
    fold = _grouped_folds(y, groups, k, seed)
    for f in range(k):
        train_idx, test_idx = np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]
        if len(set(y[train_idx].tolist())) < 2:
            oof[test_idx] = 0.5
            continue
        w, b = _fit(X[train_idx], y[train_idx], C)
        oof[test_idx] = sigmoid(X[test_idx] @ w + b)
    threshold, met = _choose_threshold(y, oof, target_precision)
    pred = oof >= threshold
    tp = int((pred & (y == 1)).sum())
    metrics: dict[str, Any] = {
        "folds": k,
        "precision": tp / max(1, int(pred.sum())),
        "recall": tp / max(1, int((y == 1).sum())),
        "average_precision": float(average_precision_score(y, oof)),
        "roc_auc": float(roc_auc_score(y, oof)),
        "target_precision": target_precision,
        "target_met": met,
    }
    if not met:
        metrics["note"] = (
            f"no threshold reaches precision {target_precision:g} in cross-validation; "
            "threshold at the best F1 (annotate more examples)"
        )
    if k < MAX_FOLDS:
        metrics.setdefault("note", f"only {k} folds ({n_pos_groups} positive events)")
    return metrics, threshold


def train(
    conn: Connection,
    name: str,
    space: Space | str,
    labels: Sequence[str] | None = None,
    *,
    seed: int = 0,
    weak_negatives: int | None = None,
    other_labels: bool = True,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    thresholds: dict[str, float] | None = None,
    C: float = DEFAULT_C,
) -> Classifier:
    """Train one-vs-rest logistic regression per label and store it as the next version of
    ``name``. Deterministic given the database contents and ``seed``."""
    if not name or not name.strip():
        raise ClassifierError("a classifier needs a name")
    if not 0 < target_precision < 1:
        raise ClassifierError(f"target precision must be between 0 and 1, not {target_precision}")
    if weak_negatives is not None and weak_negatives < 0:
        raise ClassifierError("the number of weak negatives cannot be negative")
    if C <= 0:
        raise ClassifierError("C must be positive")
    space = get_space(conn, space) if isinstance(space, str) else space
    previous = _latest_row(conn, name)
    if previous is not None and previous.space_id != space.id:
        other = next(s.name for s in list_spaces(conn) if s.id == previous.space_id)
        raise ClassifierError(
            f"classifier {name!r} was trained on space {other!r}, not {space.name!r}: "
            "its versions must share a space; choose another name"
        )
    thresholds = dict(thresholds or {})
    data = training_set(
        conn, space, labels, weak_negatives=weak_negatives, other_labels=other_labels, seed=seed
    )
    unknown = sorted(set(thresholds) - set(data.labels))
    if unknown:
        raise ClassifierError(
            f"--threshold for {', '.join(map(repr, unknown))}, which is not a label being "
            f"trained ({', '.join(data.labels)})"
        )
    for lab, thr in thresholds.items():
        if not 0 < thr < 1:
            raise ClassifierError(f"threshold of {lab!r} must be between 0 and 1, not {thr}")
    models = []
    for lab in data.labels:
        t = data.targets[lab]
        keep = t >= 0
        X, y, groups = data.X[keep], t[keep].astype(np.int64), data.groups[keep]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        if n_neg == 0:
            raise ClassifierError(
                f"label {lab!r} has {n_pos} positive window(s) but no negatives: annotate 'no' "
                "examples, train several labels together, or allow weak negatives"
            )
        metrics, threshold = _cross_validate(X, y, groups, C, seed, target_precision)
        if lab in thresholds:
            metrics["threshold_chosen"] = threshold
            threshold = thresholds[lab]
            metrics["threshold_overridden"] = True
        w, b = _fit(X, y, C)
        metrics["n_events"] = len(set(groups[y == 1].tolist()))
        models.append(LabelModel(lab, w, b, float(threshold), n_pos, n_neg, metrics))
    params = {
        "seed": seed,
        "C": C,
        "weak_negatives": weak_negatives,
        "weak_negatives_used": data.n_weak,
        "other_labels_negative": other_labels,
        "target_precision": target_precision,
        "min_overlap": MIN_OVERLAP,
        "model": "logistic regression (lbfgs, L2, balanced class weights, standardised)",
    }
    version = (previous.version + 1) if previous is not None else 1
    return _store(conn, name, version, space, models, params, data.annotation_ids)


def _latest_row(conn: Connection, name: str) -> Any:
    return conn.execute(
        sa.text(
            "SELECT id, version, space_id FROM classifiers WHERE name = :n "
            "ORDER BY version DESC LIMIT 1"
        ),
        {"n": name},
    ).fetchone()


def _store(
    conn: Connection,
    name: str,
    version: int,
    space: Space,
    models: list[LabelModel],
    params: dict[str, Any],
    annotation_ids: list[int],
) -> Classifier:
    register_vector(conn)
    row = conn.execute(
        sa.text(
            "INSERT INTO classifiers (name, version, space_id, labels, params, annotation_ids) "
            "VALUES (:n, :v, :s, :l, CAST(:p AS jsonb), CAST(:a AS bigint[])) "
            "RETURNING id, created_at"
        ),
        {
            "n": name,
            "v": version,
            "s": space.id,
            "l": [m.label for m in models],
            "p": json.dumps(params),
            "a": annotation_ids,
        },
    ).fetchone()
    assert row is not None  # INSERT ... RETURNING always gives a row
    for m in models:
        conn.execute(
            sa.text(
                "INSERT INTO classifier_labels (classifier_id, label, weights, bias, threshold, "
                "n_pos, n_neg, metrics) VALUES (:c, :l, :w, :b, :t, :np, :nn, CAST(:m AS jsonb))"
            ),
            {
                "c": row.id,
                "l": m.label,
                "w": m.weights.astype(np.float32),
                "b": m.bias,
                "t": m.threshold,
                "np": m.n_pos,
                "nn": m.n_neg,
                "m": json.dumps(m.metrics),
            },
        )
    return Classifier(row.id, name, version, space, models, params, annotation_ids, row.created_at)


# ------------------------------------------------------------------------------- loading
def get_classifier(conn: Connection, name: str, version: int | None = None) -> Classifier:
    """A stored classifier (its latest version unless ``version``)."""
    register_vector(conn)
    row = conn.execute(
        sa.text(
            "SELECT id, name, version, space_id, labels, params, annotation_ids, created_at "
            "FROM classifiers WHERE name = :n AND (CAST(:v AS integer) IS NULL OR version = :v) "
            "ORDER BY version DESC LIMIT 1"
        ),
        {"n": name, "v": version},
    ).fetchone()
    if row is None:
        names = conn.execute(sa.text("SELECT DISTINCT name FROM classifiers ORDER BY 1")).scalars()
        known = ", ".join(names) or "none yet (soundscape train)"
        which = f" version {version}" if version is not None else ""
        raise ClassifierError(f"no classifier {name!r}{which}; known: {known}")
    space = next(s for s in list_spaces(conn) if s.id == row.space_id)
    models = [
        LabelModel(
            r.label,
            np.asarray(r.weights.to_numpy(), np.float32),
            float(r.bias),
            float(r.threshold),
            int(r.n_pos),
            int(r.n_neg),
            dict(r.metrics or {}),
        )
        for r in conn.execute(
            sa.text(
                "SELECT label, weights, bias, threshold, n_pos, n_neg, metrics "
                "FROM classifier_labels WHERE classifier_id = :c"
            ),
            {"c": row.id},
        )
    ]
    order = {lab: k for k, lab in enumerate(row.labels)}
    models.sort(key=lambda m: order.get(m.label, len(order)))
    return Classifier(
        row.id,
        row.name,
        row.version,
        space,
        models,
        dict(row.params or {}),
        [int(a) for a in row.annotation_ids or []],
        row.created_at,
    )


def list_classifiers(conn: Connection, name: str | None = None) -> list[dict[str, Any]]:
    """One row per version and label (``ranger.classifiers``), newest first."""
    rows = conn.execute(
        sa.text(
            "SELECT name, version, space, label, n_pos, n_neg, threshold, precision, recall, "
            "average_precision, roc_auc, detections, note, created_at FROM ranger.classifiers "
            "WHERE CAST(:n AS text) IS NULL OR name = :n ORDER BY name, version DESC, label"
        ),
        {"n": name},
    )
    out = []
    for r in rows:
        d = dict(r._mapping)
        for k in ("threshold", "precision", "recall", "average_precision", "roc_auc"):
            d[k] = _round(d[k])
        d["created_at"] = d["created_at"].isoformat(timespec="seconds")
        out.append(d)
    return out


# ------------------------------------------------------------------------------- search
def classifier_query(conn: Connection, name: str, label: str, version: int | None = None) -> Query:
    """A search query that ranks windows by a classifier label's score (``search.run`` knows
    it: ``kind == "classifier"``)."""
    clf = get_classifier(conn, name, version)
    model = clf.label(label)
    return Query(
        clf.space,
        f"classifier {clf.name} v{clf.version} label {label!r}",
        kind="classifier",
        classifier=(clf.name, clf.version, model.label),
    )


def ranked(
    conn: Connection,
    clf: Classifier,
    label: str,
    filters: Filters,
    limit: int,
    *,
    order: str = "top",
    unlabelled: bool = False,
) -> list[Hit]:
    """Windows ranked by ``label``'s score (``order='top'``) or by closeness to its threshold
    (``'margin'``), optionally only those overlapping no annotation of the label."""
    clf.label(label)
    rows = conn.execute(
        sa.text(
            "SELECT * FROM ranger.search_classifier(:name, :label, :k, "
            f"{FILTER_ARGS}, p_min_score => CAST(:min_score AS real), p_version => :version, "
            "p_order => :order, p_unlabelled => :unlabelled)"
        ),
        {
            **filters.params(),
            "name": clf.name,
            "label": label,
            "k": int(limit),
            "version": clf.version,
            "order": order,
            "unlabelled": unlabelled,
        },
    )
    return [Hit(**dict(r._mapping)) for r in rows]


# ------------------------------------------------------------------------------- scoring
@dataclass
class ClassifyResult:
    classifier: Classifier
    scored: int = 0
    detected: int = 0
    per_label: dict[str, int] = field(default_factory=dict)


def classify(
    conn: Connection,
    clf: Classifier,
    filters: Filters | None = None,
    *,
    new_only: bool = False,
    batch: int = SCORE_BATCH,
    progress: Any = None,
) -> ClassifyResult:
    """Score the windows of ``clf``'s space that pass ``filters`` (``new_only``: only those
    this version has not scored yet) and store those above a label's threshold as detections.
    Runs in SQL, one statement per range of ``batch`` window ids (bounded memory)."""
    filters = filters or Filters()
    bounds = conn.execute(
        sa.text("SELECT min(id), max(id) FROM segments WHERE space_id = :s"),
        {"s": clf.space.id},
    ).fetchone()
    assert bounds is not None  # an aggregate without GROUP BY always gives a row
    lo, hi = bounds
    out = ClassifyResult(clf)
    if lo is None:
        return out
    params = {k: v for k, v in filters.params().items() if k != "min_score"}
    start = int(lo)
    while start <= hi:
        end = start + batch
        r = conn.execute(
            sa.text(f"SELECT * FROM ranger._classify_batch(:c, :lo, :hi, :new, {FILTER_ARGS})"),
            {**params, "c": clf.id, "lo": start, "hi": end, "new": new_only},
        ).fetchone()
        assert r is not None  # _classify_batch returns one row of counts
        out.scored += int(r.scored)
        out.detected += int(r.detected)
        if progress is not None:
            progress(min(end, hi + 1) - lo, hi + 1 - lo)
        start = end
    for r in conn.execute(
        sa.text(
            "SELECT label, count(*) AS n FROM classifier_detections WHERE classifier_id = :c "
            "GROUP BY label"
        ),
        {"c": clf.id},
    ):
        out.per_label[r.label] = int(r.n)
    return out


# ------------------------------------------------------------------------------- evaluation
def evaluate(conn: Connection, clf: Classifier) -> list[dict[str, Any]]:
    """Precision, recall (at each label's threshold) and average precision on annotations the
    classifier was not trained on (ids not in its stored list), labelled like training data:
    ``yes`` of the label positive, ``no`` of the label and ``yes`` of its other labels
    negative."""
    from sklearn.metrics import average_precision_score  # lazily: see _fit

    used = set(clf.annotation_ids)
    labels = [m.label for m in clf.labels]
    pairs = [
        p
        for p in windows_labelled(conn, clf.space.id, labels, min_overlap=MIN_OVERLAP)
        if p.annotation_id not in used and p.verdict != "unsure"
    ]
    ids = sorted({p.segment_id for p in pairs})
    X = _embeddings(conn, clf.space, ids)
    index = {s: k for k, s in enumerate(ids)}
    rows = []
    for m in clf.labels:
        pos: set[int] = set()
        neg: set[int] = set()
        ann: set[int] = set()
        for p in pairs:
            if p.label == m.label and p.verdict == "yes":
                pos.add(p.segment_id)
            elif (
                p.verdict == "no"
                and p.label == m.label
                or (p.label != m.label and p.verdict == "yes")
            ):
                neg.add(p.segment_id)
            else:
                continue
            ann.add(p.annotation_id)
        both = pos & neg
        pos, neg = pos - both, neg - both
        row: dict[str, Any] = {
            "name": clf.name,
            "version": clf.version,
            "label": m.label,
            "n_annotations": len(ann),
            "n_pos": len(pos),
            "n_neg": len(neg),
            "threshold": round(m.threshold, 4),
            "precision": None,
            "recall": None,
            "average_precision": None,
            "note": None,
        }
        sel = sorted(pos | neg)
        if not pos:
            row["note"] = "no new 'yes' annotations of this label since training"
            if neg:
                s = m.score(X[[index[i] for i in sel]])
                row["false_positives"] = int((s >= m.threshold).sum())
            rows.append(row)
            continue
        y = np.array([1 if i in pos else 0 for i in sel])
        s = m.score(X[[index[i] for i in sel]])
        pred = s >= m.threshold
        tp = int((pred & (y == 1)).sum())
        row["precision"] = _round(tp / pred.sum()) if pred.sum() else None
        row["recall"] = _round(tp / len(pos))
        if neg:
            row["average_precision"] = _round(average_precision_score(y, s))
        else:
            row["note"] = "no negatives among the new annotations: precision is not measured"
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------- review
def pick_for_review(
    conn: Connection,
    clf: Classifier,
    label: str,
    strategy: str = "margin",
    n: int = 20,
    *,
    filters: Filters | None = None,
    seed: int = 0,
) -> list[Hit]:
    """Windows to review next, none of which overlaps an annotation of ``label``: ``top`` the
    highest scores, ``margin`` the nearest to the threshold (most informative), ``random`` a
    seeded uniform sample (a calibration sample of what the classifier does everywhere)."""
    if strategy not in STRATEGIES:
        raise ClassifierError(f"strategy must be one of {', '.join(STRATEGIES)}")
    filters = filters or Filters()
    if strategy in ("top", "margin"):
        return ranked(conn, clf, label, filters, n, order=strategy, unlabelled=True)
    # random: every unlabelled window passing the filters, sampled with the seed, then scored.
    # The label's annotations are read first and passed as arrays: on a Citus cluster
    # annotations is a table of the coordinator, which no query on the windows' shards may
    # join (search_classifier does the same).
    spans = conn.execute(
        sa.text(
            "SELECT coalesce(array_agg(recording_id), '{}'), coalesce(array_agg(start_s), '{}'), "
            "coalesce(array_agg(end_s), '{}') FROM annotations WHERE label = :label"
        ),
        {"label": label},
    ).one()
    ids = np.array(
        conn.execute(
            sa.text(
                f"SELECT f.segment_id FROM ranger.filtered_windows(:space, {FILTER_ARGS}) f "
                "JOIN segments g ON g.space_id = :space AND g.id = f.segment_id "
                "WHERE NOT EXISTS (SELECT 1 FROM unnest(CAST(:a_rec AS bigint[]), "
                "CAST(:a_start AS double precision[]), CAST(:a_end AS double precision[])) "
                "a(recording_id, start_s, end_s) WHERE a.recording_id = g.recording_id "
                "AND a.start_s < g.end_s AND a.end_s > g.start_s) ORDER BY f.segment_id"
            ),
            {
                **{k: v for k, v in filters.params().items() if k != "min_score"},
                "space": clf.space.id,
                "a_rec": list(spans[0]),
                "a_start": list(spans[1]),
                "a_end": list(spans[2]),
            },
        )
        .scalars()
        .all(),
        dtype=np.int64,
    )
    if not len(ids):
        return []
    rng = np.random.default_rng(seed)
    chosen = sorted(int(i) for i in rng.choice(ids, size=min(n, len(ids)), replace=False))
    model = clf.label(label)
    X = _embeddings(conn, clf.space, chosen)
    scores = model.score(X)
    rows = conn.execute(
        sa.text(
            "SELECT g.id AS segment_id, g.recording_id, r.path, s.name AS sensor, s.site, "
            "s.quadrant, g.start_s, g.end_s, g.starts_at, g.local_date, g.local_time "
            "FROM segments g JOIN recordings r ON r.id = g.recording_id "
            "JOIN sensors s ON s.id = g.sensor_id WHERE g.space_id = :s AND g.id = ANY(:ids)"
        ),
        {"s": clf.space.id, "ids": chosen},
    )
    by_id = {int(r.segment_id): dict(r._mapping) for r in rows}
    hits = [
        Hit(score=float(sc), label=label, method="random", **by_id[i])
        for i, sc in zip(chosen, scores)
    ]
    return hits
