"""Search recall on real audio (issue 22): placeholder, filled by that work.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
