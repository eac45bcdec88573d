"""Search latency (issue 15): ``ranger.search_vector`` without its fixed costs.

Re-applies sql/search.sql. The function no longer runs a separate bounded count before an
exact scan: under twice the exact-scan limit it runs the exact scan capped at the limit (one
statement that collects the passing rows without their vectors, gives up past the limit and
only then falls back to the index); it skips the planner estimate when there is no filter,
checks its arguments without a query each, chooses ``hnsw.ef_search`` from the size of the
space (sqrt(rows / 2.5), 40 to 400: 200 at 100k windows) instead of a floor of 400, and makes
the planner keep to the HNSW index once it has chosen it. ``_search_vector_sql`` gains the
method 'capped' (same signature). The view ``ranger.concepts`` counts detections in a join
(Citus cannot run its correlated subquery; the same rows on one server).

Downgrade keeps the new bodies: they read nothing this revision adds (it adds nothing), so they
run unchanged on the 0015 schema (like 0007's downgrade).

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-29
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("search.sql"))


def downgrade() -> None:
    pass  # the faster functions stay (see the module docstring)
