"""Zero-shot classification: runs and each window's top label, and the filtered-window helper.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE classify_runs (
    id          serial PRIMARY KEY,
    space_id    integer NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    labels      text[] NOT NULL,
    template    text,
    filters     jsonb NOT NULL DEFAULT '{}',
    n_windows   bigint,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE classifications (
    run_id      integer NOT NULL REFERENCES classify_runs (id) ON DELETE CASCADE,
    space_id    integer NOT NULL,
    segment_id  bigint NOT NULL,
    label       text NOT NULL,
    score       real NOT NULL,
    PRIMARY KEY (run_id, segment_id),
    FOREIGN KEY (space_id, segment_id) REFERENCES segments (space_id, id) ON DELETE CASCADE
);
CREATE INDEX classifications_segment_idx ON classifications (space_id, segment_id, run_id DESC);
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute(read_sql("classify.sql"))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS ranger.window_labels")
    op.execute("DROP VIEW IF EXISTS ranger.classify_runs")
    op.execute("DROP FUNCTION IF EXISTS ranger.filtered_windows")
    op.execute("DROP TABLE IF EXISTS classifications")
    op.execute("DROP TABLE IF EXISTS classify_runs")
