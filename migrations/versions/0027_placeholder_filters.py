"""Placeholder (issue 27, the house: filters); filled by the helper that owns it.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07
"""

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
