"""Speech search filters in one place: ``ranger._speech_filtered``.

Re-applies sql/speech.sql. ``ranger.search_speech`` filtered the utterances twice with the
same predicate (sensors, local time of day, local dates, instants): in the count that decides
whether the fuzzy fallback runs, and in the query itself. Both now read the new
``ranger._speech_filtered`` (one ``LANGUAGE sql`` SELECT, inlined by the planner, so the
plans and the results are those of before); the hit's start time is computed once. Same
signature, same rows.

Downgrade restores the previous ``search_speech`` (sql/frozen/0019_downgrade.sql) and drops
the helper, which depends on the ``utterances`` table that 0012's downgrade drops.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-29
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("speech.sql"))


def downgrade() -> None:
    op.execute(read_sql("frozen/0019_downgrade.sql"))
    op.execute(
        "DROP FUNCTION IF EXISTS ranger._speech_filtered(integer[], time, time, date, date, "
        "timestamptz, timestamptz)"
    )
