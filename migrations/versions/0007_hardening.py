"""Hardening: input checks in the ranger search functions (issue 10).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder: filled in by the work of this revision


def downgrade() -> None:
    pass
