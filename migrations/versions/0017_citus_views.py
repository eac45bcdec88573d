"""Citus: the classifier views, ``classify --classifier`` and review batches on a distributed
database (issue 14).

Re-applies sql/classifiers.sql, whose statements now run on a Citus cluster and return the same
rows as before on one server:

- ``ranger.classifiers`` counts detections in a join on a grouped count (was a correlated
  ``count(*)`` per row, which Citus refuses on a distributed table);
- ``ranger.detections`` (and ``activity_by_hour``, ``species_daily``, ``species_daily_all``,
  which read it) takes the newest scored version of each classifier from the new function
  ``ranger.newest_scored_classifiers()`` in a materialized CTE (was a correlated
  ``max(version)`` with ``EXISTS`` on ``classifier_scored``); one index probe per version, on
  Citus one query on every shard's primary key;
- ``ranger._classify_batch`` updates a stored detection with ``detected_at =
  EXCLUDED.detected_at`` (the column's default, ``now()``; Citus takes no ``now()`` in ``ON
  CONFLICT ... DO UPDATE``);
- ``ranger.search_classifier(..., p_unlabelled => true)`` (``review --strategy top|margin``)
  reads the label's annotations first and leaves out the windows overlapping them through
  arrays (was a correlated ``NOT EXISTS`` on ``annotations``, a coordinator-local table on
  Citus that no shard query may join).

Downgrade keeps the new bodies: they read nothing this revision adds, so they run unchanged on
the 0016 schema (like 0016's downgrade).

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("classifiers.sql"))


def downgrade() -> None:
    pass  # the new bodies stay (see the module docstring)
