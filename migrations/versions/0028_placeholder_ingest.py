"""Placeholder (issue 27, the house: ingest); filled by the helper that owns it.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07
"""

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
