"""Placeholder (issue 26 phonetic speech search, speakers on utterances); filled by the helper that owns it.

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-08
"""

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
