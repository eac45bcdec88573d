"""Few-shot classifiers trained on annotations, what they scored and what they detected
(issue 11). The ``ranger`` views and functions of this family live in ``sql/classifiers.sql``.

- ``classifiers``: one row per trained version (name, version, space, labels, parameters, the
  annotation ids used); retraining under the same name adds a version and keeps the old one.
- ``classifier_labels``: per label of a version, the linear model on the space's embeddings
  (``weights`` w and ``bias`` b: logit = w . x + b, probability = sigmoid(logit)), the
  threshold (a probability) and the cross-validated metrics.
- ``classifier_scored``: which windows a version has scored (so ``classify --new`` scores only
  the others; a re-ingested recording's windows have new ids and are scored again).
- ``classifier_detections``: windows whose probability passed a label's threshold.

``ranger.detections`` (with ``ranger.activity_by_hour``) moves from search.sql to
classifiers.sql, gaining classifier detections and the columns ``label`` and ``source``;
search.sql is re-applied (unchanged otherwise). The downgrade restores the old views from
``sql/frozen/0009_downgrade.sql``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE classifiers (
    id              serial PRIMARY KEY,
    name            text NOT NULL CHECK (name <> ''),
    version         integer NOT NULL CHECK (version >= 1),
    space_id        integer NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    labels          text[] NOT NULL CHECK (cardinality(labels) >= 1),
    params          jsonb NOT NULL DEFAULT '{}',
    annotation_ids  bigint[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, version)
);

CREATE TABLE classifier_labels (
    classifier_id  integer NOT NULL REFERENCES classifiers (id) ON DELETE CASCADE,
    label          text NOT NULL,
    weights        vector NOT NULL,
    bias           double precision NOT NULL,
    threshold      real NOT NULL CHECK (threshold > 0 AND threshold < 1),
    n_pos          integer NOT NULL,
    n_neg          integer NOT NULL,
    metrics        jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (classifier_id, label)
);

-- No foreign key to segments: with it (and the index it needs), `classify` over 100,000
-- windows took 9.0-11.0 s instead of 6.6-7.4 s (interleaved runs on the bench machine, under
-- load). A deleted window (re-ingest with --replace) leaves a row here that no new window can
-- match (window ids come from a sequence).
CREATE TABLE classifier_scored (
    classifier_id  integer NOT NULL REFERENCES classifiers (id) ON DELETE CASCADE,
    space_id       integer NOT NULL,
    segment_id     bigint NOT NULL,
    PRIMARY KEY (classifier_id, segment_id)
);

CREATE TABLE classifier_detections (
    classifier_id  integer NOT NULL,
    label          text NOT NULL,
    space_id       integer NOT NULL,
    segment_id     bigint NOT NULL,
    score          real NOT NULL,
    detected_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (classifier_id, label, segment_id),
    FOREIGN KEY (classifier_id, label)
        REFERENCES classifier_labels (classifier_id, label) ON DELETE CASCADE,
    FOREIGN KEY (space_id, segment_id) REFERENCES segments (space_id, id) ON DELETE CASCADE
);
CREATE INDEX classifier_detections_segment_idx ON classifier_detections (space_id, segment_id);
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute(read_sql("search.sql"))
    op.execute(read_sql("classifiers.sql"))


def downgrade() -> None:
    # the views as 0003-0007 defined them (columns cannot be dropped by CREATE OR REPLACE)
    op.execute("DROP VIEW IF EXISTS ranger.activity_by_hour")
    op.execute("DROP VIEW IF EXISTS ranger.detections")
    op.execute(read_sql("frozen/0009_downgrade.sql"))
    for kind, name in (
        ("VIEW", "ranger.classifier_detections"),
        ("VIEW", "ranger.classifiers"),
        ("FUNCTION", "ranger.search_classifier"),
        ("FUNCTION", "ranger._classifier_label"),
        ("FUNCTION", "ranger._classify_batch"),
        ("TABLE", "classifier_detections"),
        ("TABLE", "classifier_scored"),
        ("TABLE", "classifier_labels"),
        ("TABLE", "classifiers"),
    ):
        op.execute(f"DROP {kind} IF EXISTS {name} CASCADE")
