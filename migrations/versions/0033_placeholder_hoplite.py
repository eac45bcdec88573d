"""Placeholder (issue 25 hoplite import/export); filled by the helper that owns it.

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-08
"""

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
