"""A compact HNSW index per space (issue 14): ``spaces.index_type`` may be ``bit``.

A bit index holds the signs of the embedding minus the space's mean (pgvector's
``binary_quantize``, Hamming distance; above 512 dimensions the two halves are added first):
a tenth of the size of the float16 index at 1024-d. It only picks candidates; searches
re-rank them by the exact float32 cosine distance.
The mean is stored in the new column ``spaces.index_center`` and, as a constant, in an
IMMUTABLE function per space (``public.segments_space_<id>_bits``) that the index expression
and the queries call (``soundscape.spaces.create_hnsw_index``). Re-applies sql/search.sql
(``_hnsw_distance_sql`` knows the bit index; ``_index_key`` and ``_hnsw_candidates_sql`` are
new; the hnsw statement of ``_search_vector_sql`` re-ranks) and sql/analytics.sql (the HNSW
strategies of ``anomaly_scores``, ``similar_windows`` and ``duplicate_pairs`` re-rank too).

Downgrade rebuilds every bit index as float16 (``halfvec``) and drops the column; the functions
stay: they read nothing this revision adds, so they run unchanged on the 0017 schema.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE spaces DROP CONSTRAINT IF EXISTS spaces_index_type_check")
    op.execute(
        "ALTER TABLE spaces ADD CONSTRAINT spaces_index_type_check "
        "CHECK (index_type IN ('vector', 'halfvec', 'bit'))"
    )
    op.execute("ALTER TABLE spaces ADD COLUMN IF NOT EXISTS index_center vector")
    op.execute(read_sql("search.sql"))
    op.execute(read_sql("analytics.sql"))


def downgrade() -> None:
    rows = op.get_bind().exec_driver_sql(
        "SELECT id, dimension FROM spaces WHERE index_type = 'bit'"
    )
    for space_id, dim in rows.fetchall():
        part = f"segments_space_{int(space_id)}"
        op.execute(f"DROP INDEX IF EXISTS {part}_hnsw")
        op.execute(f"DROP FUNCTION IF EXISTS public.{part}_bits(vector)")
        op.execute(
            f"CREATE INDEX {part}_hnsw ON {part} USING hnsw "
            f"((embedding::halfvec({int(dim)})) halfvec_cosine_ops) "
            "WITH (m = 16, ef_construction = 128)"
        )
        op.execute(f"UPDATE spaces SET index_type = 'halfvec' WHERE id = {int(space_id)}")
    op.execute("ALTER TABLE spaces DROP COLUMN IF EXISTS index_center")
    op.execute("ALTER TABLE spaces DROP CONSTRAINT IF EXISTS spaces_index_type_check")
    op.execute(
        "ALTER TABLE spaces ADD CONSTRAINT spaces_index_type_check "
        "CHECK (index_type IN ('vector', 'halfvec'))"
    )
