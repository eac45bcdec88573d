"""Annotations: the people's ground truth (issue 11).

A table of labelled time spans (optionally frequency bands) of recordings, each with a verdict
(yes / no / unsure), who made it and how (cli, import, review, web); windows are labelled by
overlap. The ``ranger.annotations`` view (sql/annotations.sql) shows them with place and local
time for BI tools.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE annotations (
    id            bigserial PRIMARY KEY,
    recording_id  bigint NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    start_s       double precision NOT NULL CHECK (start_s >= 0),
    end_s         double precision NOT NULL CHECK (end_s > start_s),
    low_hz        real CHECK (low_hz >= 0),
    high_hz       real CHECK (high_hz > low_hz),
    label         text NOT NULL CHECK (label <> ''),
    verdict       text NOT NULL DEFAULT 'yes' CHECK (verdict IN ('yes', 'no', 'unsure')),
    author        text,
    source        text NOT NULL DEFAULT 'cli' CHECK (source IN ('cli', 'import', 'review', 'web')),
    note          text,
    segment_id    bigint,            -- the window a validated hit came from (annotate hit), if any
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX annotations_recording_idx ON annotations (recording_id, start_s);
CREATE INDEX annotations_label_idx ON annotations (label, verdict);
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute(read_sql("annotations.sql"))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS ranger.annotations")
    op.execute("DROP TABLE IF EXISTS annotations")
