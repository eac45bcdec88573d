"""Placeholder (issue 23 review queue, verdict spans and labels); filled by the helper that owns it.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-08
"""

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
