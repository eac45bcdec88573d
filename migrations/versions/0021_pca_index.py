"""A second compact index (issue 14): ``spaces.index_type`` may be ``pca``.

A pca index holds each window's projection on its space's 32 principal axes (computed from a
sample, centred on its mean), as float16, searched by cosine distance: the size of the 512-bit
index (~270 B a window, a tenth of halfvec), with far better candidates at 1M windows
(docs/benchmarks.md). The projection is an IMMUTABLE plpgsql function per space
(``public.segments_space_<id>_pca``, mean and axes as constants) that the index expression and
the queries call (``soundscape.spaces.create_hnsw_index``). Like a bit index it only picks
candidates, re-ranked by the exact float32 cosine distance.

Re-applies sql/search.sql (``_hnsw_distance_sql``, ``_index_key`` and ``_hnsw_candidates_sql``
know the pca index; ``_compact`` is new) and sql/analytics.sql (their HNSW strategies re-rank
for either compact index).

Downgrade rebuilds every pca index as float16 (``halfvec``); the functions stay: they read
nothing this revision adds.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def _allow(types: str) -> None:
    op.execute("ALTER TABLE spaces DROP CONSTRAINT IF EXISTS spaces_index_type_check")
    op.execute(
        f"ALTER TABLE spaces ADD CONSTRAINT spaces_index_type_check CHECK (index_type IN ({types}))"
    )


def upgrade() -> None:
    _allow("'vector', 'halfvec', 'bit', 'pca'")
    op.execute(read_sql("search.sql"))
    op.execute(read_sql("analytics.sql"))


def downgrade() -> None:
    rows = op.get_bind().exec_driver_sql(
        "SELECT id, dimension FROM spaces WHERE index_type = 'pca'"
    )
    for space_id, dim in rows.fetchall():
        part = f"segments_space_{int(space_id)}"
        op.execute(f"DROP INDEX IF EXISTS {part}_hnsw")
        op.execute(f"DROP FUNCTION IF EXISTS public.{part}_pca(vector)")
        op.execute(
            f"CREATE INDEX {part}_hnsw ON {part} USING hnsw "
            f"((embedding::halfvec({int(dim)})) halfvec_cosine_ops) "
            "WITH (m = 16, ef_construction = 128)"
        )
        op.execute(
            f"UPDATE spaces SET index_type = 'halfvec', index_center = NULL "
            f"WHERE id = {int(space_id)}"
        )
    _allow("'vector', 'halfvec', 'bit'")
