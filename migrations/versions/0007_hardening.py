"""Hardening: input checks in the ranger search functions (issue 10).

``ranger.search_vector``, ``search_labels``, ``search``, ``anomaly_scores``,
``similar_windows`` and ``duplicate_pairs`` check their arguments first (``ranger._check_int``,
``ranger._check_query`` in sql/search.sql): k between 1 and 10,000, exact-scan limits between 0
and 100,000,000, ef_search between 1 and 1,000, and a query vector that is not NULL and not
zero; a bad one is an error naming the parameter and its range (SQLSTATE 22023) instead of
"integer out of range" or NaN scores. ``refresh_detections`` refuses a vector concept whose
embedding is zero (it stored every window as a NaN-scored detection).

Downgrade keeps the stricter functions (and their two helpers): they need nothing this revision
adds, so they run unchanged on the 0006 schema, and a frozen copy of the 0006 bodies would only
bring back the holes. The one call they refuse that 0006 ran is a k above 10,000 (the CLI never
allowed one).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("search.sql"))
    op.execute(read_sql("analytics.sql"))


def downgrade() -> None:
    pass  # the checked functions stay (see the module docstring)
