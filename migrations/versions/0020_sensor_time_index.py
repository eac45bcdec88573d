"""Selective filters without a bitmap AND (issue 15): one index on sensor, date and time of day.

Replaces ``segments_sensor_idx`` (sensor_id, local_date) with ``segments_sensor_time_idx``
(sensor_id, local_date, local_time), which answers what the old one did (its first two
columns) and also the ranger's selective question, one sensor at a time of day over some
dates, from the index alone: the planner used to AND a bitmap of the sensor/date index with
one of the time-of-day index, whose range passes a fifth of the whole table (100k realistic
windows, bench/search.py: 1.65 ms against 0.09 ms for the 0.1 % filter, 1.47 against 0.33 ms
for one sensor at a time of day, where PostgreSQL 18 skips through the dates).

``ranger.search_vector``'s automatic strategy runs the plain exact scan when the planner
(with statistics) expects at most an eighth of the exact-scan limit to pass, without the
capped statement's bookkeeping (~0.3 ms of a 1 ms call); closer to the limit, before a first
ANALYZE and on a Citus coordinator it still counts first.

Re-applies sql/search.sql and sql/analytics.sql with ``SET jit = off`` on the functions that
search an HNSW index (``search_vector``, ``anomaly_scores``, ``similar_windows``,
``duplicate_pairs``): a PostgreSQL built with LLVM (Debian's and PGDG's packages, the official
Docker images; not the embedded one) JIT-compiled their statements, whose estimated cost
passes ``jit_above_cost``, for ~90 ms a search that takes 2 ms without (PostgreSQL 15,
bench/citus.py at 100k windows).

Downgrade restores the two-column index and keeps the functions (they read nothing this
revision adds).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS segments_sensor_time_idx ON segments "
        "(sensor_id, local_date, local_time)"
    )
    op.execute("DROP INDEX IF EXISTS segments_sensor_idx")
    op.execute(read_sql("search.sql"))
    op.execute(read_sql("analytics.sql"))


def downgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS segments_sensor_idx ON segments (sensor_id, local_date)")
    op.execute("DROP INDEX IF EXISTS segments_sensor_time_idx")
