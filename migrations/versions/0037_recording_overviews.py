"""Stored low-resolution spectrograms (issue 23, item 6): ``recording_overviews``.

One row per recording: its whole spectrogram at 128 linear frequency bins and at most 4096
time columns (``column_s`` seconds each), quantised to 256 grey levels over ``db_range`` dB
below ``db_max``, stored as a greyscale PNG (``image``, a few hundred KB for an hour). Ingest
writes it in the recording's transaction (``soundscape.overview_images``); the recording page
draws its plot from it instead of decoding the audio again, and computes and stores it on the
first plot of a recording ingested before this migration. Deleted with its recording.
``image`` is already compressed: ``STORAGE EXTERNAL`` (no second compression).

Downgrade drops the table.

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-08
"""

from alembic import op

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS recording_overviews (
            recording_id bigint PRIMARY KEY REFERENCES recordings (id) ON DELETE CASCADE,
            column_s double precision NOT NULL CHECK (column_s > 0),
            columns integer NOT NULL CHECK (columns > 0),
            bins integer NOT NULL CHECK (bins > 0),
            sample_rate integer NOT NULL CHECK (sample_rate > 0),
            db_max real NOT NULL,
            db_range real NOT NULL CHECK (db_range > 0),
            image bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("ALTER TABLE recording_overviews ALTER COLUMN image SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS recording_overviews")
