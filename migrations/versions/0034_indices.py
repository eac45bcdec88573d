"""Acoustic indices (issue 25): the ``ranger`` views of the ``indices`` model, from the new
family file ``sql/indices.sql``.

- ``ranger.acoustic_indices``: every window of an ``indices`` space with its nine indices by
  name (read back from the stored vector: no new table);
- ``ranger.indices_daily``: per space, sensor, local day and hour, each index's median and
  quartiles.

The model's windows are ordinary ``segments`` of its space: no schema change.

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-08
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("indices.sql"))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS ranger.indices_daily")
    op.execute("DROP VIEW IF EXISTS ranger.acoustic_indices")
