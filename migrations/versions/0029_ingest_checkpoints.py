"""Ingest resumes inside a file (issue 24, soak finding 7): ``ingest_checkpoints``.

While a space's windows are embedded, the model's outputs are committed every ~20 s of model
time on a connection of their own (``soundscape.checkpoints``), keyed by the file's SHA-256,
the space and the first window of each batch; an ingest of the same file into the same space
after an outage reuses them instead of running the model again. The recording itself is still
stored in one transaction, which deletes the file's checkpoints. No foreign keys (a space
dropped leaves rows that ``checkpoints.prune`` removes after two weeks), so that on Citus the
table stays a plain table of the coordinator (``cluster.LOCAL_TABLES``). The vectors are
stored uncompressed (``STORAGE EXTERNAL``: float32 noise does not compress).

Downgrade drops the table.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-08
"""

from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS ingest_checkpoints (
            sha256 text NOT NULL,
            space_id integer NOT NULL,
            first_s real NOT NULL,
            starts real[] NOT NULL,
            dim integer NOT NULL CHECK (dim > 0),
            vectors bytea NOT NULL,
            score_k integer,
            score_idx bytea,
            score_val bytea,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (sha256, space_id, first_s)
        )
        """
    )
    op.execute("ALTER TABLE ingest_checkpoints ALTER COLUMN vectors SET STORAGE EXTERNAL")
    op.execute(
        "CREATE INDEX IF NOT EXISTS ingest_checkpoints_created_at "
        "ON ingest_checkpoints (created_at)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS ingest_checkpoints")
