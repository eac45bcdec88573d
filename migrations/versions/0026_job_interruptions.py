"""Interruptions of a job do not use up its attempts (issue 24, soak finding 5).

Adds ``jobs.interruptions``: how many of a job's claims ended without a fault of its file's
own: the database went away or restarted under it, the disk was full, a lock or statement
timed out. ``attempts`` still counts every claim (it is the claim's fence); the budget of
``max_attempts`` is charged ``attempts - interruptions`` (see ``soundscape.jobs``), so a long
file survives any number of outages (up to ``jobs.MAX_INTERRUPTIONS``) and is stored once the
database is back.

Downgrade drops the column.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07
"""

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS interruptions integer NOT NULL DEFAULT 0 "
        "CHECK (interruptions >= 0)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN IF EXISTS interruptions")
