"""Placeholder (issue 23 call density, concept detections current); filled by the helper that owns it.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-08
"""

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
