"""Media opened by stored identity (issue 24, security): where a recording's file was on disk.

Adds to ``recordings`` the identity of the file as ingest decoded it: ``file_device`` and
``file_inode`` (``st_dev``/``st_ino``, unsigned 64-bit numbers, hence ``numeric(20)``) and
``file_mtime_ns`` (modification time, nanoseconds); ``size_bytes`` already holds its size.
Every reader of a stored recording (``soundscape.media_files.open_stored``: the web page's
audio, clips and plots, clip export, review batches, backfill) opens the stored path without
following symbolic links and compares the open descriptor with these; recordings stored
before this revision have NULLs and are checked by size and the stored SHA-256 instead.

Downgrade drops the three columns.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE recordings ADD COLUMN IF NOT EXISTS file_device numeric(20, 0), "
        "ADD COLUMN IF NOT EXISTS file_inode numeric(20, 0), "
        "ADD COLUMN IF NOT EXISTS file_mtime_ns bigint"
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE recordings DROP COLUMN IF EXISTS file_device, "
        "DROP COLUMN IF EXISTS file_inode, DROP COLUMN IF EXISTS file_mtime_ns"
    )
