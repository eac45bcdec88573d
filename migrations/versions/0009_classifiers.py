"""Few-shot classifiers trained on annotations and their detections (issue 11).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder: filled in by the work of this revision


def downgrade() -> None:
    pass
