"""One filter rule (issue 27): the time filters are written once, in ``ranger.in_time_filter``.

Re-applies sql/search.sql (``ranger.in_time_filter``, new: local time of day with ranges that
cross midnight, local dates, instants; ``ranger._filter_sql`` now emits a call to it),
sql/analytics.sql (``ranger.anomaly_scores``' baseline bounds through it) and sql/speech.sql
(``ranger._speech_filtered`` through it). Every ranger search, speech, classifier and analytics
function, and soundscape's own queries (``queries.Filters.where``), use the one rule; results
do not change (the planner inlines the function and folds it to the same comparisons).

Downgrade restores the three bodies of before (sql/frozen/0027_downgrade.sql) and drops
``ranger.in_time_filter``.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("search.sql"))
    op.execute(read_sql("analytics.sql"))
    op.execute(read_sql("speech.sql"))


def downgrade() -> None:
    op.execute(read_sql("frozen/0027_downgrade.sql"))
    op.execute(
        "DROP FUNCTION IF EXISTS ranger.in_time_filter(time, date, timestamptz, time, time, "
        "date, date, timestamptz, timestamptz)"
    )
