"""HNSW index precision per space: float32 (``vector``) or float16 (``halfvec``).

The index type is a property of the space's HNSW index only; embeddings stay stored as float32,
so switching (``soundscape spaces index``) rebuilds the index and loses nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE spaces ADD COLUMN index_type text NOT NULL DEFAULT 'vector' "
        "CHECK (index_type IN ('vector', 'halfvec'))"
    )
    # The old signatures of the two statement builders (an existing database at 0005 has them;
    # a fresh one already got the new ones from 0003/0004's current files), then the current
    # search and analytics families, whose index-ordered functions read spaces.index_type.
    op.execute("DROP FUNCTION IF EXISTS ranger._search_vector_sql(integer, text, text)")
    op.execute("DROP FUNCTION IF EXISTS ranger._knn_distance_sql(integer, text, text, text)")
    op.execute(read_sql("search.sql"))
    op.execute(read_sql("analytics.sql"))


def downgrade() -> None:
    # Back to float32 indexes, then the functions of 0003/0004 (which only know that expression).
    rows = op.get_bind().exec_driver_sql(
        "SELECT id, dimension FROM spaces WHERE index_type = 'halfvec'"
    )
    for space_id, dim in rows.fetchall():
        part = f"segments_space_{int(space_id)}"
        op.execute(f"DROP INDEX IF EXISTS {part}_hnsw")
        op.execute(
            f"CREATE INDEX {part}_hnsw ON {part} USING hnsw "
            f"((embedding::vector({int(dim)})) vector_cosine_ops)"
        )
    op.execute("DROP FUNCTION ranger._search_vector_sql(integer, text, text, text)")
    op.execute("DROP FUNCTION ranger._knn_distance_sql(integer, text, text, text, text)")
    op.execute("DROP FUNCTION ranger._hnsw_distance_sql(integer, text, text)")
    op.execute("DROP FUNCTION ranger._space_rows(integer)")
    op.execute(read_sql("frozen/0006_downgrade.sql"))
    op.execute("ALTER TABLE spaces DROP COLUMN index_type")
