"""Placeholder (issue 25 GUANO metadata, field tables); filled by the helper that owns it.

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-08
"""

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
