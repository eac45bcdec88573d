"""Placeholder (issue 29 sun-relative filters, one-sentence queries); filled by the helper that owns it.

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-08
"""

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
