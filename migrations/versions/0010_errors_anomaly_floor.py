"""Failures in view, anomaly scales floored (issue 10, items 18 and 24).

``ranger.ingest_errors`` (sql/catalog.sql): the files that failed to ingest, with the sensor's
site and quadrant and whether a later ingest resolved them (`soundscape errors list` reads it).
``ranger.anomaly_scores`` (sql/analytics.sql) floors its scale at a quarter of the baseline's
spread, so a baseline of repeated audio (exact twins, a neighbour distance near 0) no longer
makes ordinary windows score 20; a NOTICE says when the floor applied.

Downgrade drops the view and keeps the floored function: it needs nothing this revision adds
and runs unchanged on the 0009 schema (as 0007 kept its checked functions).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("catalog.sql"))
    op.execute(read_sql("analytics.sql"))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS ranger.ingest_errors")
