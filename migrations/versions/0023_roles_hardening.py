"""Roles that hold their limits (issue 24, security): placeholder, filled by that work.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
